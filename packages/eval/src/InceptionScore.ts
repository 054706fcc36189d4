/**
 * Inception Score as ADM's evaluator computes it: the rows (class
 * probabilities of each sample) are cut into consecutive splits of
 * `splitSize` (5,000 at paper scale; a shorter last split counts as one), and
 * each split scores exp(mean over its rows of KL(p ‖ p̄)), p̄ being the split's
 * mean prediction; the result is the mean of the split scores.
 *
 * One difference: the reference evaluates p·(log p − log p̄) literally, which
 * is NaN for a probability of exactly 0; here 0·log 0 counts as 0 (its
 * limit). Softmax outputs are never exactly 0 in float32 unless they
 * underflow, so the two agree wherever the reference gives a number.
 */
import { Effect } from "effect"
import * as Matrix from "./Matrix.ts"

export interface Options {
  /** Rows per split (default 5,000). */
  readonly splitSize?: number
}

/** How far a row of probabilities may sum from 1 (float32 softmax sums are within ~1e-6). */
const SUM_TOLERANCE = 1e-3

export const compute = Effect.fn("InceptionScore.compute")(function*(probabilities: Matrix.Matrix, options: Options = {}) {
  const input = "probabilities"
  const splitSize = options.splitSize ?? 5000
  if (!Number.isSafeInteger(splitSize) || splitSize < 1) {
    return yield* new Matrix.InvalidFeatures({ input, reason: `split size must be a positive integer, got ${splitSize}` })
  }
  const { rows: n, cols: c, data: p } = yield* Matrix.validate(input, probabilities, { minRows: 1 })
  for (let r = 0; r < n; r++) {
    let sum = 0
    for (let j = 0; j < c; j++) {
      const v = p[r * c + j]!
      if (v < 0) return yield* new Matrix.InvalidFeatures({ input, reason: `row ${r} has a negative probability ${v}` })
      sum += v
    }
    if (Math.abs(sum - 1) > SUM_TOLERANCE) {
      return yield* new Matrix.InvalidFeatures({ input, reason: `row ${r} sums to ${sum}, not 1 (softmax outputs expected)` })
    }
  }
  const mean = new Float64Array(c)
  const scores: Array<number> = []
  for (let start = 0; start < n; start += splitSize) {
    const end = Math.min(n, start + splitSize)
    mean.fill(0)
    for (let r = start; r < end; r++) for (let j = 0; j < c; j++) mean[j] = mean[j]! + p[r * c + j]!
    for (let j = 0; j < c; j++) mean[j] = mean[j]! / (end - start)
    let kl = 0
    for (let r = start; r < end; r++) {
      for (let j = 0; j < c; j++) {
        const v = p[r * c + j]!
        if (v > 0) kl += v * (Math.log(v) - Math.log(mean[j]!))
      }
    }
    scores.push(Math.exp(kl / (end - start)))
  }
  return scores.reduce((s, x) => s + x, 0) / scores.length
})
