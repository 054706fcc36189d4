import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, tf } from "@tinyfusion/tensor"
import * as Alignment from "./Alignment.ts"
import * as Distill from "./Distill.ts"

const scalar = (t: tf.Tensor) => t.dataSync()[0]!

describe("distillation losses", () => {
  it.effect("masked loss ignores exactly the elements beyond kσ (hand-built tensors)", () =>
    Effect.gen(function*() {
      // Student: mean 2, population σ = √7 ≈ 2.646; only the 9 lies beyond 2σ (deviation 7).
      const s = tf.tensor3d([[[1, 1, 1, 1], [1, 1, 1, 9]]])
      // Teacher: mean 1, σ = 1; every deviation is 1 < 2σ.
      const t = tf.tensor3d([[[0, 2, 0, 2], [0, 2, 0, 2]]])
      assert.deepStrictEqual(Array.from(Distill.withinSigma(s, 2).dataSync()), [1, 1, 1, 1, 1, 1, 1, 0])
      // Kept elements differ by ±1 → mean square 1; unmasked adds (9 − 2)² = 49 → 56 / 8 = 7.
      assert.closeTo(scalar(Distill.hiddenLoss(s, t, 2)), 1, 1e-6)
      assert.closeTo(scalar(Distill.hiddenLoss(s, t, undefined)), 7, 1e-6)
      // At 4σ ≈ 10.6 nothing is masked.
      assert.closeTo(scalar(Distill.hiddenLoss(s, t, 4)), 7, 1e-6)
      // 0.1σ keeps nothing of the teacher (all its deviations are σ): the loss is 0 over 0 elements.
      assert.strictEqual(scalar(Distill.hiddenLoss(s, t, 0.1)), 0)
      // The mask is per sample: a second sample with its own scale keeps its own elements.
      const two = tf.concat([s, tf.mul(s, 100)])
      assert.deepStrictEqual(Array.from(Distill.withinSigma(two, 2).dataSync()), [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0])
      // Gradient flows only through kept elements: 2(s − t)/count, zero at the masked one.
      const g = tf.grad((x: tf.Tensor) => Distill.hiddenLoss(x, t, 2))(s)
      assert.deepStrictEqual(Array.from(g.dataSync()).map((v) => Math.round(v * 7e4) / 1e4), [2, -2, 2, -2, 2, -2, 2, 0])
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("identical student and teacher give exactly zero for every loss", () =>
    Effect.gen(function*() {
      const x = tf.randomNormal([2, 4, 8], 0, 1, "float32", 3)
      assert.strictEqual(scalar(Distill.outputKd(x, x)), 0)
      assert.strictEqual(scalar(Distill.repLoss([[x, x], [x, x]], 2)), 0)
      assert.strictEqual(scalar(Distill.repLoss([[x, x]], undefined)), 0)
    }).pipe(Effect.provide(Compute.cpu)))

  it("alignment: group ends for N:M decisions, spans for baselines, the fixed mapping", () => {
    // 1:2 on 8 layers keeping 1, 2, 5, 7: each student layer ends its group.
    const g12 = [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert.deepStrictEqual(Alignment.fromDecision([1, 2, 5, 7], 8, g12).map((p) => [p.student, p.teacher]), [[0, 1], [1, 3], [2, 5], [3, 7]])
    // 2:4 on 8 layers keeping 0, 3 | 5, 6: only the group's last kept layer is aligned.
    const g24 = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert.deepStrictEqual(Alignment.fromDecision([0, 3, 5, 6], 8, g24).map((p) => [p.student, p.teacher]), [[1, 3], [3, 7]])
    // 2:3 on 7 layers with trailing layer 6 kept whole.
    assert.deepStrictEqual(Alignment.fromDecision([0, 2, 3, 4, 6], 7, [[0, 1, 2], [3, 4, 5]]).map((p) => [p.student, p.teacher]), [[1, 2], [3, 5], [4, 6]])
    // Baseline decision without groups: a kept layer spans up to the next kept one.
    assert.deepStrictEqual(Alignment.fromDecision([0, 3, 4], 6).map((p) => [p.student, p.teacher]), [[0, 2], [1, 3], [2, 5]])
    assert.deepStrictEqual(Alignment.fixed(4, 8).map((p) => p.teacher), [1, 3, 5, 7])
    assert.throws(() => Alignment.fixed(3, 8), /divisible/)
  })
})
