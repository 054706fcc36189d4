import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Fixtures, PruneStage, Selection } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Methods from "../methods.ts"
import * as WeightNorm from "./WeightNorm.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

/** Each block's parameters from the stored teacher, as float64 on the host. */
const hostBlocks = (params: HostTensor.HostTree, depth: number) => {
  const values: Array<Array<number>> = Array.from({ length: depth }, () => [])
  for (const [key, t] of ParamTree.flatten(params, HostTensor.isHostTensor)) {
    const block = /^blocks\.(\d+)\./.exec(key)
    if (block !== null) values[Number(block[1])]!.push(...t.data)
  }
  return {
    l2: values.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))),
    l1: values.map((v) => v.reduce((s, x) => s + Math.abs(x), 0)),
    max: values.map((v) => Math.max(...v.map(Math.abs)))
  }
}

describe("weight-norm, a pruner added as one file", () => {
  it("experiments/src/methods.ts finds it in pruners/, with its options", () => {
    assert.deepStrictEqual(Methods.pruners.map((m) => m.name), ["weight-norm"])
    assert.include(Methods.allPruners.map((m) => m.name), "weight-norm")
    assert.strictEqual(Methods.pruners[0], WeightNorm.method)
  })

  it.live("unknown without the added methods' layer; with it, the prune stage keeps the largest-norm blocks (host float64 check)", () =>
    Effect.gen(function*() {
      const config = Fixtures.tiny(6)
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config, weights: { random: 9 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const prune = (c: { readonly keep?: number; readonly scheme?: string; readonly options?: { readonly norm: string } }) =>
        Effect.flatMap(Fixtures.prune({ method: "weight-norm", ...c, seed: 0, calibration: 4 }, { teacher, data }), (a) => Fixtures.decision(a, Selection.Scores))
      const unknown = yield* Effect.flip(prune({ keep: 3 }))
      assert.match(unknown.message, /no pruner named "weight-norm"/)

      const norms = hostBlocks((yield* PruneStage.readModel(teacher)).params, 6)
      const top = (scores: ReadonlyArray<number>, k: number) => scores.map((n, i) => [n, i] as const).sort((a, b) => b[0] - a[0]).slice(0, k).map(([, i]) => i).sort((a, b) => a - b)
      for (const norm of ["l2", "l1", "max"] as const) {
        const decided = yield* prune({ keep: 3, options: { norm } }).pipe(Effect.provide(Methods.layer))
        assert.deepStrictEqual(decided.kept, top(norms[norm], 3), norm)
        decided.evidence.scores.forEach((s, i) => assert.closeTo(s, norms[norm][i]!, 1e-4 * norms[norm][i]!, `${norm} of block ${i}`))
        assert.strictEqual(decided.evidence.measure, `${norm} norm of the block's parameters`)
      }
      // 1:2: the larger of each pair; the default norm is L2.
      const paired = yield* prune({ scheme: "1:2" }).pipe(Effect.provide(Methods.layer))
      assert.deepStrictEqual(paired.kept, [0, 2, 4].map((i) => (norms.l2[i]! >= norms.l2[i + 1]! ? i : i + 1)))
      assert.deepStrictEqual(paired.groups, [[0, 1], [2, 3], [4, 5]])
      const bad = yield* Effect.flip(prune({ keep: 3, options: { norm: "l3" } })).pipe(Effect.provide(Methods.layer))
      assert.match(bad.message, /invalid options for pruner weight-norm: .*\["norm"\]/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
