import { assert, describe, it } from "@effect/vitest"
import { Console, Effect } from "effect"
import { Progress } from "@tinyfusion/core"
import * as GlobalFlags from "./GlobalFlags.ts"

/** Logs one line under --log-format `format`; what reached stdout and stderr, and the progress display. */
const logUnder = (format: "pretty" | "json") =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const err: Array<string> = []
    const console_: Console.Console = Object.assign(Object.create(console), {
      log: (...xs: ReadonlyArray<unknown>) => out.push(xs.map(String).join(" ")),
      error: (...xs: ReadonlyArray<unknown>) => err.push(xs.map(String).join(" "))
    })
    const display = yield* Effect.gen(function*() {
      yield* Effect.logInfo("hello").pipe(Effect.annotateLogs({ stage: "train" }))
      return yield* Progress.Display
    }).pipe(
      Effect.provide(GlobalFlags.logging),
      Effect.provideService(GlobalFlags.LogFormat, format),
      Effect.provideService(Console.Console, console_)
    )
    return { out, err, display }
  })

describe("GlobalFlags", () => {
  it.effect("--log-format json: one JSON object per log line on stderr; progress as log lines", () =>
    Effect.gen(function*() {
      const { out, err, display } = yield* logUnder("json")
      assert.deepStrictEqual(out, [])
      assert.strictEqual(err.length, 1)
      const line = JSON.parse(err[0]!)
      assert.deepStrictEqual([line.message, line.level, line.annotations], ["hello", "INFO", { stage: "train" }])
      assert.strictEqual(display, "lines")
    }))

  it.effect("--log-format pretty: a readable line on stderr", () =>
    Effect.gen(function*() {
      const { out, err } = yield* logUnder("pretty")
      assert.deepStrictEqual(out, [])
      assert.match(err.join("\n"), /INFO .*hello/)
      assert.throws(() => JSON.parse(err[0]!))
    }))
})
