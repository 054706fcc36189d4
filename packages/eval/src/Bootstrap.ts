/**
 * The bootstrap of the evaluation's five numbers: how much FID, sFID, IS,
 * precision and recall would move with another draw of the N samples and of
 * the reference images, both being samples of their distributions.
 *
 * Each set is cut into G = min(N, `groups`) consecutive groups of rows (the
 * samples are independent, so the groups are too), and a replicate draws G
 * groups with replacement from each set and recomputes the metric on the
 * drawn rows: FID and sFID from the merged moments of the drawn groups
 * (exact: the statistics of the concatenated rows), IS from the drawn
 * probability rows in draw order, precision and recall from the coverage
 * masks restricted to the drawn groups' k-NN balls (each point keeps the
 * radius it has in its full set). Groups keep a replicate's cost at
 * O(G·D²) instead of O(N·D²); with G = N (N ≤ `groups`) this is the plain
 * bootstrap of rows.
 *
 * The draws are a pure function of (seed, set, replicate, G): every
 * evaluation with the same seed, sample count and reference draws the same
 * groups in replicate b. Two evaluations of one protocol sample with the same
 * noise and labels (sample i of one model and sample i of another start from
 * the same x_T), so the replicate-wise difference of two models' metrics is
 * the paired bootstrap of their difference, and the shared reference is
 * resampled alike on both sides.
 */
import { Effect, Record, Schema } from "effect"
import { Rng, Safetensors } from "@tinyfusion/tensor"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as FrechetDistance from "./FrechetDistance.ts"
import * as InceptionScore from "./InceptionScore.ts"
import * as Interval from "./Interval.ts"
import * as Matrix from "./Matrix.ts"
import * as Metrics from "./Metrics.ts"
import * as PrecisionRecall from "./PrecisionRecall.ts"

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const Settings = Schema.Struct({
  /** Replicates of FID, IS, precision and recall (0: no bootstrap). */
  replicates: Count,
  /** Replicates of sFID, the first of the same draws: each costs an eigendecomposition at the spatial width (448 at mini scale). */
  spatialReplicates: Count,
  /** Groups each set is cut into (at most; a set of fewer rows has one row per group). */
  groups: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  seed: Count
}).check(Schema.makeFilter((s) =>
  s.spatialReplicates > s.replicates ? `spatialReplicates ${s.spatialReplicates} exceeds replicates ${s.replicates}` : undefined
))
export type Settings = typeof Settings.Type

/** The two sets a replicate draws from. */
export type Set = "samples" | "reference"

/** G + 1 offsets cutting n rows into G = min(n, groups) consecutive groups of ⌊n/G⌋ or ⌈n/G⌉ rows. */
export const groups = (n: number, count: number): Int32Array => {
  const g = Math.max(1, Math.min(n, count))
  return Int32Array.from({ length: g + 1 }, (_, i) => Math.floor((i * n) / g))
}

/** How many times each of the G groups of `set` is drawn in replicate `replicate`. */
export const draws = (seed: number, set: Set, replicate: number, g: number): Int32Array => {
  const counts = new Int32Array(g)
  for (const i of Rng.integers(Rng.stream(seed, `bootstrap/${set}`), replicate, g, 0, g)) counts[i] = counts[i]! + 1
  return counts
}

/** Each group's row count, mean and packed upper triangle of Σ (x − μ)(x − μ)ᵀ. */
interface GroupMoments {
  readonly dim: number
  readonly count: Int32Array
  readonly mean: Float64Array
  readonly m2: Float64Array
}

const packedSize = (d: number) => (d * (d + 1)) / 2

const groupMoments = Effect.fnUntraced(function*(input: string, features: Matrix.Matrix, offsets: Int32Array) {
  const d = features.cols
  const g = offsets.length - 1
  const p = packedSize(d)
  const out: GroupMoments = { dim: d, count: new Int32Array(g), mean: new Float64Array(g * d), m2: new Float64Array(g * p) }
  for (let i = 0; i < g; i++) {
    const acc = FeatureStatistics.accumulator(d, input)
    yield* acc.add(Matrix.slice(features, offsets[i]!, offsets[i + 1]!))
    const m = acc.moments()
    out.count[i] = m.count
    out.mean.set(m.mean, i * d)
    let at = i * p
    for (let r = 0; r < d; r++) {
      out.m2.set(m.m2.subarray(r * d + r, (r + 1) * d), at)
      at += d - r
    }
  }
  return out
})

/** The statistics of the rows of group g taken counts[g] times each. */
const merged = (m: GroupMoments, counts: Int32Array): FeatureStatistics.FeatureStatistics => {
  const { dim: d } = m
  const p = packedSize(d)
  let n = 0
  const mean = new Float64Array(d)
  for (let g = 0; g < counts.length; g++) {
    const w = counts[g]! * m.count[g]!
    if (w === 0) continue
    n += w
    for (let j = 0; j < d; j++) mean[j] = mean[j]! + w * m.mean[g * d + j]!
  }
  for (let j = 0; j < d; j++) mean[j] = mean[j]! / n
  // M2 = Σ c_g·M2_g + Σ c_g·n_g·(μ_g − μ)(μ_g − μ)ᵀ, packed.
  const m2 = new Float64Array(p)
  const delta = new Float64Array(d)
  for (let g = 0; g < counts.length; g++) {
    const c = counts[g]!
    if (c === 0) continue
    const w = c * m.count[g]!
    for (let j = 0; j < d; j++) delta[j] = m.mean[g * d + j]! - mean[j]!
    const base = g * p
    let at = 0
    for (let i = 0; i < d; i++) {
      const di = w * delta[i]!
      for (let j = i; j < d; j++, at++) m2[at] = m2[at]! + c * m.m2[base + at]! + di * delta[j]!
    }
  }
  const covariance = new Float64Array(d * d)
  let at = 0
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++, at++) {
      const v = m2[at]! / (n - 1)
      covariance[i * d + j] = v
      covariance[j * d + i] = v
    }
  }
  return { count: n, mean, covariance }
}

/** The rows of the drawn groups, group after group, each as many times as drawn. */
const drawnRows = (m: Matrix.Matrix, offsets: Int32Array, counts: Int32Array): Matrix.Matrix => {
  let rows = 0
  for (let g = 0; g < counts.length; g++) rows += counts[g]! * (offsets[g + 1]! - offsets[g]!)
  const out = new Float32Array(rows * m.cols)
  let at = 0
  for (let g = 0; g < counts.length; g++) {
    const part = m.data.subarray(offsets[g]! * m.cols, offsets[g + 1]! * m.cols)
    for (let c = 0; c < counts[g]!; c++) {
      out.set(part, at)
      at += part.length
    }
  }
  return Matrix.make(rows, m.cols, out)
}

/** Each row's weight (its group's count) and the mask of drawn groups. */
const rowWeights = (offsets: Int32Array, counts: Int32Array) => {
  const weights = new Int32Array(offsets[offsets.length - 1]!)
  const drawn = new Uint32Array(PrecisionRecall.words(counts.length))
  for (let g = 0; g < counts.length; g++) {
    weights.fill(counts[g]!, offsets[g]!, offsets[g + 1]!)
    if (counts[g]! > 0) drawn[g >>> 5] = drawn[g >>> 5]! | (1 << (g & 31))
  }
  return { weights, drawn }
}

/** Each number's replicates, under the scores' names (Metrics.Scores); sFID's are the first `spatialReplicates` draws only. */
export type Replicates = { readonly [K in keyof Metrics.Results]: Float64Array }

/** The scores' names, in their order (Metrics.Scores): the tensors of the bootstrap file. */
export const metricNames = Object.keys(Metrics.Scores.fields) as ReadonlyArray<keyof Metrics.Results>

/**
 * The replicates of the five numbers. `coverage` must come from
 * Metrics.score with these groups (`groups(N, settings.groups)` of each set),
 * and the summaries must hold their spatial rows when sFID is resampled.
 */
export const replicates = Effect.fn("Bootstrap.replicates")(function*(
  samples: Metrics.Summary,
  reference: Metrics.Summary,
  coverage: PrecisionRecall.Coverage,
  settings: Settings,
  options: InceptionScore.Options = {}
) {
  const sampleGroups = groups(samples.pooledFeatures.rows, settings.groups)
  const referenceGroups = groups(reference.pooledFeatures.rows, settings.groups)
  const gs = sampleGroups.length - 1
  const gr = referenceGroups.length - 1
  if (coverage.sampleGroups !== gs || coverage.referenceGroups !== gr) {
    return yield* new Matrix.InvalidFeatures({
      input: "coverage",
      reason: `masks of ${coverage.sampleGroups} sample and ${coverage.referenceGroups} reference groups, the bootstrap draws ${gs} and ${gr}`
    })
  }
  const pooled = {
    samples: yield* groupMoments("samples.pooled", samples.pooledFeatures, sampleGroups),
    reference: yield* groupMoments("reference.pooled", reference.pooledFeatures, referenceGroups)
  }
  const spatial = settings.spatialReplicates === 0 ? undefined : {
    samples: yield* groupMoments("samples.spatial", yield* rowsOf("samples", samples), sampleGroups),
    reference: yield* groupMoments("reference.spatial", yield* rowsOf("reference", reference), referenceGroups)
  }
  const out: Replicates = {
    is: new Float64Array(settings.replicates),
    fid: new Float64Array(settings.replicates),
    sfid: new Float64Array(settings.spatialReplicates),
    precision: new Float64Array(settings.replicates),
    recall: new Float64Array(settings.replicates)
  }
  for (let b = 0; b < settings.replicates; b++) {
    const cs = draws(settings.seed, "samples", b, gs)
    const cr = draws(settings.seed, "reference", b, gr)
    out.fid[b] = yield* FrechetDistance.compute(merged(pooled.samples, cs), merged(pooled.reference, cr))
    if (spatial !== undefined && b < settings.spatialReplicates) {
      out.sfid[b] = yield* FrechetDistance.compute(merged(spatial.samples, cs), merged(spatial.reference, cr))
    }
    out.is[b] = yield* InceptionScore.compute(drawnRows(samples.probabilities, sampleGroups, cs), options)
    const s = rowWeights(sampleGroups, cs)
    const r = rowWeights(referenceGroups, cr)
    const pr = PrecisionRecall.shares(coverage, { samples: s.drawn, reference: r.drawn }, { samples: s.weights, reference: r.weights })
    out.precision[b] = pr.precision
    out.recall[b] = pr.recall
    // Let other fibers run between replicates (a replicate of sFID takes a fraction of a second).
    yield* Effect.yieldNow
  }
  return out
})

const rowsOf = (set: Set, s: Metrics.Summary) =>
  s.spatialFeatures === undefined
    ? Effect.fail(new Matrix.InvalidFeatures({ input: `${set}.spatial`, reason: "the spatial rows were not kept; the bootstrap of sFID needs them" }))
    : Effect.succeed(s.spatialFeatures)

/** The sample standard deviation of replicates (null for fewer than two). */
export const standardError = (xs: ArrayLike<number>): number | null => (xs.length < 2 ? null : Math.sqrt(Interval.variance(xs)))

/** Each number's standard error, under its name. */
export const standardErrors = (r: Replicates): { readonly [K in keyof Replicates]: number | null } => Record.map(r, standardError)

export const file = "bootstrap.safetensors"

/** Safetensors bytes: one F64 vector per metric. */
export const encode = (r: Replicates): Uint8Array =>
  Safetensors.encode(metricNames.map((name) => [name, { dtype: "float64", shape: [r[name].length], data: r[name] }] as const), {
    metadata: { format: "tinyfusion/bootstrap" }
  })

export class InvalidReplicates extends Schema.TaggedError<InvalidReplicates>()("InvalidReplicates", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid bootstrap file: ${this.reason}`
  }
}

/** Reads what `encode` wrote. */
export const decode = Effect.fn("Bootstrap.decode")(function*(bytes: Uint8Array) {
  const f = yield* Safetensors.decode(bytes).pipe(Effect.mapError((e) => new InvalidReplicates({ reason: e.reason })))
  if (f.metadata["format"] !== "tinyfusion/bootstrap") return yield* new InvalidReplicates({ reason: `format ${f.metadata["format"]}` })
  const get = (name: string) => {
    const v = f.float64.get(name)
    return v === undefined ? Effect.fail(new InvalidReplicates({ reason: `no F64 tensor ${name}` })) : Effect.succeed(v)
  }
  const read: { -readonly [K in keyof Replicates]?: Float64Array } = {}
  for (const name of metricNames) read[name] = yield* get(name)
  return read as Replicates
})
