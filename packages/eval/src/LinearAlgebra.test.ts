import { assert, describe, it } from "@effect/vitest"
import { Rng } from "@tinyfusion/tensor"
import * as LinearAlgebra from "./LinearAlgebra.ts"

/** A random symmetric n×n matrix with N(0, 1) entries. */
const randomSymmetric = (n: number, step: number): Float64Array => {
  const z = Rng.normal(Rng.stream(0, "symmetric"), step, n * n)
  const a = new Float64Array(n * n)
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = z[i * n + j]!
  return a
}

/** G·Gᵀ for a random n×k G: positive semi-definite of rank min(n, k). */
const randomGram = (n: number, k: number, step: number): Float64Array => {
  const g = Rng.normal(Rng.stream(0, "gram"), step, n * k)
  const a = new Float64Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let t = 0; t < k; t++) s += g[i * k + t]! * g[j * k + t]!
      a[i * n + j] = s
    }
  }
  return a
}

describe("LinearAlgebra", () => {
  it("eigenvalues of the second-difference matrix: 2 − 2·cos(kπ/(n+1))", () => {
    const n = 12
    const a = new Float64Array(n * n)
    for (let i = 0; i < n; i++) {
      a[i * n + i] = 2
      if (i > 0) a[i * n + i - 1] = a[(i - 1) * n + i] = -1
    }
    const eigenvalues = LinearAlgebra.symmetricEigenvalues(a, n)!
    for (let k = 1; k <= n; k++) assert.closeTo(eigenvalues[k - 1]!, 2 - 2 * Math.cos((k * Math.PI) / (n + 1)), 1e-13)
  })

  it("a diagonal matrix (no reflection needed) and a 2×2 block: eigenvalues exact", () => {
    assert.deepStrictEqual([...LinearAlgebra.symmetricEigenvalues(Float64Array.from([3, 0, 0, 0, -1, 0, 0, 0, 2]), 3)!], [-1, 2, 3])
    // [[2, 1], [1, 2]] beside a zero row and column: eigenvalues 0, 1, 3.
    const blocks = Float64Array.from([0, 0, 0, 0, 2, 1, 0, 1, 2])
    const eigenvalues = LinearAlgebra.symmetricEigenvalues(blocks, 3)!
    for (const [i, expected] of [0, 1, 3].entries()) assert.closeTo(eigenvalues[i]!, expected, 1e-15)
  })

  it("eigenvalues of a dense symmetric matrix keep its trace and Frobenius norm, in ascending order", () => {
    for (const n of [1, 2, 5, 40]) {
      const a = randomSymmetric(n, n)
      const eigenvalues = LinearAlgebra.symmetricEigenvalues(a, n)!
      let trace = 0
      let frobenius = 0
      for (let i = 0; i < n; i++) {
        trace += a[i * n + i]!
        for (let j = 0; j < n; j++) frobenius += a[i * n + j]! ** 2
      }
      assert.closeTo(eigenvalues.reduce((s, x) => s + x, 0), trace, 1e-10 * n)
      assert.closeTo(eigenvalues.reduce((s, x) => s + x * x, 0), frobenius, 1e-10 * frobenius)
      for (let i = 1; i < n; i++) assert.isTrue(eigenvalues[i]! >= eigenvalues[i - 1]!)
    }
  })

  it("eigenvalues of Q·diag(λ)·Qᵀ are λ for a Householder Q", () => {
    const n = 30
    const lambda = Array.from({ length: n }, (_, i) => (i - 10) * 0.75)
    const u = Rng.normal(Rng.stream(1, "householder"), 0, n)
    const norm2 = u.reduce((s, x) => s + x * x, 0)
    // Q = I − 2uuᵀ/‖u‖², so (QΛQ)_ij = Σ_k q_ik λ_k q_jk.
    const q = (i: number, j: number) => (i === j ? 1 : 0) - (2 * u[i]! * u[j]!) / norm2
    const a = new Float64Array(n * n)
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0
        for (let k = 0; k < n; k++) s += q(i, k) * lambda[k]! * q(j, k)
        a[i * n + j] = s
      }
    }
    const eigenvalues = LinearAlgebra.symmetricEigenvalues(a, n)!
    for (let i = 0; i < n; i++) assert.closeTo(eigenvalues[i]!, lambda[i]!, 1e-12)
  })

  it("pivoted Cholesky reconstructs a positive definite matrix and finds the rank of a singular one", () => {
    for (const [n, k] of [[8, 20], [8, 3], [6, 1]] as const) {
      const a = randomGram(n, k, n + k)
      const chol = LinearAlgebra.pivotedCholesky(a, n)
      assert.strictEqual(chol.rank, Math.min(n, k))
      const r = chol.rank
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0
          for (let t = 0; t < r; t++) s += chol.factor[i * r + t]! * chol.factor[j * r + t]!
          assert.closeTo(s, a[chol.perm[i]! * n + chol.perm[j]!]!, 1e-10)
        }
      }
    }
    // The zero matrix has rank 0 and no factor.
    assert.strictEqual(LinearAlgebra.pivotedCholesky(new Float64Array(9), 3).rank, 0)
  })

  it("Lᵀ·B·L has the eigenvalues of A·B", () => {
    // A = diag(4, 1, 0), B = [[2, 1, 0], [1, 2, 0], [0, 0, 5]]: A·B = [[8, 4, 0], [1, 2, 0], [0, 0, 0]],
    // whose nonzero eigenvalues solve λ² − 10λ + 12 = 0: λ = 5 ± √13.
    const a = Float64Array.from([4, 0, 0, 0, 1, 0, 0, 0, 0])
    const b = Float64Array.from([2, 1, 0, 1, 2, 0, 0, 0, 5])
    const chol = LinearAlgebra.pivotedCholesky(a, 3)
    assert.strictEqual(chol.rank, 2)
    const eigenvalues = LinearAlgebra.symmetricEigenvalues(LinearAlgebra.congruence(chol, b, 3), 2)!
    assert.closeTo(eigenvalues[0]!, 5 - Math.sqrt(13), 1e-14)
    assert.closeTo(eigenvalues[1]!, 5 + Math.sqrt(13), 1e-14)
  })
})
