import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Fixtures, PruneStage } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as WeightNorm from "./WeightNorm.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

/** Each block's L2 norm from the stored teacher, in float64 on the host. */
const hostNorms = (params: HostTensor.HostTree, depth: number) => {
  const sums = new Array<number>(depth).fill(0)
  for (const [key, t] of ParamTree.flatten(params, HostTensor.isHostTensor)) {
    const block = /^blocks\.(\d+)\./.exec(key)
    if (block !== null) for (const v of t.data) sums[Number(block[1])] += v * v
  }
  return sums.map(Math.sqrt)
}

describe("weight-norm, a pruner added as a layer", () => {
  it.live("unknown without its layer; with it, the prune stage keeps the largest-norm blocks (host float64 check)", () =>
    Effect.gen(function*() {
      const config = Fixtures.tiny(6)
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config, weights: { random: 9 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const prune = (c: { readonly keep?: number; readonly scheme?: string }) =>
        Stage.run(Fixtures.stages.prune, { method: "weight-norm", ...c, seed: 0, calibration: 4, iterations: 0, options: {} }, { teacher, data })
      const unknown = yield* Effect.flip(prune({ keep: 3 }))
      assert.strictEqual(unknown._tag, "UnknownPruner")

      const norms = hostNorms((yield* PruneStage.readModel(teacher)).params, 6)
      const byNorm = norms.map((n, i) => [n, i] as const).sort((a, b) => b[0] - a[0]).map(([, i]) => i)
      const kept = yield* Effect.flatMap(prune({ keep: 3 }), PruneStage.readDecision).pipe(Effect.provide(WeightNorm.layer))
      assert.deepStrictEqual(kept.kept, byNorm.slice(0, 3).sort((a, b) => a - b))
      kept.scores!.forEach((s, i) => assert.closeTo(s, norms[i]!, 1e-4 * norms[i]!))
      // 1:2: the larger of each pair.
      const paired = yield* Effect.flatMap(prune({ scheme: "1:2" }), PruneStage.readDecision).pipe(Effect.provide(WeightNorm.layer))
      assert.deepStrictEqual(paired.kept, [0, 2, 4].map((i) => (norms[i]! >= norms[i + 1]! ? i : i + 1)))
      assert.deepStrictEqual(paired.groups, [[0, 1], [2, 3], [4, 5]])
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
