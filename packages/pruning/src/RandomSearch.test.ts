import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute, Rng } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as RandomSearch from "./RandomSearch.ts"
import * as Selection from "./Selection.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

describe("Random search", () => {
  it("picks: min, lower median and max by loss, ties to the earlier sample", () => {
    const samples = [3, 1, 4, 1, 5, 9].map((loss, index) => ({ index, loss }))
    const p = RandomSearch.picks(samples)
    assert.deepStrictEqual([p.min.index, p.median.index, p.max.index], [1, 0, 5])
  })

  it.live("the lowest and highest losses are the masks with the smallest and largest moves; every loss kept", () =>
    Effect.gen(function*() {
      // Each block moves the prediction by its size along u: the loss grows with the sum of the kept sizes.
      const sizes = [0.1, 0.4, 0.2, 0.8, 0.3]
      const blocks = sizes.map((size) => ({ add: "output", size }) as const)
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config: Fixtures.tiny(5), weights: { blocks } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 4], classes: 3, seed: 2 }, {})
      const run = (pick: RandomSearch.Which) =>
        Effect.flatMap(
          Fixtures.prune({ method: "random", keep: 2, seed: 3, calibration: 8, options: { pick, samples: 30, checkpointEvery: 7 } }, { teacher, data }),
          (artifact) => Fixtures.decision(artifact, RandomSearch.Evidence)
        )
      const [min, median, max] = [yield* run("min"), yield* run("median"), yield* run("max")]
      assert.deepStrictEqual(min.kept, [0, 2])
      assert.deepStrictEqual(max.kept, [1, 3])
      const samples = min.evidence
      assert.strictEqual(samples.losses.length, 30)
      assert.deepStrictEqual(median.evidence, samples)
      assert.deepStrictEqual(max.evidence, samples)
      const sorted = [...samples.losses].sort((a, b) => a - b)
      assert.strictEqual(samples.min.loss, sorted[0])
      assert.strictEqual(samples.median.loss, sorted[14])
      assert.strictEqual(samples.max.loss, sorted[29])
      assert.deepStrictEqual(median.kept, samples.median.kept)
      // The stage's calibration loss of the picked model is the search's loss of that mask.
      assert.strictEqual(min.calibrationLoss, samples.min.loss)
      assert.strictEqual(max.calibrationLoss, samples.max.loss)
      // The loss orders the masks as the sum of their sizes does.
      const stream = Rng.stream(3, "prune/random")
      const sums = samples.losses.map((_, i) => Selection.random(stream, i, 5, { keep: 2 }).reduce((a, k) => a + sizes[k]!, 0))
      samples.losses.forEach((a, i) =>
        samples.losses.forEach((b, j) => {
          if (sums[i]! < sums[j]! - 1e-9) assert.isBelow(a, b, `sample ${i} (sum ${sums[i]}) against ${j} (sum ${sums[j]})`)
        })
      )
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
