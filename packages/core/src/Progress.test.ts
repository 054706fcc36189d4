import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Logger } from "effect"
import { TestClock } from "effect/testing"
import * as Progress from "./Progress.ts"

describe("Progress", () => {
  it("rate and ETA count only the steps done in this process", () => {
    // Resumed at 100, now at 160 of 1000 after 12 s: 5 it/s, 840 left → 168 s.
    const f = { label: "train", done: 160, total: 1000, start: 100, elapsedMillis: 12_000 }
    assert.strictEqual(Progress.rate(f), 5)
    assert.strictEqual(Progress.eta(f), 168)
    assert.strictEqual(Progress.describe({ ...f, extra: { loss: 0.123456 } }), "160/1000 5.00 it/s ETA 2m48s loss 0.1235")
    assert.strictEqual(Progress.rate({ ...f, done: 100 }), undefined)
    assert.strictEqual(Progress.describe({ ...f, done: 100, elapsedMillis: 0 }), "100/1000 - it/s ETA -")
  })

  it("durations and bars", () => {
    assert.deepStrictEqual([9, 75, 3700, 0.4].map(Progress.formatDuration), ["9s", "1m15s", "1h01m", "0s"])
    assert.strictEqual(Progress.bar(0.5, 10), "[#####.....]")
    assert.strictEqual(Progress.bar(1.7, 4), "[####]")
    assert.strictEqual(Progress.bar(0, 3), "[...]")
  })

  it.effect("lines mode logs at most once per interval, and once at the end", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.make(({ message }) => lines.push(String(message)))
      yield* Effect.gen(function*() {
        const p = yield* Progress.make("fit", 10, 2)
        for (let step = 3; step <= 10; step++) {
          yield* TestClock.adjust("2 seconds")
          yield* p.update(step, { loss: step })
        }
        yield* p.finish
      }).pipe(
        Effect.provideService(Progress.Display, "lines"),
        Effect.provide(Logger.layer([logger]))
      )
      // Updates at 2, 4, …, 16 s; 5 s apart → shown at 2 s, 8 s and 14 s, plus the final line.
      assert.deepStrictEqual(lines, [
        "fit 3/10 0.50 it/s ETA 14s loss 3.000",
        "fit 6/10 0.50 it/s ETA 8s loss 6.000",
        "fit 9/10 0.50 it/s ETA 2s loss 9.000",
        "fit 10/10 0.50 it/s ETA 0s loss 10.00"
      ])
    }).pipe(Effect.provideService(Progress.Interval, Duration.seconds(5))))
})
