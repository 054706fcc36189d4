/**
 * Labelled images held in host memory as unsigned bytes, NHWC. Pixels become
 * floats in [-1, 1] only when a batch is made (x/127.5 − 1, as DiT's
 * Normalize(mean 0.5, std 0.5) of ToTensor's x/255).
 */
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
  shape: { readonly height: number; readonly width: number; readonly channels: number },
  pixels: Uint8Array,
  labels: Int32Array
): ImageSet => {
  const per = shape.height * shape.width * shape.channels
  if (pixels.length !== labels.length * per) {
    throw new Error(`${labels.length} labels need ${labels.length * per} pixel bytes, got ${pixels.length}`)
  }
  return { count: labels.length, ...shape, pixels, labels }
}

export const imageSize = (set: ImageSet): number => set.height * set.width * set.channels

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
