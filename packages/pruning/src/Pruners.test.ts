import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import type * as Pruner from "./Pruner.ts"
import * as Pruners from "./Pruners.ts"

/** Keeps the first blocks: a method defined outside the package. */
const keepFirst: Pruner.Method = {
  name: "keep-first",
  description: "keep the first k blocks",
  prune: (request) =>
    Effect.succeed({ method: "keep-first", teacherDepth: request.stack.depth, kept: Array.from({ length: request.target.keep }, (_, i) => i) })
}

/** Keeps one block too many: the stage must refuse its decision. */
const greedy: Pruner.Method = {
  name: "greedy",
  description: "keeps k + 1 blocks",
  prune: (request) =>
    Effect.succeed({ method: "greedy", teacherDepth: request.stack.depth, kept: Array.from({ length: request.target.keep + 1 }, (_, i) => i) })
}

const names = Effect.map(Pruners.Pruners, (registry) => [...registry.keys()].sort())

describe("Pruners", () => {
  it.effect("the built-in methods need no layer; a layer adds a method, layers stack, a known name is replaced", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* names, ["diff-pruning", "flux-lite", "learnable", "oracle", "random-max", "random-median", "random-min", "sensitivity", "shortgpt"])
      const missing = yield* Effect.flip(Pruners.get("keep-first"))
      assert.strictEqual(missing._tag, "UnknownPruner")
      const added = yield* names.pipe(Effect.provide(Pruners.layer([keepFirst])))
      assert.deepStrictEqual(added, ["diff-pruning", "flux-lite", "keep-first", "learnable", "oracle", "random-max", "random-median", "random-min", "sensitivity", "shortgpt"])
      const stacked = yield* names.pipe(Effect.provide(Pruners.layer([keepFirst])), Effect.provide(Pruners.layer([greedy])))
      assert.includeMembers(stacked, ["keep-first", "greedy", "learnable"])
      const replaced = yield* Pruners.get("oracle").pipe(Effect.provide(Pruners.layer([{ ...keepFirst, name: "oracle" }])))
      assert.strictEqual(replaced.description, "keep the first k blocks")
    }))

  it.live("the prune stage runs an added method, and refuses a decision that misses the target", () =>
    Effect.gen(function*() {
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "sit", config: Fixtures.tiny(5), weights: { random: 0 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const config = (method: string) => ({ method, keep: 2, seed: 0, calibration: 4, iterations: 0, options: {} })
      const pruned = yield* Stage.run(Fixtures.stages.prune, config("keep-first"), { teacher, data })
      assert.deepStrictEqual(pruned.output.kept, [0, 1])
      const refused = yield* Effect.flip(Stage.run(Fixtures.stages.prune, config("greedy"), { teacher, data }))
      assert.strictEqual(refused._tag, "DecisionMismatch")
      assert.match(refused.message, /pruner greedy returned a decision that does not fit: keeps 3 of 5 blocks; the target is keep 2 of 5/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]), Pruners.layer([keepFirst, greedy])))))
})
