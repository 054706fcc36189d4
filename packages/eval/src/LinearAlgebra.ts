/**
 * Dense symmetric linear algebra in float64 for the Fréchet distance:
 * pivoted Cholesky of a positive semi-definite matrix (LAPACK dpstrf's
 * algorithm), the congruence Lᵀ·B·L, and the eigenvalues of a symmetric
 * matrix (Householder tridiagonalisation, then implicit QL with Wilkinson
 * shifts). Matrices are row-major Float64Arrays of n×n values. All loops run
 * along rows so that n = 2048 stays cache-friendly.
 */

export interface PivotedCholesky {
  /** Numerical rank r: the number of pivots above the tolerance. */
  readonly rank: number
  /** n×r lower-trapezoidal factor, row i belonging to original index perm[i]. */
  readonly factor: Float64Array
  readonly perm: Int32Array
  /** Smallest diagonal entry left in the Schur complement when the factorisation stopped (≤ tolerance). */
  readonly remainder: number
}

/**
 * A = P·L·Lᵀ·Pᵀ for a symmetric positive semi-definite A, choosing the largest
 * remaining diagonal as the pivot at each step and stopping when it falls to
 * n·ε·max(diag A) (dpstrf's default tolerance): a singular A gives its rank
 * instead of a failure, which is what lets the Fréchet distance handle
 * rank-deficient covariances exactly.
 */
export function pivotedCholesky(a: Float64Array, n: number): PivotedCholesky {
  const perm = Int32Array.from({ length: n }, (_, i) => i)
  const diag = new Float64Array(n)
  let maxDiag = 0
  for (let i = 0; i < n; i++) {
    diag[i] = a[i * n + i]!
    maxDiag = Math.max(maxDiag, diag[i]!)
  }
  const tolerance = n * Number.EPSILON * maxDiag
  // Row i has room for n columns; only the first r are used.
  const l = new Float64Array(n * n)
  let rank = 0
  for (let k = 0; k < n; k++) {
    let p = k
    for (let i = k + 1; i < n; i++) if (diag[i]! > diag[p]!) p = i
    if (!(diag[p]! > tolerance)) break
    if (p !== k) {
      swap(perm, k, p)
      swap(diag, k, p)
      for (let j = 0; j < k; j++) swap(l, k * n + j, p * n + j)
    }
    const pivot = Math.sqrt(diag[k]!)
    l[k * n + k] = pivot
    const rowK = perm[k]! * n
    for (let i = k + 1; i < n; i++) {
      const v = (a[rowK + perm[i]!]! - dot(l, i * n, l, k * n, k)) / pivot
      l[i * n + k] = v
      diag[i] = diag[i]! - v * v
    }
    rank = k + 1
  }
  let remainder = Infinity
  for (let i = rank; i < n; i++) remainder = Math.min(remainder, diag[i]!)
  const factor = new Float64Array(n * rank)
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < Math.min(i + 1, rank); j++) factor[i * rank + j] = l[i * n + j]!
  }
  return { rank, factor, perm, remainder: rank === n ? 0 : remainder }
}

/**
 * Lᵀ·(Pᵀ·B·P)·L for the factor of `pivotedCholesky` (n×r) and a symmetric n×n B:
 * an r×r symmetric matrix with the same nonzero eigenvalues as A·B. Both
 * products are dot products of contiguous rows (of Lᵀ, of the permuted B, of
 * (B·L)ᵀ), computed by `productNT`; row t of Lᵀ is zero before column t, which
 * lets each dot product start at the block's first nonzero column.
 */
export function congruence(chol: PivotedCholesky, b: Float64Array, n: number): Float64Array {
  const { rank: r, factor: l, perm } = chol
  const lt = new Float64Array(r * n)
  for (let k = 0; k < n; k++) for (let j = 0; j < Math.min(k + 1, r); j++) lt[j * n + k] = l[k * r + j]!
  const bp = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    const from = perm[i]! * n
    for (let k = 0; k < n; k++) bp[i * n + k] = b[from + perm[k]!]!
  }
  // (B·L)ᵀ[j][i] = Σ_k Bp[i][k]·Lᵀ[j][k].
  const blt = new Float64Array(r * n)
  productNT({ a: bp, rows: n, leadingZeros: false }, { a: lt, rows: r, leadingZeros: true }, n, blt, 1, n, false)
  // M[x][y] = Σ_k Lᵀ[x][k]·(B·L)ᵀ[y][k], upper triangle, mirrored.
  const m = new Float64Array(r * r)
  productNT({ a: lt, rows: r, leadingZeros: true }, { a: blt, rows: r, leadingZeros: false }, n, m, r, 1, true)
  for (let x = 0; x < r; x++) for (let y = x + 1; y < r; y++) m[y * r + x] = m[x * r + y]!
  return m
}

interface Rows {
  readonly a: Float64Array
  readonly rows: number
  /** Row t is zero in columns before t. */
  readonly leadingZeros: boolean
}

/** Rows of `right` per cache block (16 rows of 2048 doubles: 256 KiB). */
const RIGHT_BLOCK = 16

/**
 * out[p·pStride + q·qStride] = Σ_k left[p][k]·right[q][k] over rows of length
 * n (C = A·Bᵀ), skipping (p, q) with p > q when `upper`. A block of rows of
 * `right` stays in cache while every row of `left` passes it, four by four
 * against four: each value loaded feeds four products, where a plain dot
 * product would be bound by memory.
 */
function productNT(left: Rows, right: Rows, n: number, out: Float64Array, pStride: number, qStride: number, upper: boolean): void {
  const A = left.a
  const B = right.a
  for (let q0 = 0; q0 < right.rows; q0 += RIGHT_BLOCK) {
    const q1 = Math.min(right.rows, q0 + RIGHT_BLOCK)
    const pEnd = upper ? Math.min(left.rows, q1) : left.rows
    for (let p = 0; p < pEnd; p += 4) {
      // Rows past the end repeat the last one; their sums are not stored.
      const pa = Math.min(p, left.rows - 1) * n
      const pb = Math.min(p + 1, left.rows - 1) * n
      const pc = Math.min(p + 2, left.rows - 1) * n
      const pd = Math.min(p + 3, left.rows - 1) * n
      for (let q = q0; q < q1; q += 4) {
        if (upper && q + 3 < p) continue
        const qa = Math.min(q, q1 - 1) * n
        const qb = Math.min(q + 1, q1 - 1) * n
        const qc = Math.min(q + 2, q1 - 1) * n
        const qd = Math.min(q + 3, q1 - 1) * n
        const from = Math.max(left.leadingZeros ? p : 0, right.leadingZeros ? q : 0)
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0
        let s10 = 0, s11 = 0, s12 = 0, s13 = 0
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0
        let s30 = 0, s31 = 0, s32 = 0, s33 = 0
        for (let k = from; k < n; k++) {
          const a0 = A[pa + k]!
          const a1 = A[pb + k]!
          const a2 = A[pc + k]!
          const a3 = A[pd + k]!
          const b0 = B[qa + k]!
          const b1 = B[qb + k]!
          const b2 = B[qc + k]!
          const b3 = B[qd + k]!
          s00 += a0 * b0
          s01 += a0 * b1
          s02 += a0 * b2
          s03 += a0 * b3
          s10 += a1 * b0
          s11 += a1 * b1
          s12 += a1 * b2
          s13 += a1 * b3
          s20 += a2 * b0
          s21 += a2 * b1
          s22 += a2 * b2
          s23 += a2 * b3
          s30 += a3 * b0
          s31 += a3 * b1
          s32 += a3 * b2
          s33 += a3 * b3
        }
        const sums = [s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33]
        for (let i = 0; i < 4 && p + i < pEnd; i++) {
          for (let j = 0; j < 4 && q + j < q1; j++) out[(p + i) * pStride + (q + j) * qStride] = sums[i * 4 + j]!
        }
      }
    }
  }
}

/** Σ x[xs + i]·y[ys + i] for i < length, four partial sums for instruction-level parallelism. */
function dot(x: Float64Array, xs: number, y: Float64Array, ys: number, length: number): number {
  let s0 = 0
  let s1 = 0
  let s2 = 0
  let s3 = 0
  let i = 0
  for (; i + 3 < length; i += 4) {
    s0 += x[xs + i]! * y[ys + i]!
    s1 += x[xs + i + 1]! * y[ys + i + 1]!
    s2 += x[xs + i + 2]! * y[ys + i + 2]!
    s3 += x[xs + i + 3]! * y[ys + i + 3]!
  }
  for (; i < length; i++) s0 += x[xs + i]! * y[ys + i]!
  return s0 + s1 + s2 + s3
}

/**
 * The eigenvalues of a symmetric n×n matrix (only its lower triangle is
 * read; the input is not modified), in ascending order, or undefined when the
 * QL iteration needs more than 50 iterations for some eigenvalue.
 */
export function symmetricEigenvalues(input: Float64Array, n: number): Float64Array | undefined {
  const a = Float64Array.from(input)
  const d = new Float64Array(n)
  const e = new Float64Array(n)
  tridiagonalise(a, n, d, e)
  return tridiagonalQl(d, e, n) ? d.sort() : undefined
}

/**
 * Householder reduction to tridiagonal form (Golub & Van Loan, Alg. 8.3.1),
 * working from the last row up so the active block is always the leading one
 * and every access runs along a row of the lower triangle. On return d holds
 * the diagonal and e[i] the entry below d[i−1] (e[0] = 0).
 */
function tridiagonalise(a: Float64Array, n: number, d: Float64Array, e: Float64Array): void {
  const v = new Float64Array(n)
  const p = new Float64Array(n)
  for (let i = n - 1; i >= 2; i--) {
    // Annihilate a[i][0..i−2] with a reflector acting on indices 0..i−1.
    const ri = i * n
    let scale = 0
    for (let k = 0; k < i; k++) scale += Math.abs(a[ri + k]!)
    if (scale === 0) {
      e[i] = 0
      continue
    }
    let sigma = 0
    for (let k = 0; k < i; k++) {
      v[k] = a[ri + k]! / scale
      sigma += v[k]! * v[k]!
    }
    const f = v[i - 1]!
    const alpha = f >= 0 ? -Math.sqrt(sigma) : Math.sqrt(sigma)
    e[i] = scale * alpha
    v[i - 1] = f - alpha
    // H = I − v·vᵀ/h with h = vᵀv/2.
    const h = sigma - f * alpha
    // p = A·v/h over the leading i×i block, from its lower triangle.
    p.fill(0, 0, i)
    for (let j = 0; j < i; j++) {
      const rj = j * n
      const vj = v[j]!
      let s = a[rj + j]! * vj
      for (let k = 0; k < j; k++) {
        const ajk = a[rj + k]!
        s += ajk * v[k]!
        p[k] = p[k]! + ajk * vj
      }
      p[j] = p[j]! + s
    }
    let kappa = 0
    for (let k = 0; k < i; k++) {
      p[k] = p[k]! / h
      kappa += v[k]! * p[k]!
    }
    kappa /= 2 * h
    // q = p − κ·v; A ← A − v·qᵀ − q·vᵀ.
    for (let k = 0; k < i; k++) p[k] = p[k]! - kappa * v[k]!
    for (let j = 0; j < i; j++) {
      const rj = j * n
      const vj = v[j]!
      const qj = p[j]!
      for (let k = 0; k <= j; k++) a[rj + k] = a[rj + k]! - vj * p[k]! - qj * v[k]!
    }
  }
  if (n >= 2) e[1] = a[n]!
  e[0] = 0
  for (let i = 0; i < n; i++) d[i] = a[i * n + i]!
}

/**
 * Eigenvalues of the symmetric tridiagonal matrix (d, e) by the implicit QL
 * method with Wilkinson shifts (Numerical Recipes' tqli, eigenvalues only).
 * Overwrites d with the eigenvalues; false when an eigenvalue needs more than
 * 50 iterations.
 */
function tridiagonalQl(d: Float64Array, e: Float64Array, n: number): boolean {
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!
  if (n > 0) e[n - 1] = 0
  for (let l = 0; l < n; l++) {
    let iterations = 0
    for (;;) {
      let m = l
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]!) + Math.abs(d[m + 1]!)
        if (Math.abs(e[m]!) <= Number.EPSILON * dd) break
      }
      if (m === l) break
      if (++iterations > 50) return false
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!)
      let r = Math.hypot(g, 1)
      g = d[m]! - d[l]! + e[l]! / (g + (g >= 0 ? r : -r))
      let s = 1
      let c = 1
      let p = 0
      let i = m - 1
      let deflated = false
      for (; i >= l; i--) {
        const f = s * e[i]!
        const b = c * e[i]!
        r = Math.hypot(f, g)
        e[i + 1] = r
        if (r === 0) {
          d[i + 1] = d[i + 1]! - p
          e[m] = 0
          deflated = true
          break
        }
        s = f / r
        c = g / r
        g = d[i + 1]! - p
        r = (d[i]! - g) * s + 2 * c * b
        p = s * r
        d[i + 1] = g + p
        g = c * r - b
      }
      if (deflated) continue
      d[l] = d[l]! - p
      e[l] = g
      e[m] = 0
    }
  }
  return true
}

function swap(x: Float64Array | Int32Array, i: number, j: number): void {
  const t = x[i]!
  x[i] = x[j]!
  x[j] = t
}
