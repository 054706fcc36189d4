import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as zlib from "node:zlib"
import { Dataset, fashionMnistFiles } from "./Dataset.ts"
import * as Idx from "./Idx.ts"

const current = Effect.gen(function*() {
  return yield* Dataset
})

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "idx-"))

/** Images whose pixel (y, x) of image n is n·10 + y + x, capped at 255. */
const images = (n: number) => Uint8Array.from({ length: n * 28 * 28 }, (_, i) => Math.min(255, Math.floor(i / 784) * 10 + Math.floor((i % 784) / 28) + (i % 28)))

/** A Fashion-MNIST folder written by the test: n train and m test images, labels i mod 10. */
function writeFashion(dir: string, n: number, m: number) {
  const write = (file: string, bytes: Uint8Array) => fs.writeFileSync(path.join(dir, file), zlib.gzipSync(bytes))
  write(fashionMnistFiles.trainImages, Idx.encode([n, 28, 28], images(n)))
  write(fashionMnistFiles.trainLabels, Idx.encode([n], Uint8Array.from({ length: n }, (_, i) => i % 10)))
  write(fashionMnistFiles.testImages, Idx.encode([m, 28, 28], images(m)))
  write(fashionMnistFiles.testLabels, Idx.encode([m], Uint8Array.from({ length: m }, (_, i) => (i + 3) % 10)))
}

describe("Idx", () => {
  it.effect("header bytes: magic 0x00000803 for images, 0x00000801 for labels, big-endian dimensions", () =>
    Effect.gen(function*() {
      const bytes = Idx.encode([2, 28, 28], images(2))
      assert.deepStrictEqual([...bytes.subarray(0, 16)], [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28])
      assert.deepStrictEqual([...Idx.encode([3], Uint8Array.of(7, 8, 9))], [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
      const parsed = yield* Idx.decode(zlib.gzipSync(bytes), "x.gz")
      assert.deepStrictEqual(parsed.dims, [2, 28, 28])
      assert.strictEqual(parsed.data[784 + 28 * 3 + 5], 10 + 3 + 5)
    }))

  it.effect("reads files written to disk, gzipped or not", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, "plain"), Idx.encode([4], Uint8Array.of(1, 2, 3, 4)))
      fs.writeFileSync(path.join(dir, "zipped.gz"), zlib.gzipSync(Idx.encode([2, 2], Uint8Array.of(5, 6, 7, 8))))
      const plain = yield* Idx.decode(fs.readFileSync(path.join(dir, "plain")), "plain")
      const zipped = yield* Idx.decode(fs.readFileSync(path.join(dir, "zipped.gz")), "zipped.gz")
      assert.deepStrictEqual([plain.dims, [...plain.data]], [[4], [1, 2, 3, 4]])
      assert.deepStrictEqual([zipped.dims, [...zipped.data]], [[2, 2], [5, 6, 7, 8]])
    }))

  it.effect("rejects a truncated file, a bad magic number, a wrong element type and a cut gzip stream", () =>
    Effect.gen(function*() {
      const good = Idx.encode([3, 28, 28], images(3))
      const truncated = yield* Effect.flip(Idx.decode(good.subarray(0, good.length - 100), "t"))
      assert.match(truncated.message, /need 2352 bytes of data, only 2252 present \(truncated file\)/)
      const magic = Uint8Array.from(good)
      magic[0] = 0x1a
      assert.match((yield* Effect.flip(Idx.decode(magic, "m"))).message, /magic number starts with 0x1a 0x00/)
      const floats = Uint8Array.from(good)
      floats[2] = 0x0d
      assert.match((yield* Effect.flip(Idx.decode(floats, "f"))).message, /element type 0x0d is not 0x08/)
      const header = yield* Effect.flip(Idx.decode(good.subarray(0, 10), "h"))
      assert.match(header.message, /header needs 16 bytes, the file has 10/)
      const zipped = zlib.gzipSync(good)
      const cut = yield* Effect.flip(Idx.decode(zipped.subarray(0, zipped.length / 2), "cut.gz"))
      assert.match(cut.message, /cut\.gz is not a valid IDX file: gzip stream is corrupt or truncated/)
    }))
})

describe("Dataset.fashionMnist", () => {
  it.effect("loads the four files, pads 28×28 to 32×32 with zeros and keeps labels", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      writeFashion(dir, 5, 3)
      const data = yield* Effect.provide(current, Dataset.fashionMnist({ dir }))
      assert.strictEqual(data.classes, 10)
      assert.deepStrictEqual([data.train.count, data.train.height, data.train.width, data.train.channels], [5, 32, 32, 1])
      assert.deepStrictEqual([...data.test.labels], [3, 4, 5])
      // Fashion-MNIST is held in memory: the source is its set.
      const px = (n: number, y: number, x: number) => data.train.held!.pixels[(n * 32 + y) * 32 + x]!
      // Original (y, x) lands at (y + 2, x + 2); the two-pixel border is zero.
      assert.strictEqual(px(4, 2 + 7, 2 + 11), 40 + 7 + 11)
      assert.strictEqual(px(1, 2, 2), 10)
      assert.deepStrictEqual([px(1, 0, 0), px(1, 1, 15), px(1, 31, 31), px(1, 15, 30)], [0, 0, 0, 0])
      const unpadded = yield* Effect.provide(current, Dataset.fashionMnist({ dir, size: 28 }))
      assert.strictEqual((yield* unpadded.train.read(4, 1)).pixels[7 * 28 + 11], 58)
      // A subset: the first images of each split, all of a split shorter than asked, under its own name.
      const first = yield* Effect.provide(current, Layer.provide(Dataset.firstImages({ train: 2, test: 10 }), Dataset.fashionMnist({ dir, size: 28 })))
      assert.strictEqual(first.name, "fashion-mnist[:2/:10]")
      assert.deepStrictEqual([first.train.count, first.test.count], [2, 3])
      assert.deepStrictEqual([...first.train.held!.pixels], [...unpadded.train.held!.pixels.subarray(0, 2 * 784)])
      assert.deepStrictEqual([...(yield* first.train.read(1, 5)).labels], [...unpadded.train.labels.subarray(1, 2)])
      assert.deepStrictEqual([...first.test.labels], [3, 4, 5])
    }))

  it.effect("a missing or malformed file is an error naming it and saying how to get the data", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(Effect.provide(current, Dataset.fashionMnist({ dir: "/nonexistent/fashion" })))
      assert.strictEqual(missing._tag, "DatasetError")
      assert.match(missing.message, /\/nonexistent\/fashion\/train-images-idx3-ubyte\.gz: file not found/)
      assert.match(missing.message, /dataset-fashion-mnist/)
      assert.match(missing.message, /--data DIR/)
      const dir = tempDir()
      writeFashion(dir, 4, 2)
      fs.writeFileSync(path.join(dir, fashionMnistFiles.testLabels), zlib.gzipSync(Idx.encode([3], Uint8Array.of(1, 2, 3))))
      const mismatch = yield* Effect.flip(Effect.provide(current, Dataset.fashionMnist({ dir })))
      assert.match(mismatch.message, /t10k-labels-idx1-ubyte\.gz: labels have dimensions \[3\], expected \[2\]/)
      const truncated = fs.readFileSync(path.join(dir, fashionMnistFiles.trainImages))
      fs.writeFileSync(path.join(dir, fashionMnistFiles.trainImages), zlib.gzipSync(zlib.gunzipSync(truncated).subarray(0, 1000)))
      const cut = yield* Effect.flip(Effect.provide(current, Dataset.fashionMnist({ dir })))
      assert.match(cut.message, /train-images-idx3-ubyte\.gz: dimensions \[4, 28, 28\] need 3136 bytes of data, only 984 present/)
    }))
})
