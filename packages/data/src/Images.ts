/**
 * Labelled images as unsigned bytes, NHWC: a set held in host memory, or a
 * source read in batches (a folder too large to hold, ImageNet's train
 * split). Pixels become floats in [-1, 1] only when a batch is made
 * (x/127.5 − 1, as DiT's Normalize(mean 0.5, std 0.5) of ToTensor's x/255).
 */
import { Effect } from "effect"
import type { DatasetError } from "./Dataset.ts"

export interface ImageSet {
  readonly count: number
  readonly height: number
  readonly width: number
  readonly channels: number
  /** count × height × width × channels bytes. */
  readonly pixels: Uint8Array
  /** count class indices. */
  readonly labels: Int32Array
}

export const make = (
  shape: Shape,
  pixels: Uint8Array,
  labels: Int32Array
): ImageSet => {
  const per = shape.height * shape.width * shape.channels
  if (pixels.length !== labels.length * per) {
    throw new Error(`${labels.length} labels need ${labels.length * per} pixel bytes, got ${pixels.length}`)
  }
  return { count: labels.length, ...shape, pixels, labels }
}

export type Shape = Pick<ImageSet, "height" | "width" | "channels">

export const imageSize = (set: Shape): number => set.height * set.width * set.channels

export const shapeOf = (set: Shape): Shape => ({ height: set.height, width: set.width, channels: set.channels })

/**
 * Labelled images read in batches, in a fixed order. The labels are known
 * up front; the pixels of a `read` are decoded for it and held by no one
 * else, so a reader of batches of B holds at most B images. `held` is the
 * whole set when the source keeps it in memory anyway (Fashion-MNIST).
 */
export interface Source {
  readonly count: number
  readonly height: number
  readonly width: number
  readonly channels: number
  /** count class indices. */
  readonly labels: Int32Array
  /** Images [start, start + count) as a set of `count` images (fewer at the end). */
  readonly read: (start: number, count: number) => Effect.Effect<ImageSet, DatasetError>
  readonly held?: ImageSet
}

/** Images [start, start + count) of a set held in memory, without copying. */
export const slice = (set: ImageSet, start: number, count: number): ImageSet => {
  const n = Math.max(0, Math.min(count, set.count - start))
  const per = imageSize(set)
  return make(shapeOf(set), set.pixels.subarray(start * per, (start + n) * per), set.labels.subarray(start, start + n))
}

/** A set held in memory as a source. */
export const fromSet = (set: ImageSet): Source => ({
  count: set.count,
  height: set.height,
  width: set.width,
  channels: set.channels,
  labels: set.labels,
  read: (start, count) => Effect.succeed(slice(set, start, count)),
  held: set
})

/** The first `count` images of a source (all of them when it has fewer). */
export const first = (source: Source, count: number): Source => {
  const n = Math.min(count, source.count)
  const held = source.held && slice(source.held, 0, n)
  return {
    count: n,
    height: source.height,
    width: source.width,
    channels: source.channels,
    labels: source.labels.subarray(0, n),
    read: (start, k) => source.read(start, Math.max(0, Math.min(k, n - start))),
    ...(held === undefined ? {} : { held })
  }
}

/**
 * A whole source in memory, for what samples it at random (training the
 * autoencoder or the feature network): the set itself when the source holds
 * it, else every image read once, `batch` at a time.
 */
export const load = (source: Source, batch = 256): Effect.Effect<ImageSet, DatasetError> =>
  source.held !== undefined
    ? Effect.succeed(source.held)
    : Effect.gen(function*() {
      const per = imageSize(source)
      const pixels = new Uint8Array(source.count * per)
      for (let start = 0; start < source.count; start += batch) {
        pixels.set((yield* source.read(start, batch)).pixels, start * per)
      }
      return make(shapeOf(source), pixels, source.labels)
    })

/** Zero-pads every image to size × size, centred (28 → 32 puts 2 pixels on each side). */
export function pad(set: ImageSet, size: number): ImageSet {
  if (size < set.height || size < set.width) throw new Error(`cannot pad ${set.height}×${set.width} images to ${size}×${size}`)
  const top = Math.floor((size - set.height) / 2)
  const left = Math.floor((size - set.width) / 2)
  const c = set.channels
  const out = new Uint8Array(set.count * size * size * c)
  for (let n = 0; n < set.count; n++) {
    for (let y = 0; y < set.height; y++) {
      const from = ((n * set.height + y) * set.width) * c
      const to = ((n * size + y + top) * size + left) * c
      out.set(set.pixels.subarray(from, from + set.width * c), to)
    }
  }
  return { count: set.count, height: size, width: size, channels: c, pixels: out, labels: set.labels }
}

/**
 * Writes image `index` of the set into `out` at `offset` as floats in [-1, 1],
 * mirrored left-right when `flip` is set.
 */
export function writeSigned(set: ImageSet, index: number, flip: boolean, out: Float32Array, offset: number): void {
  const { height: h, width: w, channels: c } = set
  const base = index * h * w * c
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const sx = flip ? w - 1 - x : x
      for (let k = 0; k < c; k++) out[offset + (y * w + x) * c + k] = set.pixels[base + (y * w + sx) * c + k]! / 127.5 - 1
    }
  }
}

/** Images `indices` as one NHWC float array in [-1, 1]; `flips[i]` mirrors image i. */
export function signedBatch(set: ImageSet, indices: ArrayLike<number>, flips?: ArrayLike<boolean>): Float32Array {
  const per = imageSize(set)
  const out = new Float32Array(indices.length * per)
  for (let i = 0; i < indices.length; i++) writeSigned(set, indices[i]!, flips?.[i] ?? false, out, i * per)
  return out
}

/** Floats in [-1, 1] back to bytes (clamped, rounded), as DiT's sample saving: (x + 1)·127.5. */
export function toBytes(signed: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(signed.length)
  for (let i = 0; i < signed.length; i++) out[i] = Math.min(255, Math.max(0, Math.round((signed[i]! + 1) * 127.5)))
  return out
}

/** Mirrors one NHWC image array left-right (every image of the batch). */
export function flipHorizontal(data: Float32Array, shape: readonly [number, number, number, number]): Float32Array {
  const [n, h, w, c] = shape
  const out = new Float32Array(data.length)
  for (let i = 0; i < n * h; i++) {
    for (let x = 0; x < w; x++) {
      for (let k = 0; k < c; k++) out[(i * w + x) * c + k] = data[(i * w + (w - 1 - x)) * c + k]!
    }
  }
  return out
}
