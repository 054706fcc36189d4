import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import * as WebGpuFixture from "./fixtures/WebGpu.ts"
import { tf } from "./tf.ts"

/** The closed forms of the broadcast gradient on the layer's backend (reads are awaited: webgpu has no synchronous ones). */
const closedForms = Effect.gen(function*() {
  const compute = yield* Compute
  const values = (t: tf.Tensor) => Effect.map(compute.read(t), Array.from)
  yield* compute.scoped(Effect.gen(function*() {
    // L = Σ x·W with x = 1 [2,3,4], W = 1 [4,5]: ∂L/∂x = Σ_o W = 5, ∂L/∂W = Σ_{b,t} x = 6.
    const [dx, dw] = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.matMul(x, w)))([tf.ones([2, 3, 4]), tf.ones([4, 5])])
    assert.deepStrictEqual(dx!.shape, [2, 3, 4])
    assert.deepStrictEqual(yield* values(dx!), Array(24).fill(5))
    assert.deepStrictEqual(dw!.shape, [4, 5])
    assert.deepStrictEqual(yield* values(dw!), Array(20).fill(6))
    // a [1,1,2] broadcast against b [3,2,1]: L = Σ_i a·b_i, so ∂L/∂a = Σ_i b_iᵀ
    // = [1+3+5, 2+4+6] and ∂L/∂b_i = aᵀ.
    const a = tf.tensor([[[10, 20]]])
    const b = tf.tensor([1, 2, 3, 4, 5, 6], [3, 2, 1])
    const [da, db] = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.matMul(p, q)))([a, b])
    assert.deepStrictEqual(da!.shape, [1, 1, 2])
    assert.deepStrictEqual(yield* values(da!), [1 + 3 + 5, 2 + 4 + 6])
    assert.deepStrictEqual(db!.shape, [3, 2, 1])
    assert.deepStrictEqual(yield* values(db!), [10, 20, 10, 20, 10, 20])
  }))
})

describe("MatMulGradient", () => {
  it.effect("broadcast batch dims: each gradient is summed back to its operand's shape (closed forms)", () =>
    closedForms.pipe(Effect.provide(Compute.cpu)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("the same closed forms", () => closedForms.pipe(Effect.provide(Compute.webgpu)), 60_000)
  })
})
