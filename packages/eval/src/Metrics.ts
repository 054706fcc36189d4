/**
 * The ADM evaluator's five numbers from feature sets: FID (pooled features),
 * sFID (spatial features), Inception Score (class probabilities of the
 * samples) and precision/recall (pooled features, k = 3).
 *
 * An evaluation feeds each batch of extracted features to a `collector`,
 * which keeps running statistics for FID and sFID (so the spatial features of
 * 50K samples are never held) and keeps the pooled features and
 * probabilities that precision/recall and IS need whole, as ADM does. The
 * reference set is summarised the same way, once, and stored.
 */
import { Effect, Schema } from "effect"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as FrechetDistance from "./FrechetDistance.ts"
import * as InceptionScore from "./InceptionScore.ts"
import * as Matrix from "./Matrix.ts"
import * as PrecisionRecall from "./PrecisionRecall.ts"

/** Features of the same images from one pass of the feature network. */
export interface FeatureBatch {
  /** [N, D] pooled features. */
  readonly pooled: Matrix.Matrix
  /** [N, D_s] flattened spatial features (`Matrix.spatial`). */
  readonly spatial: Matrix.Matrix
  /** [N, classes] softmax probabilities. */
  readonly probabilities: Matrix.Matrix
}

export interface Summary {
  readonly pooled: FeatureStatistics.FeatureStatistics
  readonly spatial: FeatureStatistics.FeatureStatistics
  readonly pooledFeatures: Matrix.Matrix
  readonly probabilities: Matrix.Matrix
  /** Every row's spatial features, where kept (the bootstrap of sFID resamples them). */
  readonly spatialFeatures?: Matrix.Matrix
}

export interface Dimensions {
  readonly pooled: number
  readonly spatial: number
  readonly classes: number
}

export interface Collector {
  readonly count: number
  readonly add: (batch: FeatureBatch) => Effect.Effect<void, Matrix.InvalidFeatures>
  readonly result: Effect.Effect<Summary, Matrix.InvalidFeatures>
}

/** Accumulates batches of `input` ("samples", "reference") features; `keepSpatial` keeps every spatial row too. */
export const collector = (dims: Dimensions, input = "samples", options: { readonly keepSpatial?: boolean } = {}): Collector => {
  const pooled = FeatureStatistics.accumulator(dims.pooled, `${input}.pooled`)
  const spatial = FeatureStatistics.accumulator(dims.spatial, `${input}.spatial`)
  const pooledRows: Array<Matrix.Matrix> = []
  const probabilityRows: Array<Matrix.Matrix> = []
  const spatialRows: Array<Matrix.Matrix> = []
  const add = Effect.fn("Metrics.Collector.add")(function*(batch: FeatureBatch) {
    const n = batch.pooled.rows
    for (const [name, m] of [["spatial", batch.spatial], ["probabilities", batch.probabilities]] as const) {
      if (m.rows !== n) {
        return yield* new Matrix.InvalidFeatures({ input: `${input}.${name}`, reason: `${m.rows} rows in a batch of ${n} images` })
      }
    }
    yield* Matrix.validate(`${input}.probabilities`, batch.probabilities, { cols: dims.classes, minRows: 0 })
    yield* pooled.add(batch.pooled)
    yield* spatial.add(batch.spatial)
    // Copies: a caller may reuse its buffers for the next batch.
    pooledRows.push(Matrix.make(n, dims.pooled, Float32Array.from(batch.pooled.data)))
    probabilityRows.push(Matrix.make(n, dims.classes, Float32Array.from(batch.probabilities.data)))
    if (options.keepSpatial === true) spatialRows.push(Matrix.make(n, dims.spatial, Float32Array.from(batch.spatial.data)))
  })
  const result = Effect.gen(function*() {
    return {
      pooled: yield* pooled.result,
      spatial: yield* spatial.result,
      pooledFeatures: Matrix.concat(pooledRows, dims.pooled),
      probabilities: Matrix.concat(probabilityRows, dims.classes),
      ...(options.keepSpatial === true ? { spatialFeatures: Matrix.concat(spatialRows, dims.spatial) } : {})
    } satisfies Summary
  })
  return {
    get count() {
      return pooled.count
    },
    add,
    result
  }
}

export interface Options extends PrecisionRecall.Options, InceptionScore.Options {
  /** The reference's k-NN radii if stored with it (they cost a pass over N² distances). */
  readonly referenceRadii?: Float32Array
  /** Row groups of each set for the bootstrap's coverage masks (PrecisionRecall.Manifold's offsets); absent: one group each. */
  readonly groups?: { readonly samples: Int32Array; readonly reference: Int32Array }
}

/**
 * ADM's five numbers of a sample set, under the names every stage output,
 * manifest metric, result and report column uses; each says what it is
 * (`title`) for the report.
 */
export const Scores = Schema.Struct({
  is: Schema.Finite.annotate({ title: "IS" }),
  fid: Schema.Finite.annotate({ title: "FID" }),
  sfid: Schema.Finite.annotate({ title: "sFID" }),
  precision: Schema.Finite.annotate({ title: "Prec." }),
  recall: Schema.Finite.annotate({ title: "Recall" })
})
export type Results = typeof Scores.Type

/** The five numbers and the precision/recall coverage masks they came from (what the bootstrap resamples). */
export const score = Effect.fn("Metrics.score")(function*(samples: Summary, reference: Summary, options: Options = {}) {
  const fid = yield* FrechetDistance.compute(samples.pooled, reference.pooled)
  const sfid = yield* FrechetDistance.compute(samples.spatial, reference.spatial)
  const is = yield* InceptionScore.compute(samples.probabilities, options)
  const referenceRadii = options.referenceRadii ?? (yield* PrecisionRecall.radii("reference", reference.pooledFeatures, options))
  const sampleRadii = yield* PrecisionRecall.radii("samples", samples.pooledFeatures, options)
  const groups = options.groups
  const coverage = yield* PrecisionRecall.coverage(
    { features: reference.pooledFeatures, radii: referenceRadii, ...(groups === undefined ? {} : { groups: groups.reference }) },
    { features: samples.pooledFeatures, radii: sampleRadii, ...(groups === undefined ? {} : { groups: groups.samples }) },
    options
  )
  const { precision, recall } = PrecisionRecall.shares(coverage)
  return { results: { is, fid, sfid, precision, recall } satisfies Results, coverage }
})

/** The five numbers of `samples` against `reference`. */
export const evaluate = (samples: Summary, reference: Summary, options: Options = {}) => Effect.map(score(samples, reference, options), (s) => s.results)
