import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import jpeg from "jpeg-js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Dataset } from "./Dataset.ts"
import * as Png from "./Png.ts"
import * as Resize from "./Resize.ts"

/** 8 wide × 6 high, pixel (x, y) = 30y + 10x. */
const ramp = Png.raster(8, 6, 1, Uint8Array.from({ length: 48 }, (_, i) => 30 * Math.floor(i / 8) + 10 * (i % 8)))

describe("Resize (Pillow's 8-bit resampling)", () => {
  it("BOX halving averages 2×2 blocks, each pass rounding half up", () => {
    // Rows: (v + v + 10 + 1) >> 1 = v + 5; columns: then + 15. Hand-computed.
    const half = Resize.resize(ramp, 4, 3, Resize.box)
    assert.deepStrictEqual([...half.data], [20, 40, 60, 80, 80, 100, 120, 140, 140, 160, 180, 200])
  })

  it("BICUBIC (a = −0.5) upscaling of [100, 200] to four samples, by hand", () => {
    // Output 0: centre 0.25, taps at 0 and 1 with Keys weights 0.8671875 and −0.0703125,
    // normalised to 1.0882 and −0.0882: 91.18 → 91. Output 1: 0.8671875 and 0.2265625 → 120.71 → 121.
    const up = Resize.resize(Png.raster(2, 1, 1, Uint8Array.of(100, 200)), 4, 1, Resize.bicubic)
    assert.deepStrictEqual([...up.data], [91, 121, 179, 209])
    const c = Resize.coefficients(2, 4, Resize.bicubic)
    assert.strictEqual(c.taps, 5)
    assert.deepStrictEqual([...c.bounds], [0, 2, 0, 2, 0, 2, 0, 2])
    assert.strictEqual(c.weights[0], Math.round((0.8671875 / 0.796875) * 2 ** 22))
  })

  it("centre crop as center_crop_arr: BOX-halve while ≥ 2× the size, BICUBIC to size, centre square", () => {
    // 8×6 → BOX to 4×3 (short side 6 ≥ 2·3), scale 1 leaves it, crop columns (4 − 3) // 2 = 0.
    assert.deepStrictEqual([...Resize.centerCrop(ramp, 3).data], [20, 40, 60, 80, 100, 120, 140, 160, 180])
    // 2×2 → BICUBIC to 4×4; every row is the upscaled [100, 200].
    const up = Resize.centerCrop(Png.raster(2, 2, 1, Uint8Array.of(100, 200, 100, 200)), 4)
    assert.deepStrictEqual([...up.data], [91, 121, 179, 209, 91, 121, 179, 209, 91, 121, 179, 209, 91, 121, 179, 209])
    // Normalised weights keep a constant image constant: 12×4 → BICUBIC 9×3 → centre 3×3.
    const flat = Resize.centerCrop(Png.raster(12, 4, 1, new Uint8Array(48).fill(77)), 3)
    assert.deepStrictEqual([flat.width, flat.height, ...flat.data], [3, 3, 77, 77, 77, 77, 77, 77, 77, 77, 77])
  })

  it("luma as Pillow's convert('L')", () => {
    const grey = Resize.toGrey(Png.raster(2, 1, 3, Uint8Array.of(200, 100, 50, 7, 7, 7)))
    // (200·19595 + 100·38470 + 50·7471 + 32768) >> 16 = 124; a grey pixel keeps its value.
    assert.deepStrictEqual([...grey.data], [124, 7])
  })
})

describe("Png", () => {
  it.effect("round trips grey and RGB rasters and tiles a grid", () =>
    Effect.gen(function*() {
      const grey = yield* Png.decode(Png.encode(ramp), "ramp.png")
      assert.deepStrictEqual([grey.width, grey.height, grey.channels], [8, 6, 3])
      assert.deepStrictEqual([grey.data[3 * 9], grey.data[3 * 9 + 1], grey.data[3 * 9 + 2]], [40, 40, 40])
      const rgb = Png.raster(2, 1, 3, Uint8Array.of(1, 2, 3, 250, 251, 252))
      assert.deepStrictEqual([...(yield* Png.decode(Png.encode(rgb), "rgb.png")).data], [1, 2, 3, 250, 251, 252])
      const tiles = Png.grid([Png.raster(1, 1, 1, Uint8Array.of(10)), Png.raster(1, 1, 1, Uint8Array.of(20)), Png.raster(1, 1, 1, Uint8Array.of(30))], 2, { gap: 1, background: 0 })
      assert.deepStrictEqual([tiles.width, tiles.height], [5, 5])
      assert.deepStrictEqual([tiles.data[6], tiles.data[8], tiles.data[16], tiles.data[18]], [10, 20, 30, 0])
      const bad = yield* Effect.flip(Png.decode(Uint8Array.of(1, 2, 3, 4), "bad.png"))
      assert.match(bad.message, /bad\.png is not a readable PNG/)
    }))
})

describe("Dataset.imageFolder", () => {
  const writeFolder = () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "folder-"))
    fs.mkdirSync(path.join(root, "b-dog"))
    fs.mkdirSync(path.join(root, "a-cat"))
    fs.writeFileSync(path.join(root, "a-cat", "ramp.png"), Png.encode(ramp))
    const orange = Buffer.alloc(16 * 16 * 4)
    for (let i = 0; i < 256; i++) orange.set([200, 100, 50, 255], 4 * i)
    fs.writeFileSync(path.join(root, "b-dog", "orange.jpg"), jpeg.encode({ data: orange, width: 16, height: 16 }, 95).data)
    // A hidden file (a file manager's) is not part of the set.
    fs.writeFileSync(path.join(root, "b-dog", ".DS_Store"), "not an image")
    return root
  }
  const load = (options: Parameters<typeof Dataset.imageFolder>[0]) =>
    Effect.provide(Effect.gen(function*() {
      return yield* Dataset
    }), Dataset.imageFolder(options))

  it.effect("sorted class folders become labels; PNG and JPEG are decoded and centre-cropped", () =>
    Effect.gen(function*() {
      const root = writeFolder()
      const data = yield* load({ root, size: 3 })
      assert.strictEqual(data.classes, 2)
      assert.deepStrictEqual([...data.train.labels], [0, 1])
      assert.strictEqual(data.test.count, 0)
      const pixels = (yield* data.train.read(0, 2)).pixels
      const first = [...pixels.subarray(0, 27)].filter((_, i) => i % 3 === 0)
      assert.deepStrictEqual(first, [20, 40, 60, 80, 100, 120, 140, 160, 180])
      const second = pixels.subarray(27, 54)
      for (let i = 0; i < 9; i++) {
        assert.closeTo(second[3 * i]!, 200, 4)
        assert.closeTo(second[3 * i + 1]!, 100, 4)
        assert.closeTo(second[3 * i + 2]!, 50, 4)
      }
      const grey = yield* load({ root, size: 3, channels: 1 })
      assert.closeTo((yield* grey.train.read(1, 1)).pixels[4]!, 124, 4)
    }))

  it.effect("an unreadable image, a file that is no image or an empty folder is an error naming the path", () =>
    Effect.gen(function*() {
      const root = writeFolder()
      fs.writeFileSync(path.join(root, "a-cat", "broken.png"), "not a png")
      // Found when its batch is read (the folder is listed, not decoded, up front).
      const data = yield* load({ root, size: 3 })
      const broken = yield* Effect.flip(data.train.read(0, 2))
      assert.match(broken.message, /^image folder at \/.*\/a-cat\/broken\.png: not a readable PNG: /)
      fs.writeFileSync(path.join(root, "b-dog", "notes.txt"), "not an image")
      const notes = yield* Effect.flip(load({ root, size: 3 }))
      assert.match(notes.message, /^image folder at \/.*\/b-dog\/notes\.txt: not a \.png\/\.jpg\/\.jpeg image\. /)
      const empty = fs.mkdtempSync(path.join(os.tmpdir(), "empty-"))
      assert.match((yield* Effect.flip(load({ root: empty, size: 3 }))).message, /no class subfolders/)
      assert.match((yield* Effect.flip(load({ root: "/nonexistent/images", size: 3 }))).message, /folder not found/)
    }))
})
