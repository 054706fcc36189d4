/**
 * PNG files in and out (pngjs), and tiling pictures into a grid: what every
 * stage that shows images (reconstructions, samples) writes.
 */
import { Effect, Schema } from "effect"
import pngjs from "pngjs"

/** An 8-bit picture, row-major HWC, 1 (grey) or 3 (RGB) channels. */
export interface Raster {
  readonly width: number
  readonly height: number
  readonly channels: 1 | 3
  readonly data: Uint8Array
}

export class PngError extends Schema.TaggedError<PngError>()("PngError", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.file} is not a readable PNG: ${this.reason}`
  }
}

export const raster = (width: number, height: number, channels: 1 | 3, data: Uint8Array): Raster => {
  if (data.length !== width * height * channels) {
    throw new Error(`a ${width}×${height}×${channels} raster needs ${width * height * channels} bytes, got ${data.length}`)
  }
  return { width, height, channels, data }
}

const GREY = 0
const RGB = 2

/** Encodes a raster as an 8-bit greyscale or RGB PNG. */
export function encode(image: Raster): Uint8Array {
  const type = image.channels === 1 ? GREY : RGB
  const png = new pngjs.PNG({ width: image.width, height: image.height })
  png.data = Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength)
  const out = pngjs.PNG.sync.write(png, { colorType: type, inputColorType: type, inputHasAlpha: false })
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
}

/**
 * Decodes any PNG to RGB (alpha dropped, as PIL's convert("RGB"); 16-bit
 * samples scaled to 8). `file` names the source in errors.
 */
export const decode = (bytes: Uint8Array, file: string): Effect.Effect<Raster, PngError> =>
  Effect.try({
    try: () => {
      const png = pngjs.PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
      const rgb = new Uint8Array(png.width * png.height * 3)
      for (let i = 0; i < png.width * png.height; i++) {
        rgb[3 * i] = png.data[4 * i]!
        rgb[3 * i + 1] = png.data[4 * i + 1]!
        rgb[3 * i + 2] = png.data[4 * i + 2]!
      }
      return raster(png.width, png.height, 3, rgb)
    },
    catch: (e) => new PngError({ file, reason: (e as Error).message })
  })

/**
 * Tiles equally sized rasters row by row, `columns` per row, with `gap`
 * pixels of `background` between and around them.
 */
export function grid(
  images: ReadonlyArray<Raster>,
  columns: number,
  options: { readonly gap?: number; readonly background?: number } = {}
): Raster {
  const first = images[0]
  if (first === undefined) throw new Error("grid of no images")
  const gap = options.gap ?? 2
  const { width: w, height: h, channels: c } = first
  const rows = Math.ceil(images.length / columns)
  const width = columns * w + (columns + 1) * gap
  const height = rows * h + (rows + 1) * gap
  const data = new Uint8Array(width * height * c).fill(options.background ?? 255)
  images.forEach((image, i) => {
    if (image.width !== w || image.height !== h || image.channels !== c) {
      throw new Error(`image ${i} is ${image.width}×${image.height}×${image.channels}, the first is ${w}×${h}×${c}`)
    }
    const top = gap + Math.floor(i / columns) * (h + gap)
    const left = gap + (i % columns) * (w + gap)
    for (let y = 0; y < h; y++) {
      data.set(image.data.subarray(y * w * c, (y + 1) * w * c), ((top + y) * width + left) * c)
    }
  })
  return raster(width, height, c, data)
}
