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
import { FeatureExtractor, Npz, Stages } from "@tinyfusion/data"
import { WeightsFile } from "@tinyfusion/tensor"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as Features from "./Features.ts"
import * as FrechetDistance from "./FrechetDistance.ts"
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
  is: Schema.Finite
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

/** The features file: every image's pooled and spatial features, class probabilities and k-NN radius. */
const encodeFeatures = (summary: Metrics.Summary, radii: Float32Array) =>
  Features.encode({
    pooled: summary.pooledFeatures,
    probabilities: summary.probabilities,
    ...(summary.spatialFeatures === undefined ? {} : { spatial: summary.spatialFeatures }),
    radii
  })

export const ReferenceStage = Stage.make({
  name: "reference",
  module: import.meta.url,
  config: ReferenceConfig,
  output: ReferenceOutput,
  inputs: { featureNet: Stages.FeatureNetOutput },
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
      for (let start = 0; start < count; start += config.batchSize) {
        const n = Math.min(config.batchSize, count - start)
        yield* collector.add(yield* Features.ofPixels((yield* set.read(start, n)).pixels, n))
      }
      const summary = yield* collector.result
      const radii = yield* PrecisionRecall.radii("reference", summary.pooledFeatures, { k: config.k })
      const is = yield* InceptionScore.compute(summary.probabilities, { splitSize: config.splitSize })
      yield* ctx.writeBytes(files.pooled, FeatureStatistics.encode(summary.pooled))
      yield* ctx.writeBytes(files.spatial, FeatureStatistics.encode(summary.spatial))
      yield* ctx.writeBytes(files.features, encodeFeatures(summary, radii))
      yield* ctx.metric("is", is)
      return {
        count,
        poolDim: extractor.poolDim,
        spatialDim: extractor.spatialDim,
        classes: extractor.classes,
        k: config.k,
        is
      }
    }).pipe(Effect.provide(Stages.featureExtractor(featureNet)))
})

// ---------------------------------------------------------------- ADM reference batches

export const BatchConfig = Schema.Struct({
  /** The .npz's sha256 (the key covers the contents, not the path). */
  sha256: Schema.String,
  batchSize: PositiveInt,
  k: PositiveInt,
  splitSize: PositiveInt
})
export type BatchConfig = typeof BatchConfig.Type

/** A reference batch that does not fit the feature network, or is no ADM batch. */
export class BatchMismatch extends Schema.TaggedError<BatchMismatch>()("BatchMismatch", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `reference batch ${this.path}: ${this.reason}`
  }
}

const statisticsNames = ["mu", "sigma", "mu_s", "sigma_s"] as const

/**
 * Checks an ADM reference batch (VIRTUAL_imagenet256_labeled.npz: arr_0,
 * N × H × W × 3 uint8, and optionally mu, sigma, mu_s, sigma_s in float64)
 * against the images and feature dimensions it must have, reading headers only.
 */
export const inspectBatch = Effect.fn("Reference.inspectBatch")(function*(
  path: string,
  expected: { readonly imageShape: readonly [number, number, number]; readonly poolDim: number; readonly spatialDim: number }
) {
  const fail = (reason: string) => new BatchMismatch({ path, reason })
  return yield* Effect.scoped(Effect.gen(function*() {
    const npz = yield* Npz.open(path)
    if (!npz.names.includes("arr_0")) return yield* fail(`no arr_0 (it holds ${npz.names.join(", ") || "nothing"})`)
    const images = yield* npz.header("arr_0")
    const [n, ...shape] = images.shape
    if (images.dtype !== "uint8" || shape.length !== 3 || shape.some((d, i) => d !== expected.imageShape[i])) {
      return yield* fail(`arr_0 is ${images.dtype}[${images.shape.join(", ")}], expected uint8[N, ${expected.imageShape.join(", ")}]`)
    }
    if (n! < 2) return yield* fail(`arr_0 holds ${n} images; statistics need at least 2`)
    const present = statisticsNames.filter((s) => npz.names.includes(s))
    if (present.length > 0 && present.length < 4) return yield* fail(`holds ${present.join(", ")} but not all of mu, sigma, mu_s, sigma_s`)
    if (present.length === 4) {
      const dims = { mu: [expected.poolDim], sigma: [expected.poolDim, expected.poolDim], mu_s: [expected.spatialDim], sigma_s: [expected.spatialDim, expected.spatialDim] }
      for (const name of statisticsNames) {
        const h = yield* npz.header(name)
        if (h.dtype !== "float64" || h.shape.join() !== dims[name].join()) {
          return yield* fail(`${name} is ${h.dtype}[${h.shape.join(", ")}], the feature network needs float64[${dims[name].join(", ")}]`)
        }
      }
    }
    return { count: n!, statistics: present.length === 4, sha256: yield* WeightsFile.fileSha256(path) }
  }))
})

/**
 * The `reference` stage for an ADM reference batch at `path`: the same role and
 * output as the dataset-split reference. The images go through the feature
 * network for precision/recall's features and radii and the IS; the FID and
 * sFID statistics are the batch's own mu/sigma and mu_s/sigma_s when it has
 * them, as ADM's evaluator reads them (the FID between those and the ones
 * recomputed here is the metric `fidBatchVsRecomputed`: how far this
 * feature network is from the TF graph on these images). The features file
 * keeps every image's spatial rows, as the dataset-split reference's does, for
 * the bootstrap of sFID. The bootstrap resamples the features recomputed
 * here; their spread stands for that of the point value the batch's own
 * statistics give.
 */
export const fromBatch = (path: string) =>
  Stage.make({
    name: "reference",
    module: import.meta.url,
    config: BatchConfig,
    output: ReferenceOutput,
    inputs: { featureNet: Stages.FeatureNetOutput },
    run: (config, { featureNet }, ctx) =>
      Effect.gen(function*() {
        const extractor = yield* FeatureExtractor
        const dims = { pooled: extractor.poolDim, spatial: extractor.spatialDim, classes: extractor.classes }
        const checked = yield* inspectBatch(path, { imageShape: extractor.imageShape, poolDim: dims.pooled, spatialDim: dims.spatial })
        if (checked.sha256 !== config.sha256) return yield* new BatchMismatch({ path, reason: `sha256 ${checked.sha256}, the stage config names ${config.sha256}` })
        const collector = Metrics.collector(dims, "reference", { keepSpatial: true })
        const npz = yield* Npz.open(path)
        const rows = yield* npz.rows("arr_0")
        for (let start = 0; start < checked.count; start += config.batchSize) {
          const n = Math.min(config.batchSize, checked.count - start)
          yield* collector.add(yield* Features.ofPixels((yield* rows.next(n)) as Uint8Array, n))
        }
        const summary = yield* collector.result
        const given = (mu: string, sigma: string) =>
          Effect.gen(function*() {
            const mean = (yield* npz.read(mu)).data as Float64Array
            return { count: checked.count, mean, covariance: (yield* npz.read(sigma)).data as Float64Array }
          })
        const pooled = checked.statistics ? yield* given("mu", "sigma") : summary.pooled
        const spatial = checked.statistics ? yield* given("mu_s", "sigma_s") : summary.spatial
        if (checked.statistics) yield* ctx.metric("fidBatchVsRecomputed", yield* FrechetDistance.compute(pooled, summary.pooled))
        const radii = yield* PrecisionRecall.radii("reference", summary.pooledFeatures, { k: config.k })
        const is = yield* InceptionScore.compute(summary.probabilities, { splitSize: config.splitSize })
        yield* ctx.writeBytes(files.pooled, FeatureStatistics.encode(pooled))
        yield* ctx.writeBytes(files.spatial, FeatureStatistics.encode(spatial))
        yield* ctx.writeBytes(files.features, encodeFeatures(summary, radii))
        yield* ctx.metric("is", is)
        return { count: checked.count, poolDim: dims.pooled, spatialDim: dims.spatial, classes: dims.classes, k: config.k, is }
      }).pipe(Effect.scoped, Effect.provide(Stages.featureExtractor(featureNet)))
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
