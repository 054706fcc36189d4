import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng, tf } from "@tinyfusion/tensor"
import * as Gumbel from "./Gumbel.ts"
import * as Scheme from "./Scheme.ts"

describe("Gumbel straight-through sampling", () => {
  it.effect("forward is one-hot, backward is the softmax gradient (analytic)", () =>
    Effect.gen(function*() {
      const logits = tf.tensor2d([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]])
      const noise = Rng.gumbelTensor(Rng.stream(0, "test/gumbel"), 0, [4, 2, 3]) as tf.Tensor3D
      const w = tf.tensor3d(Rng.normal(Rng.stream(0, "test/w"), 0, 24), [4, 2, 3])
      const [tau, scale] = [0.7, 2]
      const hard = Gumbel.sample(logits, noise, tau, scale)
      const values = hard.arraySync()
      for (const sample of values) for (const row of sample) {
        assert.deepStrictEqual([...row].sort(), [0, 0, 1])
      }
      const grad = tf.grad((l: tf.Tensor) => tf.sum(tf.mul(Gumbel.sample(l as tf.Tensor2D, noise, tau, scale), w)))(logits).arraySync() as Array<Array<number>>
      // Analytic: s = softmax((scale·l + g)/τ); ∂/∂l_i Σ w·s = (scale/τ)·Σ_b s_i (w_i − Σ_j s_j w_j).
      const g = noise.arraySync()
      const ws = w.arraySync()
      const l = logits.arraySync()
      for (let k = 0; k < 2; k++) {
        for (let i = 0; i < 3; i++) {
          let expected = 0
          for (let b = 0; b < 4; b++) {
            const z = l[k]!.map((v, j) => (scale * v + g[b]![k]![j]!) / tau)
            const mx = Math.max(...z)
            const e = z.map((v) => Math.exp(v - mx))
            const s = e.map((v) => v / e.reduce((a, c) => a + c, 0))
            const mean = s.reduce((a, sj, j) => a + sj * ws[b]![k]![j]!, 0)
            expected += (scale / tau) * s[i]! * (ws[b]![k]![i]! - mean)
          }
          assert.closeTo(grad[k]![i]!, expected, 1e-4)
        }
      }
      // The forward picks argmax of (scale·l + g): check one sample by hand.
      const z0 = l[0]!.map((v, j) => scale * v + g[0]![0]![j]!)
      assert.strictEqual(values[0]![0]!.indexOf(1), z0.indexOf(Math.max(...z0)))
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("gates: one-hot choices times candidates, trailing layers kept", () =>
    Effect.gen(function*() {
      // 2:3 on 7 layers: two groups and one trailing layer. Sample 0 picks rows 0 (keep 0,1) and 2 (keep 1,2).
      const onehot = tf.tensor3d([[[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 0]]])
      const gates = Gumbel.gates(onehot, Scheme.parse("2:3"), 7).arraySync()
      assert.deepStrictEqual(gates, [[1, 1, 0, 0, 1, 1, 1], [1, 0, 1, 1, 1, 0, 1]])
    }).pipe(Effect.provide(Compute.cpu)))
})
