import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Method from "./Method.ts"

const Options = Schema.Struct({
  steps: Method.option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 10, "Steps to take"),
  mode: Method.option(Schema.Literals(["fast", "exact"]), "exact", "How")
})

const make = (name: string, description = name): Method.Method<typeof Options.Type, { readonly score: number }> => ({
  name,
  description,
  module: import.meta.url,
  options: Options,
  evidence: Schema.Struct({ score: Schema.Finite })
})

const Registry = Method.registry("@tinyfusion/core/test/Registry", "widget", [make("a"), make("b")])
const names = Effect.map(Registry.current, (known) => [...known.keys()].sort())

describe("Method", () => {
  it.effect("a registry holds its built-in methods without a layer; layers add, stack and replace by name", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* names, ["a", "b"])
      const unknown = yield* Effect.flip(Registry.get("c"))
      assert.strictEqual(unknown.message, `no widget named "c"; known: a, b`)
      assert.deepStrictEqual(yield* names.pipe(Effect.provide(Registry.layer([make("c")]))), ["a", "b", "c"])
      const stacked = yield* names.pipe(Effect.provide(Registry.layer([make("c")])), Effect.provide(Registry.layer([make("d")])))
      assert.deepStrictEqual(stacked, ["a", "b", "c", "d"])
      const replaced = yield* Registry.get("a").pipe(Effect.provide(Registry.layer([make("a", "another a")])))
      assert.strictEqual(replaced.description, "another a")
    }))

  it.effect("options: defaults filled, unknown and wrong fields named; the canonical form makes defaults explicit", () =>
    Effect.gen(function*() {
      const a = make("a")
      assert.deepStrictEqual(yield* Method.options("widget", a, {}), { steps: 10, mode: "exact" })
      assert.deepStrictEqual(yield* Method.options("widget", a, undefined), { steps: 10, mode: "exact" })
      assert.deepStrictEqual(yield* Method.canonicalOptions("widget", a, { mode: "fast" }), { steps: 10, mode: "fast" })
      assert.deepStrictEqual(yield* Method.canonicalOptions("widget", a, {}), yield* Method.canonicalOptions("widget", a, { steps: 10 }))
      const bad = yield* Effect.flip(Method.options("widget", a, { steps: 0, speed: 1 }))
      assert.match(bad.message, /invalid options for widget a: .*\["steps"\].*|invalid options for widget a: .*\["speed"\]/)
      assert.match(bad.message, /speed/)
      assert.deepStrictEqual(Method.describeOptions(a), [
        { name: "steps", description: "Steps to take", default: 10 },
        { name: "mode", description: "How", default: "exact" }
      ])
      // An option without a default must be given.
      const required = { ...a, options: Schema.Struct({ ...Options.fields, ratio: Schema.Finite.annotate({ description: "Share" }) }) }
      assert.deepStrictEqual(Method.describeOptions(required).at(-1), { name: "ratio", description: "Share", default: undefined })
      assert.match((yield* Effect.flip(Method.options("widget", required, {}))).message, /\["ratio"\]/)
    }))

  it("headline: the top-level finite numbers of an evidence value", () => {
    assert.deepStrictEqual(Method.headline({ confidence: 0.9, history: [1, 2], name: "x", nan: null, inner: { x: 1 } }), { confidence: 0.9 })
    assert.deepStrictEqual(Method.headline([1, 2]), {})
    assert.deepStrictEqual(Method.headline(null), {})
  })
})
