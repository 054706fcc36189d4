import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import { Dataset } from "./Dataset.ts"
import * as Features from "./FeatureExtractor.ts"
import { FeatureExtractor } from "./FeatureExtractor.ts"
import * as FeatureNet from "./FeatureNet.ts"

const tiny: FeatureNet.Config = { imageSize: 8, imageChannels: 1, channels: [8, 16], classes: 3, spatialChannels: 7 }

describe("FeatureExtractor", () => {
  it("moments: mean and N − 1 covariance, by hand", () => {
    // Rows (1, 2), (3, 6), (5, 10): mean (3, 6); var x = (4 + 0 + 4)/2 = 4, cov = (8 + 0 + 8)/2 = 8, var y = 16.
    const m = Features.moments(Float32Array.of(1, 2, 3, 6, 5, 10), 3, 2)
    assert.deepStrictEqual([...m.mean], [3, 6])
    assert.deepStrictEqual([...m.covariance], [4, 8, 8, 16])
    assert.throws(() => Features.moments(Float32Array.of(1, 2), 1, 2), /at least 2 samples/)
  })

  it("top-1 accuracy", () => {
    const probs = Float32Array.of(0.7, 0.2, 0.1, 0.1, 0.3, 0.6, 0.2, 0.5, 0.3, 0.4, 0.4, 0.2)
    // Arg-max classes 0, 2, 1, 0 (a tie goes to the first) against labels 0, 1, 1, 0.
    assert.strictEqual(Features.topOneAccuracy(probs, Int32Array.of(0, 1, 1, 0), 3), 0.75)
  })

  it.effect("FeatureNet learns the synthetic classes; the extractor gives pooled, probability and spatial features", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const data = yield* Dataset
      const training: FeatureNet.TrainConfig = { seed: 0, steps: 150, batchSize: 16, lr: 1e-2, weightDecay: 0, clip: 1 }
      const end = yield* FeatureNet.train(tiny, training, data.train, FeatureNet.initialState(tiny, training), { every: 150, progress: () => Effect.void })
      const host = yield* HostTensor.treeFromTensors(end.params)
      FeatureNet.disposeState(end)
      const before = (yield* compute.memory).tensors
      const stats = yield* Features.reference(data.test, 16).pipe(Effect.provide(FeatureExtractor.featureNet(tiny, host)))
      // The layer's weights are released with it.
      assert.strictEqual((yield* compute.memory).tensors, before)
      assert.strictEqual(FeatureNet.spatialDim(tiny), 4 * 4 * 7)
      const tree = stats.tree as Record<string, HostTensor.HostTensor>
      assert.deepStrictEqual([tree["mu"]!.shape, tree["sigma"]!.shape, tree["mu_s"]!.shape, tree["sigma_s"]!.shape, tree["pool"]!.shape], [[16], [16, 16], [112], [112, 112], [48, 16]])
      const probs = stats.features.probs
      for (let n = 0; n < 48; n++) assert.closeTo(probs[3 * n]! + probs[3 * n + 1]! + probs[3 * n + 2]!, 1, 1e-5)
      assert.isAtLeast(Features.topOneAccuracy(probs, data.test.labels, 3), 0.9)
      // sigma is the covariance of the stored pooled features.
      const direct = Features.moments(tree["pool"]!.data as Float32Array, 48, 16)
      assert.closeTo(tree["sigma"]!.data[17]!, direct.covariance[17]!, 1e-6)
    }).pipe(
      Effect.provide(Dataset.synthetic({ classes: 3, train: 96, test: 48, size: 8, channels: 1, seed: 1 })),
      Effect.provide(Compute.wasm)
    ), 60_000)

  it.effect("forward: logits, pooled and spatial shapes of the mini preset", () =>
    Effect.gen(function*() {
      const params = FeatureNet.init(FeatureNet.mini, 0)
      const out = FeatureNet.forward(FeatureNet.mini, params, tf.zeros([2, 32, 32, 1]) as tf.Tensor4D)
      assert.deepStrictEqual([out.logits.shape, out.pool.shape, out.spatial.shape], [[2, 10], [2, 64], [2, 8 * 8 * 7]])
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
