import { assert, describe, it } from "@effect/vitest"
import * as Batches from "./Batches.ts"
import * as Images from "./Images.ts"
import * as Synthetic from "./Synthetic.ts"

// Image n of this set is filled with the byte n (so a batch shows which images it holds).
const numbered = (count: number) =>
  Images.make({ height: 2, width: 3, channels: 1 }, Uint8Array.from({ length: count * 6 }, (_, i) => Math.floor(i / 6)), Int32Array.from({ length: count }, (_, i) => i % 4))

describe("Images", () => {
  it("mirrors left-right and maps bytes to [-1, 1] and back", () => {
    // One 2×3 RGB-less image: rows [0 51 255] and [102 153 204].
    const set = Images.make({ height: 2, width: 3, channels: 1 }, Uint8Array.of(0, 51, 255, 102, 153, 204), Int32Array.of(7))
    const plain = Images.signedBatch(set, [0])
    const flipped = Images.signedBatch(set, [0], [true])
    assert.deepStrictEqual([...plain].map((v) => Math.round(v * 1e4) / 1e4), [-1, -0.6, 1, -0.2, 0.2, 0.6])
    assert.deepStrictEqual([...Images.toBytes(flipped)], [255, 51, 0, 204, 153, 102])
    assert.deepStrictEqual([...Images.flipHorizontal(plain, [1, 2, 3, 1])], [...flipped])
    // Two channels move together.
    const rgb = Float32Array.of(1, 2, 3, 4, 5, 6)
    assert.deepStrictEqual([...Images.flipHorizontal(rgb, [1, 1, 3, 2])], [5, 6, 3, 4, 1, 2])
  })
})

describe("Batches", () => {
  const set = numbered(10)
  const options = { seed: 3, batchSize: 4, flip: false }

  it("each epoch visits a permutation, dropping the partial last batch", () => {
    const perEpoch = Batches.perEpoch(10, 4)
    assert.strictEqual(perEpoch, 2)
    for (const epoch of [0, 1, 5]) {
      const seen = [0, 1].flatMap((b) => [...Batches.indices(10, options, epoch * perEpoch + b)])
      const order = Batches.order(3, epoch, 10)
      assert.deepStrictEqual(seen, [...order.subarray(0, 8)])
      assert.deepStrictEqual([...order].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    }
    assert.notDeepEqual([...Batches.order(3, 0, 10)], [...Batches.order(3, 1, 10)])
    assert.notDeepEqual([...Batches.order(3, 0, 10)], [...Batches.order(4, 0, 10)])
  })

  it("a batch is a pure function of (seed, step): images and labels match the indices", () => {
    const a = Batches.at(set, options, 7)
    const b = Batches.at(set, options, 7)
    assert.deepStrictEqual([...a.indices], [...b.indices])
    assert.deepStrictEqual([...a.images], [...b.images])
    assert.deepStrictEqual(a.shape, [4, 2, 3, 1])
    a.indices.forEach((n, i) => {
      assert.strictEqual(a.labels[i], n % 4)
      assert.closeTo(a.images[i * 6]!, n / 127.5 - 1, 1e-6)
    })
  })

  it("flips about half the images, each exactly mirrored", () => {
    const synthetic = Synthetic.images({ classes: 3, count: 64, size: 8, channels: 1, seed: 0 }, "train")
    const flipOptions = { seed: 1, batchSize: 64, flip: true }
    const batch = Batches.at(synthetic, flipOptions, 0)
    const plain = Batches.at(synthetic, { ...flipOptions, flip: false }, 0)
    const count = batch.flipped.filter((f) => f).length
    assert.isAbove(count, 20)
    assert.isBelow(count, 44)
    for (let i = 0; i < 64; i++) {
      const one = (a: Float32Array) => a.subarray(i * 64, (i + 1) * 64)
      const expected = batch.flipped[i] ? Images.flipHorizontal(one(plain.images), [1, 8, 8, 1]) : one(plain.images)
      assert.deepStrictEqual([...one(batch.images)], [...expected])
    }
    // Synthetic squares are off-centre, so a mirror differs from the original.
    assert.notDeepEqual([...Images.flipHorizontal(plain.images.subarray(0, 64), [1, 8, 8, 1])], [...plain.images.subarray(0, 64)])
  })

  it("range takes images in order and stops at the end", () => {
    const r = Batches.range(set, 8, 4)
    assert.deepStrictEqual([...r.indices], [8, 9])
    assert.deepStrictEqual(r.shape, [2, 2, 3, 1])
    assert.throws(() => Batches.indices(3, options, 0), /3 images cannot fill one batch of 4/)
  })
})
