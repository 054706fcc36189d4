import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import { Compute } from "./Compute.ts"
import * as WebGpuFixture from "./fixtures/WebGpu.ts"
import * as Rng from "./Rng.ts"
import { tf } from "./tf.ts"
import * as WebGpuMatMul from "./WebGpuMatMul.ts"

/** Products tfjs's webgpu backend splits along K: x·W, x·Wᵀ, and a weight's gradient xᵀ·dy over 2,048 rows. */
const split = [
  { a: [24, 2048], b: [2048, 16], transposeA: false, transposeB: false },
  { a: [16, 2048], b: [12, 2048], transposeA: false, transposeB: true },
  { a: [2048, 16], b: [2048, 12], transposeA: true, transposeB: false }
] as const

const digest = (values: Float32Array) => createHash("sha256").update(new Uint8Array(values.buffer)).digest("hex")

/** Each product (plain and with a bias, through _FusedMatMul) `runs` times: the distinct results' digests and the first result. */
const products = (runs: number) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const out: Array<{ digests: Set<string>; values: Float32Array }> = []
    for (const [i, p] of split.entries()) {
      for (const fused of [false, true]) {
        const a = Rng.normalTensor(Rng.stream(i, "webgpu-matmul/a"), 0, p.a)
        const b = Rng.normalTensor(Rng.stream(i, "webgpu-matmul/b"), 0, p.b)
        const bias = tf.ones([p.transposeB ? p.b[0] : p.b[1]])
        const digests = new Set<string>()
        let values: Float32Array = new Float32Array()
        for (let r = 0; r < runs; r++) {
          const c = fused
            ? tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, transposeA: p.transposeA, transposeB: p.transposeB, bias })
            : tf.matMul(a, b, p.transposeA, p.transposeB)
          values = yield* compute.read(c)
          c.dispose()
          digests.add(digest(values))
        }
        tf.dispose([a, b, bias])
        out.push({ digests, values })
      }
    }
    return out
  })

describe("WebGpuMatMul", () => {
  it("splitsK: one batch, an inner dimension of 2000 or more, an output of few 32×32 tiles but more than 128 elements", () => {
    const p = (a: ReadonlyArray<number>, b: ReadonlyArray<number>, transposeA = false, transposeB = false) => ({ a, b, transposeA, transposeB })
    for (const q of split) assert.isTrue(WebGpuMatMul.splitsK(q, 8), `${q.a} · ${q.b}`)
    assert.isTrue(WebGpuMatMul.splitsK(p([64, 4096], [4096, 64]), 8), "the product measured in the module's comment")
    assert.isFalse(WebGpuMatMul.splitsK(p([64, 1999], [1999, 64]), 8), "a shorter inner dimension")
    assert.isFalse(WebGpuMatMul.splitsK(p([2, 64, 4096], [4096, 64]), 8), "a batch of two")
    assert.isFalse(WebGpuMatMul.splitsK(p([8, 4096], [4096, 16]), 8), "128 outputs: tfjs's reduce program")
    assert.isFalse(WebGpuMatMul.splitsK(p([256, 4096], [4096, 256]), 8), "64 tiles: tfjs's packed program")
    assert.isTrue(WebGpuMatMul.splitsK(p([128, 4096], [4096, 128]), 16), "16 tiles where the threshold is 16 (Intel Gen12+)")
    assert.isTrue(WebGpuMatMul.splitsK(p([4, 4096], [4096, 512]), 8), "a thin output: up to twice the threshold")
  })

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("the products tfjs would split with float atomics give the same bits on every run, and wasm's values", () =>
      Effect.gen(function*() {
        const gpu = yield* products(3).pipe(Effect.provide(Compute.webgpu))
        const wasm = yield* products(1).pipe(Effect.provide(Compute.wasm))
        gpu.forEach((g, i) => {
          assert.strictEqual(g.digests.size, 1, `product ${i}: ${g.digests.size} different results in 3 runs`)
          const reference = wasm[i]!.values
          // Sums of 2,048 products of N(0, 1) (scale ~45): float32 rounding in another order.
          reference.forEach((v, j) => assert.closeTo(g.values[j]!, v, 1e-3, `product ${i}[${j}]`))
        })
      }), 120_000)

    it.effect("installed by the webgpu layer; uninstall restores tfjs's kernels", () =>
      Effect.gen(function*() {
        yield* Compute
        assert.isTrue(WebGpuMatMul.installed())
        const wrapped = tf.getKernel(tf.BatchMatMul, "webgpu")!
        WebGpuMatMul.uninstall()
        const original = tf.getKernel(tf.BatchMatMul, "webgpu")!
        WebGpuMatMul.install()
        assert.notStrictEqual(wrapped.kernelFunc, original.kernelFunc)
        assert.notStrictEqual(tf.getKernel(tf.BatchMatMul, "webgpu")!.kernelFunc, original.kernelFunc)
      }).pipe(Effect.provide(Compute.webgpu)), 60_000)
  })
})
