import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng, tf } from "@tinyfusion/tensor"
import * as MatMul from "./MatMul.ts"

const random = (name: string, shape: Array<number>) =>
  tf.tensor(Rng.normal(Rng.stream(0, `test/${name}`), 0, shape.reduce((a, b) => a * b, 1)), shape)

describe("MatMul", () => {
  it.effect("values and gradients equal tf.matMul's, plain and with bᵀ, rank 2 and batched rank 4", () =>
    Effect.gen(function*() {
      const cases: Array<[Array<number>, Array<number>, boolean]> = [
        [[5, 3], [3, 4], false],
        [[5, 3], [4, 3], true],
        [[2, 3, 5, 4], [2, 3, 4, 6], false],
        [[2, 3, 5, 4], [2, 3, 6, 4], true]
      ]
      for (const [i, [sa, sb, transposeB]] of cases.entries()) {
        const [a, b] = [random(`a${i}`, sa), random(`b${i}`, sb)]
        const w = random(`w${i}`, MatMul.matMul(a, b, transposeB).shape)
        const loss = (f: (x: tf.Tensor, y: tf.Tensor) => tf.Tensor) => (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(f(x, y), w))
        const ours = tf.grads(loss((x, y) => MatMul.matMul(x, y, transposeB)))([a, b])
        const theirs = tf.grads(loss((x, y) => tf.matMul(x, y, false, transposeB)))([a, b])
        const close = (x: tf.Tensor, y: tf.Tensor) => {
          const yv = y.dataSync()
          assert.deepStrictEqual(x.shape, y.shape)
          x.dataSync().forEach((v, j) => assert.closeTo(v, yv[j]!, 1e-4))
        }
        close(MatMul.matMul(a, b, transposeB), tf.matMul(a, b, false, transposeB))
        close(ours[0]!, theirs[0]!)
        close(ours[1]!, theirs[1]!)
      }
    }).pipe(Effect.provide(Compute.wasm)))
})
