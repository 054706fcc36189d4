/**
 * A folder of class-per-subfolder images (torchvision's ImageFolder layout:
 * root/<class>/<file>.png|jpg), classes in sorted order, files in sorted
 * order. Each image is decoded (pngjs, jpeg-js) when a batch is read,
 * converted to RGB (or luma) and centre-cropped as ADM's center_crop_arr.
 */
import { Effect } from "effect"
import jpeg from "jpeg-js"
import type { Dirent } from "node:fs"
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

/**
 * The images under `root` as a source read in batches: the folders are
 * listed now (labels index the sorted class names; a file that is not a
 * .png/.jpg/.jpeg is an error naming it, hidden files aside), each image is
 * read and decoded only when a batch asks for it. Memory is the list of
 * paths and labels and the batch being read, whatever the folder's size.
 */
export const open = Effect.fn("ImageFolder.open")(function*(options: Options) {
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
  const files: Array<string> = []
  const labels: Array<number> = []
  for (const [label, name] of classNames.entries()) {
    const dir = path.join(options.root, name)
    const names = yield* Effect.tryPromise({
      try: () => fs.readdir(dir, { withFileTypes: true }),
      catch: (e) => fail(dir, (e as Error).message)
    }).pipe(Effect.orElseSucceed((): Array<Dirent> => []))
    for (const entry of names.filter((e) => !e.name.startsWith(".")).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const file = path.join(dir, entry.name)
      if (entry.isDirectory()) return yield* fail(file, "a folder inside a class folder (images sit directly in root/<class>/)")
      if (!extensions.has(path.extname(entry.name).toLowerCase())) return yield* fail(file, "not a .png/.jpg/.jpeg image")
      files.push(file)
      labels.push(label)
    }
  }
  if (files.length === 0) return yield* fail(options.root, "no .png/.jpg/.jpeg images in the class folders")
  const channels = options.channels ?? 3
  const shape = { height: options.size, width: options.size, channels }
  const per = Images.imageSize(shape)
  const decodeInto = (pixels: Uint8Array, i: number, file: string) =>
    Effect.gen(function*() {
      const bytes = yield* Effect.tryPromise({ try: () => fs.readFile(file), catch: (e) => fail(file, (e as Error).message) })
      const cropped = Resize.centerCrop(yield* decodeImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file), options.size)
      pixels.set((channels === 1 ? Resize.toGrey(cropped) : cropped).data, i * per)
    })
  const all = Int32Array.from(labels)
  const source: Images.Source = {
    ...shape,
    count: files.length,
    labels: all,
    read: (start, count) =>
      Effect.gen(function*() {
        const n = Math.max(0, Math.min(count, files.length - start))
        const pixels = new Uint8Array(n * per)
        // A few files in flight at once (reading overlaps decoding), never more than the batch.
        yield* Effect.forEach(files.slice(start, start + n), (file, i) => decodeInto(pixels, i, file), { concurrency: 4, discard: true })
        return Images.make(shape, pixels, all.slice(start, start + n))
      })
  }
  return { source, classNames }
})
