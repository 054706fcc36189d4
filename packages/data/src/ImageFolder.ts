/**
 * A folder of class-per-subfolder images (torchvision's ImageFolder layout:
 * root/<class>/<file>.png|jpg), classes in sorted order, files in sorted
 * order. Each image is decoded (pngjs, jpeg-js), converted to RGB (or luma)
 * and centre-cropped as ADM's center_crop_arr.
 */
import { Effect } from "effect"
import jpeg from "jpeg-js"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { DatasetError } from "./Dataset.ts"
import * as Images from "./Images.ts"
import * as Png from "./Png.ts"
import * as Resize from "./Resize.ts"

export interface Options {
  readonly root: string
  /** Side of the square crops. */
  readonly size: number
  /** 3 for RGB (the default, as ImageFolder's loader), 1 for Pillow's luma. */
  readonly channels?: 1 | 3
  /** Class names to expect, in label order (the train split's, for a test split). */
  readonly classes?: ReadonlyArray<string>
}

const hint = "An image folder holds one subfolder per class with .png/.jpg/.jpeg files (root/<class>/<image>)"

const extensions = new Set([".png", ".jpg", ".jpeg"])

const decodeImage = (bytes: Uint8Array, file: string): Effect.Effect<Png.Raster, DatasetError> => {
  const fail = (reason: string) => new DatasetError({ dataset: "image folder", path: file, reason, hint })
  if (path.extname(file).toLowerCase() === ".png") return Png.decode(bytes, file).pipe(Effect.mapError((e) => fail(`not a readable PNG: ${e.reason}`)))
  return Effect.try({
    try: () => {
      const image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false })
      return Png.raster(image.width, image.height, 3, image.data)
    },
    catch: (e) => fail(`not a decodable JPEG: ${(e as Error).message}`)
  })
}

/** Loads every image under `root`; labels index the sorted class names. */
export const load = Effect.fn("ImageFolder.load")(function*(options: Options) {
  const fail = (at: string, reason: string) => new DatasetError({ dataset: "image folder", path: at, reason, hint })
  const entries = yield* Effect.tryPromise({
    try: () => fs.readdir(options.root, { withFileTypes: true }),
    catch: (e) => fail(options.root, (e as NodeJS.ErrnoException).code === "ENOENT" ? "folder not found" : (e as Error).message)
  })
  const found = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort()
  const classNames = options.classes ?? found
  if (classNames.length === 0) return yield* fail(options.root, "no class subfolders")
  const extra = found.filter((c) => !classNames.includes(c))
  if (extra.length > 0) return yield* fail(options.root, `class folders ${extra.join(", ")} are not among the expected classes`)
  const files: Array<readonly [string, number]> = []
  for (const [label, name] of classNames.entries()) {
    const dir = path.join(options.root, name)
    const names = yield* Effect.tryPromise({
      try: () => fs.readdir(dir),
      catch: (e) => fail(dir, (e as Error).message)
    }).pipe(Effect.orElseSucceed((): Array<string> => []))
    for (const file of names.filter((f) => extensions.has(path.extname(f).toLowerCase())).sort()) {
      files.push([path.join(dir, file), label])
    }
  }
  if (files.length === 0) return yield* fail(options.root, "no .png/.jpg/.jpeg images in the class folders")
  const channels = options.channels ?? 3
  const per = options.size * options.size * channels
  const pixels = new Uint8Array(files.length * per)
  const labels = new Int32Array(files.length)
  for (const [i, [file, label]] of files.entries()) {
    const bytes = yield* Effect.tryPromise({ try: () => fs.readFile(file), catch: (e) => fail(file, (e as Error).message) })
    const decoded = yield* decodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file)
    const cropped = Resize.centerCrop(decoded, options.size)
    pixels.set((channels === 1 ? Resize.toGrey(cropped) : cropped).data, i * per)
    labels[i] = label
  }
  return {
    images: Images.make({ height: options.size, width: options.size, channels }, pixels, labels),
    classNames
  }
})
