/**
 * Image resizing as Pillow does it for 8-bit images (libImaging/Resample.c),
 * so that crops match what the reference's data loader feeds DiT: a separable
 * convolution, horizontal pass first, whose filter support widens with the
 * downscale factor; each output's weights are normalised to sum 1, then
 * rounded to 22-bit fixed point, and every pass rounds to bytes.
 *
 * `centerCrop` is ADM's / DiT's center_crop_arr: halve with BOX while the
 * short side is at least twice the target, resize the short side to the
 * target with BICUBIC, then take the centre square.
 */
import type { Raster } from "./Png.ts"

interface Filter {
  readonly support: number
  readonly weight: (x: number) => number
}

export const box: Filter = { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) }

/** Keys' cubic convolution with a = −0.5 (Pillow's BICUBIC). */
export const bicubic: Filter = {
  support: 2,
  weight: (x) => {
    const a = -0.5
    const t = Math.abs(x)
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a
    return 0
  }
}

const PRECISION_BITS = 22
const ONE = 2 ** PRECISION_BITS

interface Coefficients {
  readonly taps: number
  /** Per output: first input index and number of inputs. */
  readonly bounds: Int32Array
  /** Fixed-point weights, `taps` per output. */
  readonly weights: Int32Array
}

/** The weights that map `inSize` samples to `outSize` (Pillow's precompute_coeffs + normalize_coeffs_8bpc). */
export function coefficients(inSize: number, outSize: number, filter: Filter): Coefficients {
  const scale = inSize / outSize
  const filterScale = Math.max(scale, 1)
  const support = filter.support * filterScale
  const taps = Math.ceil(support) * 2 + 1
  const bounds = new Int32Array(outSize * 2)
  const weights = new Int32Array(outSize * taps)
  const row = new Float64Array(taps)
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale
    const min = Math.max(0, Math.trunc(center - support + 0.5))
    const count = Math.min(inSize, Math.trunc(center + support + 0.5)) - min
    let total = 0
    for (let x = 0; x < count; x++) {
      row[x] = filter.weight((x + min - center + 0.5) / filterScale)
      total += row[x]!
    }
    for (let x = 0; x < count; x++) {
      const w = total === 0 ? row[x]! : row[x]! / total
      weights[out * taps + x] = Math.trunc(w < 0 ? w * ONE - 0.5 : w * ONE + 0.5)
    }
    bounds[2 * out] = min
    bounds[2 * out + 1] = count
  }
  return { taps, bounds, weights }
}

const clip8 = (sum: number) => Math.min(255, Math.max(0, Math.floor(sum / ONE)))

function horizontal(image: Raster, width: number, filter: Filter): Raster {
  const { taps, bounds, weights } = coefficients(image.width, width, filter)
  const c = image.channels
  const data = new Uint8Array(width * image.height * c)
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < width; x++) {
      const min = bounds[2 * x]!
      const count = bounds[2 * x + 1]!
      for (let k = 0; k < c; k++) {
        let sum = ONE / 2
        for (let t = 0; t < count; t++) sum += image.data[(y * image.width + min + t) * c + k]! * weights[x * taps + t]!
        data[(y * width + x) * c + k] = clip8(sum)
      }
    }
  }
  return { width, height: image.height, channels: c, data }
}

function vertical(image: Raster, height: number, filter: Filter): Raster {
  const { taps, bounds, weights } = coefficients(image.height, height, filter)
  const c = image.channels
  const rowLength = image.width * c
  const data = new Uint8Array(image.width * height * c)
  for (let y = 0; y < height; y++) {
    const min = bounds[2 * y]!
    const count = bounds[2 * y + 1]!
    for (let i = 0; i < rowLength; i++) {
      let sum = ONE / 2
      for (let t = 0; t < count; t++) sum += image.data[(min + t) * rowLength + i]! * weights[y * taps + t]!
      data[y * rowLength + i] = clip8(sum)
    }
  }
  return { width: image.width, height, channels: c, data }
}

/** Pillow's Image.resize((width, height), filter) for 8-bit images. */
export function resize(image: Raster, width: number, height: number, filter: Filter): Raster {
  const across = width === image.width ? image : horizontal(image, width, filter)
  return height === image.height ? across : vertical(across, height, filter)
}

/** Python's round(): halves go to the even neighbour. */
const roundHalfEven = (x: number): number => {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/** ADM's center_crop_arr(pil_image, size). */
export function centerCrop(image: Raster, size: number): Raster {
  let current = image
  while (Math.min(current.width, current.height) >= 2 * size) {
    current = resize(current, Math.floor(current.width / 2), Math.floor(current.height / 2), box)
  }
  const scale = size / Math.min(current.width, current.height)
  current = resize(current, roundHalfEven(current.width * scale), roundHalfEven(current.height * scale), bicubic)
  const top = Math.floor((current.height - size) / 2)
  const left = Math.floor((current.width - size) / 2)
  const c = current.channels
  const data = new Uint8Array(size * size * c)
  for (let y = 0; y < size; y++) {
    const from = ((top + y) * current.width + left) * c
    data.set(current.data.subarray(from, from + size * c), y * size * c)
  }
  return { width: size, height: size, channels: c, data }
}

/** RGB to greyscale as Pillow's convert("L"): ITU-R 601-2 luma in 16-bit fixed point. */
export function toGrey(image: Raster): Raster {
  if (image.channels === 1) return image
  const n = image.width * image.height
  const data = new Uint8Array(n)
  for (let i = 0; i < n; i++) {
    const [r, g, b] = [image.data[3 * i]!, image.data[3 * i + 1]!, image.data[3 * i + 2]!]
    data[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
  }
  return { width: image.width, height: image.height, channels: 1, data }
}
