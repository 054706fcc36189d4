/**
 * Our numbers with their uncertainty, computed from a run's stored outputs
 * only (deterministic: the bootstrap's draws are seeded).
 *
 * A cell has one run per recovery seed (a cell without recovery has one run
 * and no seed). A run's FID-family numbers come with bootstrap replicates
 * (eval's Bootstrap: samples and reference resampled, the same draws for
 * every evaluation of one protocol), so any linear combination of cells'
 * numbers — one cell's value, the difference of two — is estimated the same
 * way:
 *
 *   value   the mean over seeds of the combination's per-seed values y_s
 *   V_boot  the variance over replicates b of the seed-mean of y_{s,b}: the
 *           evaluation's sampling noise, paired (sample i of every cell
 *           starts from the same noise, and the reference is drawn alike),
 *           so noise common to both cells of a difference cancels
 *   V_seed  s²/S, the spread of the per-seed values over S ≥ 2 seeds: what
 *           recovery's randomness adds (every seed samples with the same
 *           noise, so this does not count the sampling noise again)
 *   95%     value ± t(0.975, ν)·√(V_boot + V_seed), ν by Welch–Satterthwaite
 *           (B − 1 degrees of freedom for V_boot, S − 1 for V_seed)
 *
 * Numbers without replicates (a calibration loss, a confidence: fixed
 * functions of a fixed calibration set and run) are exact for one run; a
 * FID-family number of one run without replicates has an unknown
 * uncertainty (an infinite interval).
 * Sampling speed is a property of a shape measured in interleaved rounds
 * (speed.ts): its interval is the median's order-statistic interval, and a
 * speed-up is the median of per-round ratios.
 */
import { Interval, Metrics, Throughput } from "@tinyfusion/eval"
import type * as Paper from "./paper.ts"

/** The numbers of the paper's tables that our runs produce. */
export type Metric = Exclude<keyof Paper.Metrics, "diverged" | "parameters">

/** The FID-family numbers, the evaluation's scores (eval Metrics.Scores): bootstrapped. */
export type SampledMetric = keyof Metrics.Results
export const sampledMetrics = Object.keys(Metrics.Scores.fields) as ReadonlyArray<SampledMetric>

export const isSampled = (m: Metric): m is SampledMetric => (sampledMetrics as ReadonlyArray<string>).includes(m)

/** One run of a cell: one recovery seed, or the cell's only run when it recovers nothing. */
export interface Run {
  readonly seed?: number
  readonly metrics: Paper.Metrics
  /** Bootstrap replicates of the sampled numbers, in eval's Bootstrap draw order. */
  readonly replicates?: Partial<Record<SampledMetric, ArrayLike<number>>>
}

/** The sampling speed of a cell's shape: it/s in each interleaved round of the run's one measurement. */
export interface Speed {
  readonly itPerS: ReadonlyArray<number>
  /** The shape's parameters. */
  readonly parameters: number
}

export interface CellResult {
  readonly runs: ReadonlyArray<Run>
  readonly speed?: Speed
}

export type Results = ReadonlyMap<string, CellResult>

/** A number a cell does not have (not run, failed, or not measured). */
export class Missing extends Error {
  readonly cell: string
  readonly what: string
  constructor(cell: string, what: string) {
    super(`no ${what} for ${cell}`)
    this.cell = cell
    this.what = what
  }
}

export interface Estimate extends Interval.Interval {
  /** Runs (seeds) behind it. */
  readonly seeds: number
  /** Bootstrap replicates behind it (0: none). */
  readonly replicates: number
}

export interface Term {
  readonly cell: string
  readonly weight: number
}

const cellOf = (results: Results, cell: string, what: string): CellResult => {
  const r = results.get(cell)
  if (r === undefined || r.runs.length === 0) throw new Missing(cell, what)
  return r
}

/** Whether any run of the cell diverged (its sampled numbers are then the worst possible). */
export const diverged = (results: Results, cell: string): boolean => cellOf(results, cell, "result").runs.some((r) => r.metrics.diverged === true)

/** The runs of each term's cell at each seed the seed-dependent cells share (a cell without seeds joins every one). */
const alignedRuns = (results: Results, terms: ReadonlyArray<Term>, metric: Metric): ReadonlyArray<ReadonlyArray<Run>> => {
  const cells = terms.map((t) => cellOf(results, t.cell, metric))
  const seeded = cells.filter((c) => c.runs.some((r) => r.seed !== undefined))
  if (seeded.length === 0) return [cells.map((c) => c.runs[0]!)]
  const common = seeded[0]!.runs.map((r) => r.seed!).filter((s) => seeded.every((c) => c.runs.some((r) => r.seed === s)))
  if (common.length === 0) throw new Missing(terms.map((t) => t.cell).join(", "), "a recovery seed in common")
  return common.map((seed) => cells.map((c) => c.runs.find((r) => r.seed === seed) ?? c.runs[0]!))
}

/**
 * Σ weight·metric over the terms' cells with its interval at `level` (see
 * the module's comment); a missing cell or number throws Missing. Diverged
 * runs have no sampled numbers: callers decide what divergence means.
 */
export const combination = (results: Results, terms: ReadonlyArray<Term>, metric: Metric, level = 0.95): Estimate => {
  const seeds = alignedRuns(results, terms, metric)
  const values = seeds.map((runs) =>
    runs.reduce((sum, run, i) => {
      const v = run.metrics[metric]
      if (v === undefined || Number.isNaN(v)) throw new Missing(terms[i]!.cell, metric)
      return sum + terms[i]!.weight * v
    }, 0)
  )
  const s = values.length
  const value = values.reduce((a, b) => a + b, 0) / s
  // Replicates of a sampled number: as many as every run has (a run without them has none).
  const b = isSampled(metric) ? Math.min(...seeds.flatMap((runs) => runs.map((run) => run.replicates?.[metric]?.length ?? 0))) : 0
  const replicates = b >= 2 ? b : 0
  let vBoot = 0
  if (replicates > 0) {
    const means = new Float64Array(replicates)
    for (const runs of seeds) {
      for (let k = 0; k < replicates; k++) {
        let y = 0
        runs.forEach((run, i) => (y += terms[i]!.weight * run.replicates![metric as SampledMetric]![k]!))
        means[k] = means[k]! + y / s
      }
    }
    vBoot = Interval.variance(means)
  }
  // One run of a sampled number without replicates: its uncertainty is unknown, not zero.
  if (isSampled(metric) && replicates === 0 && s === 1) return { value, lo: -Infinity, hi: Infinity, level, seeds: 1, replicates: 0 }
  const vSeed = s >= 2 ? Interval.variance(values) / s : 0
  const total = vBoot + vSeed
  const df = total === 0 ? Infinity : (total * total) / ((s >= 2 ? (vSeed * vSeed) / (s - 1) : 0) + (replicates > 0 ? (vBoot * vBoot) / (replicates - 1) : 0))
  return { ...Interval.symmetric(value, Math.sqrt(total), df, level), seeds: s, replicates }
}

/** One cell's number with its interval. */
export const estimate = (results: Results, cell: string, metric: Metric, level = 0.95): Estimate =>
  combination(results, [{ cell, weight: 1 }], metric, level)

/** The difference a − b of two cells' numbers, paired by seed and by bootstrap draw. */
export const difference = (results: Results, a: string, b: string, metric: Metric, level = 0.95): Estimate =>
  combination(results, [{ cell: a, weight: 1 }, { cell: b, weight: -1 }], metric, level)

const speedOf = (results: Results, cell: string): Speed => {
  const s = cellOf(results, cell, "itPerS").speed
  if (s === undefined || s.itPerS.length === 0) throw new Missing(cell, "itPerS")
  return s
}

/** A cell's sampling it/s: the median over rounds with its order-statistic interval. */
export const speed = (results: Results, cell: string, level = 0.95): Interval.Interval => Interval.medianInterval(speedOf(results, cell).itPerS, level)

/** The speed-up of one cell's shape over another's: the median of their per-round ratios. */
export const speedup = (results: Results, fast: string, base: string, level = 0.95): Interval.Interval => {
  const f = speedOf(results, fast).itPerS
  const b = speedOf(results, base).itPerS
  if (f.length !== b.length) throw new Missing(`${fast}, ${base}`, "it/s from the same rounds")
  return Throughput.speedup(f, b, level)
}

const metrics: ReadonlyArray<Metric> = ["calibrationLoss", "initDistillLoss", ...sampledMetrics, "itPerS", "confidence"]

/** Every number a cell has, with its interval (a diverged cell's sampled numbers left out). */
export const summary = (results: Results, cell: string): ReadonlyArray<readonly [Metric, Interval.Interval]> =>
  metrics.flatMap((m): ReadonlyArray<readonly [Metric, Interval.Interval]> => {
    try {
      if (m === "itPerS") return [[m, speed(results, cell)]]
      if (isSampled(m) && diverged(results, cell)) return []
      return [[m, estimate(results, cell, m)]]
    } catch (e) {
      if (e instanceof Missing) return []
      throw e
    }
  })
