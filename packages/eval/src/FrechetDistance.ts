/**
 * The Fréchet distance between two Gaussians fitted to feature sets, as ADM's
 * evaluator computes it (FID on pooled features, sFID on spatial ones):
 *
 *   ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2·tr √(Σ₁Σ₂)
 *
 * The reference takes scipy's `sqrtm` of the non-symmetric product Σ₁Σ₂. Here
 * only its trace is needed, and tr √(Σ₁Σ₂) = Σᵢ √λᵢ where λᵢ are the
 * eigenvalues of Σ₁Σ₂; with Σ₁ = L·Lᵀ these are the eigenvalues of the
 * symmetric positive semi-definite Lᵀ·Σ₂·L, which a symmetric eigensolver
 * finds stably. L comes from a pivoted Cholesky that stops at the numerical
 * rank, so singular covariances (fewer samples than dimensions, dead
 * features) are handled exactly rather than through a fallback.
 *
 * The reference's two fallbacks, as they apply here:
 * - "take the real part when the imaginary part is negligible": rounding can
 *   leave eigenvalues slightly below zero, whose square roots are imaginary;
 *   the real part of their root is 0, so they count as 0. An eigenvalue below
 *   −1e-6 × the largest is not rounding (the inputs are not covariances) and
 *   fails, as the reference raises on a large imaginary component.
 * - "add 1e-6·I when the square root is not finite": scipy's `sqrtm` can fail
 *   on a singular product; this method cannot (see above), so the only
 *   non-finite outcome is overflow from huge feature values, which an offset
 *   of 1e-6 does not cure: it fails with a typed error instead.
 */
import { Effect, Schema } from "effect"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as LinearAlgebra from "./LinearAlgebra.ts"
import { InvalidFeatures } from "./Matrix.ts"

export class FrechetDistanceError extends Schema.TaggedError<FrechetDistanceError>()("FrechetDistanceError", {
  reason: Schema.String
}) {
  override get message(): string {
    return `Fréchet distance failed: ${this.reason}`
  }
}

/** Relative size of a negative eigenvalue (or Schur complement) beyond which rounding cannot explain it. */
const NEGATIVE_TOLERANCE = 1e-6

/**
 * tr √(Σ₁Σ₂) for symmetric positive semi-definite D×D covariances. The
 * factored one is the one of lower rank: its null space then drops out of
 * Lᵀ·Σ·L exactly instead of leaving eigenvalues at rounding level, whose
 * square roots (√1e-16 = 1e-8) would be the largest error left.
 */
export const traceSqrtProduct = Effect.fn("FrechetDistance.traceSqrtProduct")(function*(
  sigma1: Float64Array,
  sigma2: Float64Array,
  d: number
) {
  const first = yield* factor(sigma1, d, "first")
  const second = first.rank < d ? undefined : yield* factor(sigma2, d, "second")
  const [chol, other] = second !== undefined && second.rank < first.rank ? [second, sigma1] : [first, sigma2]
  if (chol.rank === 0) return 0
  const m = LinearAlgebra.congruence(chol, other, d)
  if (!m.every(Number.isFinite)) {
    return yield* new FrechetDistanceError({ reason: "Lᵀ·Σ·L overflows float64: feature values are too large" })
  }
  const eigenvalues = LinearAlgebra.symmetricEigenvalues(m, chol.rank)
  if (eigenvalues === undefined) {
    return yield* new FrechetDistanceError({ reason: "the eigenvalue iteration did not converge" })
  }
  const largest = eigenvalues[chol.rank - 1]!
  const smallest = eigenvalues[0]!
  if (smallest < -NEGATIVE_TOLERANCE * Math.max(largest, 0)) {
    return yield* new FrechetDistanceError({
      reason: `Σ₁Σ₂ has eigenvalue ${smallest} (largest ${largest}): its square root has an imaginary part that is not rounding; the covariances are not positive semi-definite`
    })
  }
  let trace = 0
  for (const lambda of eigenvalues) trace += Math.sqrt(Math.max(lambda, 0))
  return trace
})

const factor = Effect.fnUntraced(function*(sigma: Float64Array, d: number, which: string) {
  const chol = LinearAlgebra.pivotedCholesky(sigma, d)
  let maxDiagonal = 0
  for (let i = 0; i < d; i++) maxDiagonal = Math.max(maxDiagonal, sigma[i * d + i]!)
  if (chol.remainder < -NEGATIVE_TOLERANCE * maxDiagonal) {
    return yield* new FrechetDistanceError({
      reason: `the ${which} covariance is not positive semi-definite (pivot ${chol.remainder} after rank ${chol.rank})`
    })
  }
  return chol
})

/** FID (or sFID, given spatial statistics) between two feature statistics. */
export const compute = Effect.fn("FrechetDistance.compute")(function*(
  a: FeatureStatistics.FeatureStatistics,
  b: FeatureStatistics.FeatureStatistics
) {
  const d = FeatureStatistics.dimension(a)
  if (FeatureStatistics.dimension(b) !== d) {
    return yield* new InvalidFeatures({
      input: "statistics",
      reason: `dimensions differ: ${d} and ${FeatureStatistics.dimension(b)}`
    })
  }
  let meanTerm = 0
  let traceA = 0
  let traceB = 0
  for (let i = 0; i < d; i++) {
    meanTerm += (a.mean[i]! - b.mean[i]!) ** 2
    traceA += a.covariance[i * d + i]!
    traceB += b.covariance[i * d + i]!
  }
  const cross = yield* traceSqrtProduct(a.covariance, b.covariance, d)
  const fid = meanTerm + traceA + traceB - 2 * cross
  if (!Number.isFinite(fid)) {
    return yield* new FrechetDistanceError({ reason: `the result is ${fid}: feature values are too large for float64` })
  }
  return fid
})
