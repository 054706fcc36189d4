/**
 * The reference set of the FID-family metrics, as a stage (`reference`): the
 * real images samples are compared with (ADM's reference batch, e.g.
 * VIRTUAL_imagenet256_labeled.npz), summarised once by the feature network
 * of a `feature-net` artifact:
 *
 *   pooled.safetensors    mean and covariance of pooled features (FID), float64
 *   spatial.safetensors   the same of spatial features (sFID), float64
 *   features.safetensors  the pooled and spatial features and class
 *                         probabilities of every image, and each one's k-NN
 *                         radius (precision/recall); the spatial rows are what
 *                         the bootstrap of sFID resamples
 *
 * The images go through the path samples take (`Features.ofPixels`), and the
 * statistics are eval's FeatureStatistics, so a sample set equal to the
 * reference set scores FID 0.
 */
import { Effect, Schema } from "effect"
import { CorruptArtifact, Stage } from "@tinyfusion/core"
import { FeatureExtractor, Images, Stages } from "@tinyfusion/data"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as Features from "./Features.ts"
import * as InceptionScore from "./InceptionScore.ts"
import * as Metrics from "./Metrics.ts"
import * as PrecisionRecall from "./PrecisionRecall.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

export const ReferenceConfig = Schema.Struct({
  /** The dataset the Dataset service must be. */
  dataset: Schema.String,
  split: Schema.Literals(["test", "train"]),
  /** Images from the start of the split; 0 takes all of them. */
  images: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  batchSize: PositiveInt,
  /** Neighbourhood of precision/recall (ADM: 3). */
  k: PositiveInt,
  /** Rows per Inception Score split of the reference's own IS (ADM: 5,000). */
  splitSize: PositiveInt
})
export type ReferenceConfig = typeof ReferenceConfig.Type

export const ReferenceOutput = Schema.Struct({
  count: Schema.Int,
  poolDim: Schema.Int,
  spatialDim: Schema.Int,
  classes: Schema.Int,
  k: Schema.Int,
  /** The Inception Score of the real images: the ceiling samples are measured against. */
  inceptionScore: Schema.Finite
})
export type ReferenceOutput = typeof ReferenceOutput.Type

export const files = { pooled: "pooled.safetensors", spatial: "spatial.safetensors", features: Features.file } as const

/** A dataset whose images the feature network does not take. */
export class ImagesMismatch extends Schema.TaggedError<ImagesMismatch>()("ImagesMismatch", {
  dataset: Schema.String,
  images: Schema.String,
  network: Schema.String
}) {
  override get message(): string {
    return `the ${this.dataset} images are ${this.images}, the feature network takes ${this.network}`
  }
}

/** The mini preset: Fashion-MNIST's 10,000 test images. */
export const miniReference: ReferenceConfig = { dataset: "fashion-mnist", split: "test", images: 0, batchSize: 500, k: 3, splitSize: 5000 }

export const ReferenceStage = Stage.make({
  name: "reference",
  version: 2,
  config: ReferenceConfig,
  output: ReferenceOutput,
  inputs: { featureNet: Stages.FeatureNetStage },
  run: (config, { featureNet }, ctx) =>
    Effect.gen(function*() {
      const data = yield* Stages.checkDataset(config.dataset)
      const set = data[config.split]
      const count = config.images === 0 ? set.count : Math.min(config.images, set.count)
      const extractor = yield* FeatureExtractor
      const [h, w, c] = extractor.imageShape
      if (set.height !== h || set.width !== w || set.channels !== c) {
        return yield* new ImagesMismatch({ dataset: data.name, images: `${set.height}×${set.width}×${set.channels}`, network: `${h}×${w}×${c}` })
      }
      const collector = Metrics.collector({ pooled: extractor.poolDim, spatial: extractor.spatialDim, classes: extractor.classes }, "reference", {
        keepSpatial: true
      })
      const per = Images.imageSize(set)
      for (let start = 0; start < count; start += config.batchSize) {
        const n = Math.min(config.batchSize, count - start)
        yield* collector.add(yield* Features.ofPixels(set.pixels.subarray(start * per, (start + n) * per), n))
      }
      const summary = yield* collector.result
      const radii = yield* PrecisionRecall.radii("reference", summary.pooledFeatures, { k: config.k })
      const inceptionScore = yield* InceptionScore.compute(summary.probabilities, { splitSize: config.splitSize })
      yield* ctx.writeBytes(files.pooled, FeatureStatistics.encode(summary.pooled))
      yield* ctx.writeBytes(files.spatial, FeatureStatistics.encode(summary.spatial))
      yield* ctx.writeBytes(files.features, Features.encode({
        pooled: summary.pooledFeatures,
        probabilities: summary.probabilities,
        ...(summary.spatialFeatures === undefined ? {} : { spatial: summary.spatialFeatures }),
        radii
      }))
      yield* ctx.metric("inception_score", inceptionScore)
      return {
        count,
        poolDim: extractor.poolDim,
        spatialDim: extractor.spatialDim,
        classes: extractor.classes,
        k: config.k,
        inceptionScore
      }
    }).pipe(Effect.provide(Stages.featureExtractor(featureNet)))
})

export interface Loaded {
  readonly summary: Metrics.Summary
  /** The k-NN radius of each reference point. */
  readonly radii: Float32Array
  readonly k: number
}

/** A reference artifact's statistics, features and radii, each checked against its output. */
export const load = Effect.fn("Reference.load")(function*(artifact: Stage.Artifact<ReferenceOutput>) {
  const out = artifact.output
  const statistics = Effect.fnUntraced(function*(name: string, dim: number) {
    const s = yield* FeatureStatistics.decode(yield* artifact.bytes(name)).pipe(
      Effect.mapError((e) => new CorruptArtifact({ key: artifact.key, path: artifact.path(name), reason: e.reason }))
    )
    if (s.count !== out.count || FeatureStatistics.dimension(s) !== dim) {
      return yield* new CorruptArtifact({
        key: artifact.key,
        path: artifact.path(name),
        reason: `statistics of ${s.count} × ${FeatureStatistics.dimension(s)} features, the output says ${out.count} × ${dim}`
      })
    }
    return s
  })
  const pooled = yield* statistics(files.pooled, out.poolDim)
  const spatial = yield* statistics(files.spatial, out.spatialDim)
  const set = yield* Features.decode(yield* artifact.bytes(files.features), out, { key: artifact.key, path: artifact.path(files.features) })
  const spatialFeatures = set.spatial!
  if (set.radii === undefined) {
    return yield* new CorruptArtifact({ key: artifact.key, path: artifact.path(files.features), reason: "no radii" })
  }
  return {
    summary: { pooled, spatial, pooledFeatures: set.pooled, probabilities: set.probabilities, spatialFeatures },
    radii: set.radii,
    k: out.k
  } satisfies Loaded
})
