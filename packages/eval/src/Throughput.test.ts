import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Throughput from "./Throughput.ts"

describe("Throughput", () => {
  it.effect("runs warm-up plus timed passes and derives it/s and images/s from the median pass", () =>
    Effect.gen(function*() {
      let calls = 0
      // A pass that takes at least 3 ms of wall time, whatever the machine.
      const forward = Effect.sync(() => {
        calls++
        const start = performance.now()
        while (performance.now() - start < 3);
      })
      const t = yield* Throughput.measure(forward, { imagesPerBatch: 16, steps: 250, warmup: 2, repetitions: 5 })
      assert.strictEqual(calls, 7)
      assert.strictEqual(t.repetitions, 5)
      assert.isAtLeast(t.msPerIteration, 3)
      assert.strictEqual(t.iterationsPerSecond, 1000 / t.msPerIteration)
      assert.strictEqual(t.imagesPerSecond, (t.iterationsPerSecond * 16) / 250)
    }))

  it.effect("bad options are a typed error naming the field, before any pass runs", () =>
    Effect.gen(function*() {
      let calls = 0
      const error = yield* Effect.flip(
        Throughput.measure(Effect.sync(() => calls++), { imagesPerBatch: 8, steps: 250, warmup: 1, repetitions: 0 })
      )
      assert.strictEqual(error._tag, "InvalidThroughputOptions")
      assert.match(error.message, /repetitions/)
      assert.strictEqual(calls, 0)
    }))
})
