/**
 * What the FID-family metrics look at, as a service: images in, pooled
 * features, class probabilities and spatial features out. The mini preset
 * provides it from the project's FeatureNet; the paper preset from the FID
 * Inception-V3 (`inception`), ADM's evaluator network.
 *
 * The statistics of a reference set (float64 moments, pooled features, k-NN
 * radii) are packages/eval's `reference` stage, computed with the same
 * feature statistics as the samples they are compared with.
 */
import { Context, Effect, Layer } from "effect"
import { Compute, type ComputeError, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import * as FeatureNet from "./FeatureNet.ts"
import * as Inception from "./Inception.ts"

export interface Outputs {
  /** [N, poolDim] */
  readonly pool: tf.Tensor2D
  /** [N, classes], softmax probabilities */
  readonly probs: tf.Tensor2D
  /** [N, spatialDim] */
  readonly spatial: tf.Tensor2D
}

export class FeatureExtractor extends Context.Service<FeatureExtractor, {
  /** Names the network, for reports (e.g. "feature-net (Fashion-MNIST)"). */
  readonly name: string
  /** [H, W, C] of the images it takes. */
  readonly imageShape: readonly [number, number, number]
  readonly poolDim: number
  readonly spatialDim: number
  readonly classes: number
  /** Images [N,H,W,C] in [-1, 1] → features; a tensor function, the caller scopes it. */
  readonly apply: (images: tf.Tensor4D) => Outputs
}>()("@tinyfusion/data/FeatureExtractor") {
  /** The extractor of a trained FeatureNet; its weights live on the device while the layer does. */
  static featureNet(config: FeatureNet.Config, params: HostTensor.HostTree, name = "feature-net"): Layer.Layer<FeatureExtractor, never, Compute> {
    return Layer.effect(
      FeatureExtractor,
      Effect.acquireRelease(
        Effect.gen(function*() {
          yield* Compute
          return HostTensor.treeToTensors(params)
        }),
        (tree) => Effect.sync(() => ParamTree.dispose(tree))
      ).pipe(Effect.map((tree) =>
        FeatureExtractor.of({
          name,
          imageShape: [config.imageSize, config.imageSize, config.imageChannels],
          poolDim: FeatureNet.poolDim(config),
          spatialDim: FeatureNet.spatialDim(config),
          classes: config.classes,
          apply: (images) => {
            const out = FeatureNet.forward(config, tree, images)
            return { pool: out.pool, probs: tf.softmax(out.logits), spatial: out.spatial }
          }
        })
      ))
    )
  }
}

/**
 * The FID Inception-V3 on pytorch-fid's weights, taking images of `imageShape`
 * (the dataset's, e.g. 256 × 256 × 3) and resizing them as ADM's graph does.
 */
export const inception = (
  config: Inception.Config,
  params: HostTensor.HostTree,
  imageShape: readonly [number, number, number]
): Layer.Layer<FeatureExtractor, never, Compute> =>
  Layer.effect(
    FeatureExtractor,
    Effect.acquireRelease(
      Effect.gen(function*() {
        yield* Compute
        const tree = HostTensor.treeToTensors(params)
        const net = Inception.prepare(config, tree)
        ParamTree.dispose(tree)
        return net
      }),
      (net) => Effect.sync(() => Inception.dispose(net))
    ).pipe(Effect.map((net) =>
      FeatureExtractor.of({
        name: Inception.describe(config),
        imageShape,
        poolDim: Inception.poolDim(config),
        spatialDim: Inception.spatialDim(config),
        classes: config.classes,
        apply: (images) => {
          const out = Inception.forward(net, Inception.preprocess(config, images))
          return { pool: out.pool, probs: tf.softmax(out.logits), spatial: out.spatial }
        }
      })
    ))
  )

export interface HostFeatures {
  readonly count: number
  readonly pool: Float32Array
  readonly probs: Float32Array
  readonly spatial: Float32Array
}

/** Features of `count` images given as one NHWC float array in [-1, 1], in batches. */
export const extract = Effect.fn("FeatureExtractor.extract")(function*(
  images: Float32Array,
  count: number,
  batchSize: number
): Effect.fn.Return<HostFeatures, ComputeError, FeatureExtractor | Compute> {
  const extractor = yield* FeatureExtractor
  const compute = yield* Compute
  const [h, w, c] = extractor.imageShape
  const per = h * w * c
  if (images.length !== count * per) throw new Error(`${count} images of ${h}×${w}×${c} need ${count * per} values, got ${images.length}`)
  const pool = new Float32Array(count * extractor.poolDim)
  const probs = new Float32Array(count * extractor.classes)
  const spatial = new Float32Array(count * extractor.spatialDim)
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start)
    const out = yield* compute.scoped(Effect.gen(function*() {
      const x = tf.tensor4d(images.subarray(start * per, (start + n) * per), [n, h, w, c])
      const f = extractor.apply(x)
      return [yield* compute.read(f.pool), yield* compute.read(f.probs), yield* compute.read(f.spatial)] as const
    }))
    pool.set(out[0], start * extractor.poolDim)
    probs.set(out[1], start * extractor.classes)
    spatial.set(out[2], start * extractor.spatialDim)
  }
  return { count, pool, probs, spatial }
})

/** Share of rows whose most probable class is the label. */
export function topOneAccuracy(probs: Float32Array, labels: Int32Array, classes: number): number {
  let correct = 0
  for (let n = 0; n < labels.length; n++) {
    let best = 0
    for (let k = 1; k < classes; k++) if (probs[n * classes + k]! > probs[n * classes + best]!) best = k
    if (best === labels[n]) correct++
  }
  return correct / labels.length
}
