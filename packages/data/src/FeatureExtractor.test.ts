import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import * as Batches from "./Batches.ts"
import { Dataset } from "./Dataset.ts"
import * as Extraction from "./FeatureExtractor.ts"
import { FeatureExtractor } from "./FeatureExtractor.ts"
import * as FeatureNet from "./FeatureNet.ts"
import * as Images from "./Images.ts"

const tiny: FeatureNet.Config = { imageSize: 8, imageChannels: 1, channels: [8, 16], classes: 3, hidden: 16, spatialChannels: 7 }

describe("FeatureExtractor", () => {
  it("top-1 accuracy", () => {
    const probs = Float32Array.of(0.7, 0.2, 0.1, 0.1, 0.3, 0.6, 0.2, 0.5, 0.3, 0.4, 0.4, 0.2)
    // Arg-max classes 0, 2, 1, 0 (a tie goes to the first) against labels 0, 1, 1, 0.
    assert.strictEqual(Extraction.topOneAccuracy(probs, Int32Array.of(0, 1, 1, 0), 3), 0.75)
  })

  it.effect("FeatureNet learns the synthetic classes; the extractor gives pooled, probability and spatial features", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const data = yield* Dataset
      const [train, testSet] = [yield* Images.load(data.train), yield* Images.load(data.test)]
      const training: FeatureNet.TrainConfig = { seed: 0, steps: 150, batchSize: 16, lr: 1e-2, weightDecay: 0, clip: 1 }
      let end = FeatureNet.initialState(tiny, training)
      while (end.step < training.steps) {
        const next = FeatureNet.step(tiny, training, end, train)
        next.loss.dispose()
        FeatureNet.disposeState(end)
        end = next.state
      }
      const host = yield* HostTensor.treeFromTensors(end.params)
      FeatureNet.disposeState(end)
      const before = (yield* compute.memory).tensors
      const test = Batches.range(testSet, 0, testSet.count)
      // Batches of 20 over 48 images: the last one is short.
      const features = yield* Extraction.extract(test.images, 48, 20).pipe(Effect.provide(FeatureExtractor.featureNet(tiny, host)))
      // The layer's weights are released with it.
      assert.strictEqual((yield* compute.memory).tensors, before)
      assert.strictEqual(FeatureNet.spatialDim(tiny), 4 * 4 * 7)
      assert.deepStrictEqual([features.pool.length, features.probs.length, features.spatial.length], [48 * 16, 48 * 3, 48 * 112])
      const probs = features.probs
      for (let n = 0; n < 48; n++) assert.closeTo(probs[3 * n]! + probs[3 * n + 1]! + probs[3 * n + 2]!, 1, 1e-5)
      assert.isAtLeast(Extraction.topOneAccuracy(probs, data.test.labels, 3), 0.9)
      // The last, short batch gets the features the network gives those images alone.
      const alone = yield* Extraction.extract(test.images.subarray(40 * 64), 8, 8).pipe(Effect.provide(FeatureExtractor.featureNet(tiny, host)))
      assert.deepStrictEqual([...alone.pool], [...features.pool.subarray(40 * 16)])
    }).pipe(
      Effect.provide(Dataset.synthetic({ classes: 3, train: 96, test: 48, size: 8, channels: 1, seed: 1 })),
      Effect.provide(Compute.wasm)
    ), 60_000)

  it.effect("forward: logits, pooled and spatial shapes of the mini preset", () =>
    Effect.gen(function*() {
      const params = FeatureNet.init(FeatureNet.mini, 0)
      const out = FeatureNet.forward(FeatureNet.mini, params, tf.zeros([2, 32, 32, 1]) as tf.Tensor4D)
      assert.deepStrictEqual([out.logits.shape, out.pool.shape, out.spatial.shape], [[2, 10], [2, 128], [2, 8 * 8 * 7]])
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
