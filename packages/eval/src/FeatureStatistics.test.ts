import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { HostTensor, Rng, Safetensors } from "@tinyfusion/tensor"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as Matrix from "./Matrix.ts"

/** Two-pass mean and covariance (N − 1) in float64: the textbook definition. */
const twoPass = (m: Matrix.Matrix) => {
  const { rows: n, cols: d, data } = m
  const mean = new Float64Array(d)
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mean[j] = mean[j]! + data[r * d + j]! / n
  const cov = new Float64Array(d * d)
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) cov[i * d + j] = cov[i * d + j]! + ((data[r * d + i]! - mean[i]!) * (data[r * d + j]! - mean[j]!)) / (n - 1)
    }
  }
  return { mean, cov }
}

const reason = <A, E extends { readonly reason: string }>(e: Effect.Effect<A, E>) => Effect.flip(e).pipe(Effect.map((x) => x.reason))

describe("FeatureStatistics", () => {
  it.effect("mean and N − 1 covariance of a hand-computed example", () =>
    Effect.gen(function*() {
      // Rows (1, 2), (3, 6), (5, 4): mean (3, 4); centred (−2, −2), (0, 2), (2, 0);
      // scatter [[8, 4], [4, 8]], divided by N − 1 = 2.
      const s = yield* FeatureStatistics.fromMatrix("x", Matrix.make(3, 2, Float32Array.from([1, 2, 3, 6, 5, 4])))
      assert.strictEqual(s.count, 3)
      assert.deepStrictEqual([...s.mean], [3, 4])
      assert.deepStrictEqual([...s.covariance], [4, 2, 2, 4])
    }))

  it.effect("streaming over uneven batches equals the two-pass statistics, even with a large mean", () =>
    Effect.gen(function*() {
      const n = 103
      const d = 37
      const z = Rng.normal(Rng.stream(0, "features"), 0, n * d)
      // A mean of 1e4 against unit spread: Σxxᵀ − Nμμᵀ would lose about 8 digits here.
      const data = Float64Array.from(z, (x, i) => 1e4 + (i % d) + x)
      const m = Matrix.make(n, d, data)
      const expected = twoPass(m)
      const acc = FeatureStatistics.accumulator(d)
      let at = 0
      for (const b of [1, 7, 0, 50, 45]) {
        yield* acc.add(Matrix.slice(m, at, at + b))
        at += b
      }
      assert.strictEqual(acc.count, n)
      const s = yield* acc.result
      for (let j = 0; j < d; j++) assert.closeTo(s.mean[j]!, expected.mean[j]!, 1e-9)
      for (let k = 0; k < d * d; k++) assert.closeTo(s.covariance[k]!, expected.cov[k]!, 1e-9)
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) assert.strictEqual(s.covariance[i * d + j], s.covariance[j * d + i])
    }))

  it.effect("bad batches are typed errors that name the input", () =>
    Effect.gen(function*() {
      const acc = FeatureStatistics.accumulator(3, "samples.pooled")
      const wrong = yield* Effect.flip(acc.add(Matrix.make(1, 2, new Float32Array(2))))
      assert.strictEqual(wrong._tag, "InvalidFeatures")
      assert.strictEqual(wrong.input, "samples.pooled")
      assert.match(wrong.reason, /2 columns, expected 3/)
      assert.match(yield* reason(acc.add(Matrix.make(2, 3, Float32Array.from([0, 1, 2, 3, NaN, 5])))), /row 1, column 1 is not finite/)
      yield* acc.add(Matrix.make(1, 3, new Float32Array(3)))
      assert.match(yield* reason(acc.result), /1 feature vectors; a covariance needs at least 2/)
    }))

  it.effect("encode/decode round trip is exact; bad files are rejected with a reason", () =>
    Effect.gen(function*() {
      const z = Rng.normal(Rng.stream(1, "features"), 0, 40)
      const s = yield* FeatureStatistics.fromMatrix("x", Matrix.make(10, 4, Float64Array.from(z, (x) => x / 3)))
      const back = yield* FeatureStatistics.decode(FeatureStatistics.encode(s))
      assert.strictEqual(back.count, 10)
      assert.deepStrictEqual([...back.mean], [...s.mean])
      assert.deepStrictEqual([...back.covariance], [...s.covariance])

      const file = (tensors: ReadonlyArray<readonly [string, Safetensors.Float64Tensor | HostTensor.HostTensor]>, count = "10") =>
        Safetensors.encode(tensors, { metadata: { format: "tinyfusion/feature-statistics", count } })
      const mean = { dtype: "float64", shape: [2], data: new Float64Array(2) } as const
      const cov = (values: ReadonlyArray<number>) => ({ dtype: "float64", shape: [2, 2], data: Float64Array.from(values) }) as const
      const bytes = FeatureStatistics.encode(s)
      assert.match(yield* reason(FeatureStatistics.decode(bytes.subarray(0, bytes.length - 8))), /truncated/)
      assert.match(yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", cov([1, 0, 0, 1])]], "1"))), /metadata/)
      assert.match(
        yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", HostTensor.float32([2, 2], new Float32Array(4))]]))),
        /needs F64 tensors "mean" and "covariance", found covariance \(F32\), mean \(F64\)/
      )
      assert.match(
        yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", { dtype: "float64", shape: [4], data: new Float64Array(4) }]]))),
        /covariance has shape \[4\], the mean has 2 values/
      )
      assert.match(yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", cov([1, 0.5, 0, 1])]]))), /not symmetric at \(1, 0\)/)
      assert.match(yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", cov([1, 0, 0, -1])]]))), /diagonal 1 is negative/)
      assert.match(yield* reason(FeatureStatistics.decode(file([["mean", mean], ["covariance", cov([1, 0, 0, Infinity])]]))), /non-finite/)
    }))
})
