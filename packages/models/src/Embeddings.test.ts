import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng, tf } from "@tinyfusion/tensor"
import * as Embeddings from "./Embeddings.ts"

describe("Embeddings", () => {
  it("timestep embedding: [cos(t·f_i), sin(t·f_i)] with f_i = 10000^(−i/128)", () => {
    const t = [0, 1, 17, 999]
    const e = Embeddings.timestepEmbedding(t)
    assert.strictEqual(e.length, 4 * 256)
    // t = 0: cos 0 = 1 in the first half, sin 0 = 0 in the second.
    for (let i = 0; i < 128; i++) {
      assert.strictEqual(e[i], 1)
      assert.strictEqual(e[128 + i], 0)
    }
    // f_0 = 1, f_64 = 10000^(−1/2) = 0.01, f_127 = 10000^(−127/128).
    for (const [b, ti] of t.entries()) {
      assert.closeTo(e[b * 256]!, Math.cos(ti), 1e-7)
      assert.closeTo(e[b * 256 + 128]!, Math.sin(ti), 1e-7)
      assert.closeTo(e[b * 256 + 64]!, Math.cos(ti * 0.01), 1e-7)
      assert.closeTo(e[b * 256 + 128 + 64]!, Math.sin(ti * 0.01), 1e-7)
      assert.closeTo(e[b * 256 + 127]!, Math.cos(ti * 10000 ** (-127 / 128)), 1e-7)
    }
    // Odd widths get a zero last column; a 4-wide embedding has f = (1, 10000^(−1/2)).
    assert.deepStrictEqual(
      [...Embeddings.timestepEmbedding([2], 5)].map((v) => Math.round(v * 1e6) / 1e6),
      [Math.cos(2), Math.cos(0.02), Math.sin(2), Math.sin(0.02), 0].map((v) => Math.round(v * 1e6) / 1e6)
    )
  })

  it("position embedding: column in the first half, row in the second, [sin, cos] each", () => {
    const dim = 8
    const grid = 3
    const e = Embeddings.positionEmbedding(dim, grid)
    // D/4 = 2 frequencies: ω = (1, 1/100).
    const expected = (row: number, col: number) => [
      Math.sin(col), Math.sin(col / 100), Math.cos(col), Math.cos(col / 100),
      Math.sin(row), Math.sin(row / 100), Math.cos(row), Math.cos(row / 100)
    ]
    for (let row = 0; row < grid; row++) {
      for (let col = 0; col < grid; col++) {
        const k = row * grid + col
        const got = [...e.subarray(k * dim, (k + 1) * dim)]
        expected(row, col).forEach((v, j) => assert.closeTo(got[j]!, v, 1e-7, `token ${k} channel ${j}`))
      }
    }
    assert.throws(() => Embeddings.positionEmbedding(6, 2), /multiple of 4/)
  })

  it.effect("patchify orders tokens row-major and features (i, j, c); unpatchify inverts it exactly", () =>
    Effect.gen(function*() {
      const [n, h, w, c, p] = [2, 6, 6, 3, 2]
      const data = Float32Array.from(Rng.normal(Rng.stream(0, "test/patchify"), 0, n * h * w * c))
      const x = tf.tensor4d(data, [n, h, w, c])
      const tokens = Embeddings.patchify(x, p)
      assert.deepStrictEqual(tokens.shape, [n, 9, p * p * c])
      const got = tokens.dataSync()
      // Token (gy, gx) feature (i, j, ch) is pixel (gy·p + i, gx·p + j, ch).
      for (let b = 0; b < n; b++) for (let gy = 0; gy < 3; gy++) for (let gx = 0; gx < 3; gx++) {
        for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) for (let ch = 0; ch < c; ch++) {
          const pixel = data[((b * h + gy * p + i) * w + gx * p + j) * c + ch]!
          assert.strictEqual(got[((b * 9 + gy * 3 + gx) * p + i) * p * c + j * c + ch], pixel)
        }
      }
      const back = Embeddings.unpatchify(tokens, p, c)
      assert.deepStrictEqual(back.shape, [n, h, w, c])
      assert.deepStrictEqual(back.dataSync(), data)
      assert.throws(() => Embeddings.unpatchify(tf.zeros([1, 8, 12]) as tf.Tensor3D, 2, 3), /square grid/)
      assert.throws(() => Embeddings.patchify(tf.zeros([1, 5, 5, 1]) as tf.Tensor4D, 2), /not divisible/)
    }).pipe(Effect.provide(Compute.wasm)))
})
