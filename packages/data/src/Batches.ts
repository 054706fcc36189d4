/**
 * Deterministic shuffled batches: batch `step` is a pure function of (seed,
 * step), so a resumed run at step s sees exactly the batches an uninterrupted
 * run sees. Each epoch is a fresh permutation (Rng stream "data/shuffle" at
 * the epoch); the last partial batch of an epoch is dropped (DiT's
 * drop_last); each image is mirrored with probability ½ (stream "data/flip"
 * at the step), the reference's RandomHorizontalFlip.
 */
import { Rng } from "@tinyfusion/tensor"
import * as Images from "./Images.ts"

export interface Options {
  readonly seed: number
  readonly batchSize: number
  /** Random horizontal flips (training); off for evaluation. */
  readonly flip: boolean
}

export interface Batch {
  /** [batchSize, H, W, C] floats in [-1, 1]. */
  readonly images: Float32Array
  readonly labels: Int32Array
  readonly shape: readonly [number, number, number, number]
  /** Dataset indices of the batch, in order. */
  readonly indices: Int32Array
  readonly flipped: ReadonlyArray<boolean>
}

export const perEpoch = (count: number, batchSize: number): number => Math.floor(count / batchSize)

/** The dataset order of epoch `epoch`. */
export const order = (seed: number, epoch: number, count: number): Int32Array =>
  Rng.permutation(Rng.stream(seed, "data/shuffle"), epoch, count)

/** Which images of batch `step` are mirrored. */
export const flips = (seed: number, step: number, batchSize: number): Array<boolean> =>
  Array.from(Rng.uniform(Rng.stream(seed, "data/flip"), step, batchSize), (u) => u < 0.5)

/** Dataset indices of batch `step`. */
export function indices(count: number, options: Options, step: number): Int32Array {
  const batches = perEpoch(count, options.batchSize)
  if (batches === 0) throw new Error(`${count} images cannot fill one batch of ${options.batchSize}`)
  const epoch = Math.floor(step / batches)
  const at = (step % batches) * options.batchSize
  return order(options.seed, epoch, count).slice(at, at + options.batchSize)
}

/** Batch `step` of a shuffled, optionally flipped, pass over the set. */
export function at(set: Images.ImageSet, options: Options, step: number): Batch {
  const idx = indices(set.count, options, step)
  const flipped = options.flip ? flips(options.seed, step, options.batchSize) : Array.from({ length: idx.length }, () => false)
  return {
    images: Images.signedBatch(set, idx, flipped),
    labels: Int32Array.from(idx, (i) => set.labels[i]!),
    shape: [options.batchSize, set.height, set.width, set.channels],
    indices: idx,
    flipped
  }
}

/** Images [start, start + size) in dataset order, unflipped (evaluation, encoding). */
export function range(set: Images.ImageSet, start: number, size: number): Batch {
  const n = Math.max(0, Math.min(size, set.count - start))
  const idx = Int32Array.from({ length: n }, (_, i) => start + i)
  return {
    images: Images.signedBatch(set, idx),
    labels: set.labels.slice(start, start + n),
    shape: [n, set.height, set.width, set.channels],
    indices: idx,
    flipped: Array.from({ length: n }, () => false)
  }
}
