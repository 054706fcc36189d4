import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as InceptionScore from "./InceptionScore.ts"
import * as Matrix from "./Matrix.ts"

const rows = (values: ReadonlyArray<ReadonlyArray<number>>) =>
  Matrix.make(values.length, values[0]!.length, Float32Array.from(values.flat()))

describe("InceptionScore", () => {
  it.effect("uniform predictions score 1", () =>
    Effect.gen(function*() {
      const p = Matrix.make(30, 10, new Float32Array(300).fill(0.1))
      assert.closeTo(yield* InceptionScore.compute(p, { splitSize: 7 }), 1, 1e-12)
    }))

  it.effect("confident predictions spread evenly over C classes score C", () =>
    Effect.gen(function*() {
      // 40 one-hot rows cycling through 4 classes: every split of 20 holds each class 5 times,
      // so p̄ is uniform and every KL(p ‖ p̄) = log 4.
      const p = Matrix.make(40, 4, Float32Array.from({ length: 160 }, (_, i) => (Math.floor(i / 4) % 4 === i % 4 ? 1 : 0)))
      assert.closeTo(yield* InceptionScore.compute(p, { splitSize: 20 }), 4, 1e-12)
      assert.closeTo(yield* InceptionScore.compute(p), 4, 1e-12)
    }))

  it.effect("a hand-computed split, and the mean over splits with a short last one", () =>
    Effect.gen(function*() {
      // p₁ = (1/2, 1/2), p₂ = (1, 0): p̄ = (3/4, 1/4);
      // KL(p₁ ‖ p̄) = ½·ln(2/3) + ½·ln 2 = ½·ln(4/3), KL(p₂ ‖ p̄) = ln(4/3);
      // mean KL = ¾·ln(4/3), so the split scores (4/3)^¾.
      const pair = [[0.5, 0.5], [1, 0]]
      const hand = (4 / 3) ** 0.75
      assert.closeTo(yield* InceptionScore.compute(rows(pair)), hand, 1e-12)
      // Splits of 2 over [p₁, p₂, p₁, p₂, p₂]: two splits score (4/3)^¾, the last (p₂ alone) scores 1.
      const five = rows([...pair, ...pair, [1, 0]])
      assert.closeTo(yield* InceptionScore.compute(five, { splitSize: 2 }), (2 * hand + 1) / 3, 1e-12)
    }))

  it.effect("rows that are not probabilities and bad split sizes are typed errors", () =>
    Effect.gen(function*() {
      const fails = (m: Matrix.Matrix, options: InceptionScore.Options = {}) =>
        Effect.flip(InceptionScore.compute(m, options)).pipe(Effect.map((e) => e.reason))
      assert.match(yield* fails(rows([[0.5, 0.5], [0.7, 0.7]])), /row 1 sums to 1.39/)
      assert.match(yield* fails(rows([[1.5, -0.5]])), /row 0 has a negative probability -0.5/)
      assert.match(yield* fails(rows([[0.5, 0.5]]), { splitSize: 0 }), /split size must be a positive integer, got 0/)
      assert.match(yield* fails(Matrix.make(0, 3, new Float32Array(0))), /0 rows, at least 1 needed/)
    }))
})
