import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import { tf } from "./tf.ts"

const values = (t: tf.Tensor) => Array.from(t.dataSync())

describe("MatMulGradient", () => {
  it.effect("broadcast batch dims: each gradient is summed back to its operand's shape (closed forms)", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      compute.tidy(() => {
        // L = Σ x·W with x = 1 [2,3,4], W = 1 [4,5]: ∂L/∂x = Σ_o W = 5, ∂L/∂W = Σ_{b,t} x = 6.
        const [dx, dw] = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.matMul(x, w)))([tf.ones([2, 3, 4]), tf.ones([4, 5])])
        assert.deepStrictEqual(dx!.shape, [2, 3, 4])
        assert.deepStrictEqual(values(dx!), Array(24).fill(5))
        assert.deepStrictEqual(dw!.shape, [4, 5])
        assert.deepStrictEqual(values(dw!), Array(20).fill(6))
        // a [1,1,2] broadcast against b [3,2,1]: L = Σ_i a·b_i, so ∂L/∂a = Σ_i b_iᵀ
        // = [1+3+5, 2+4+6] and ∂L/∂b_i = aᵀ.
        const a = tf.tensor([[[10, 20]]])
        const b = tf.tensor([1, 2, 3, 4, 5, 6], [3, 2, 1])
        const [da, db] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.matMul(p, q)))([a, b])
        assert.deepStrictEqual(da!.shape, [1, 1, 2])
        assert.deepStrictEqual(values(da!), [1 + 3 + 5, 2 + 4 + 6])
        assert.deepStrictEqual(db!.shape, [3, 2, 1])
        assert.deepStrictEqual(values(db!), [10, 20, 10, 20, 10, 20])
      })
    }).pipe(Effect.provide(Compute.cpu)))
})
