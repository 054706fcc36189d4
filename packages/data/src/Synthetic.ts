/**
 * Synthetic labelled images for tests: class k is a square of a
 * class-specific brightness near the top-left corner (so a mirror image
 * differs from the original but keeps its class), jittered by up to two
 * pixels each way and overlaid with noise. Small models learn them in a few
 * steps.
 */
import { Rng } from "@tinyfusion/tensor"
import * as Images from "./Images.ts"

export interface Options {
  readonly classes: number
  readonly train: number
  readonly test: number
  /** Side of the square images. */
  readonly size: number
  readonly channels: number
  readonly seed: number
}

export function images(options: Omit<Options, "train" | "test"> & { readonly count: number }, split: string): Images.ImageSet {
  const { size, channels, count, classes } = options
  const side = Math.max(2, Math.floor(size / 4))
  const stream = Rng.stream(options.seed, `synthetic/${split}`)
  const labels = Rng.integers(stream, 0, count, 0, classes)
  const jitter = Rng.integers(stream, 1, 2 * count, 0, 3)
  const pixels = new Uint8Array(count * size * size * channels)
  for (let n = 0; n < count; n++) {
    const noise = Rng.integers(stream, 2 + n, size * size * channels, 0, 40)
    const k = labels[n]!
    const top = jitter[2 * n]!
    const left = jitter[2 * n + 1]!
    const level = 100 + Math.floor((150 * k) / Math.max(1, classes - 1))
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const inside = y >= top && y < top + side && x >= left && x < left + side
        for (let c = 0; c < channels; c++) {
          const i = (y * size + x) * channels + c
          pixels[n * size * size * channels + i] = Math.min(255, (inside ? level : 0) + noise[i]!)
        }
      }
    }
  }
  return Images.make({ height: size, width: size, channels }, pixels, labels)
}
