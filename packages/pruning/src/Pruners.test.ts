import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Pruner from "./Pruner.ts"
import * as Pruners from "./Pruners.ts"

/** A method defined outside the package that keeps `count(k)` first blocks, with this evidence. */
const firstBlocks = <V>(name: string, description: string, count: (keep: number) => number, evidence: Schema.Codec<V, any>, value: V) =>
  Pruner.make({
    name,
    description,
    module: import.meta.url,
    options: Schema.Struct({}),
    evidence,
    prune: (request) => Effect.succeed({ kept: Array.from({ length: count(request.target.keep) }, (_, i) => i), evidence: value })
  })

const keepFirst = firstBlocks("keep-first", "keep the first k blocks", (k) => k, Schema.Struct({ reason: Schema.String }), { reason: "first come" })
/** Keeps one block too many: the stage must refuse its decision. */
const greedy = firstBlocks("greedy", "keeps k + 1 blocks", (k) => k + 1, Schema.Struct({}), {})
/** Reports evidence its own Schema rejects. */
const liar = firstBlocks("liar", "evidence that does not fit", (k) => k, Schema.Struct({ score: Schema.Finite }), { score: Number.NaN })

const names = Effect.map(Pruners.current, (registry) => [...registry.keys()].sort())

describe("Pruners", () => {
  it.effect("the built-in methods need no layer; a layer adds a method, layers stack, a known name is replaced", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* names, ["diff-pruning", "flux-lite", "learnable", "oracle", "random", "sensitivity", "shortgpt"])
      const missing = yield* Effect.flip(Pruners.get("keep-first"))
      assert.strictEqual(missing._tag, "UnknownMethod")
      const added = yield* names.pipe(Effect.provide(Pruners.layer([keepFirst])))
      assert.deepStrictEqual(added, ["diff-pruning", "flux-lite", "keep-first", "learnable", "oracle", "random", "sensitivity", "shortgpt"])
      const stacked = yield* names.pipe(Effect.provide(Pruners.layer([keepFirst])), Effect.provide(Pruners.layer([greedy])))
      assert.includeMembers(stacked, ["keep-first", "greedy", "learnable"])
      const replaced = yield* Pruners.get("oracle").pipe(Effect.provide(Pruners.layer([{ ...keepFirst, name: "oracle" }])))
      assert.strictEqual(replaced.description, "keep the first k blocks")
    }))

  it.live("the prune stage runs an added method with its evidence, and refuses a decision that misses the target or evidence that misses its Schema", () =>
    Effect.gen(function*() {
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "sit", config: Fixtures.tiny(5), weights: { random: 0 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const config = (method: string) => ({ method, keep: 2, seed: 0, calibration: 4 })
      const pruned = yield* Fixtures.prune(config("keep-first"), { teacher, data })
      assert.deepStrictEqual(pruned.output.kept, [0, 1])
      assert.deepStrictEqual((yield* Fixtures.decision(pruned, keepFirst.evidence)).evidence, { reason: "first come" })
      const refused = yield* Effect.flip(Fixtures.prune(config("greedy"), { teacher, data }))
      assert.strictEqual(refused._tag, "DecisionMismatch")
      assert.match(refused.message, /pruner greedy returned a decision that does not fit: keeps 3 of 5 blocks; the target is keep 2 of 5/)
      const lied = yield* Effect.flip(Fixtures.prune(config("liar"), { teacher, data }))
      assert.match(lied.message, /pruner liar returned a decision that does not fit: its evidence does not fit its Schema/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]), Pruners.layer([keepFirst, greedy, liar])))))
})
