/**
 * Where mask learning and calibration get latents: batch `step` of a run
 * seeded by `seed`, a pure function of both (so a resumed run sees the same
 * data). packages/data's LatentDataset service has this shape; `fromArrays`
 * serves latents held in memory (synthetic fixtures, a stored batch).
 */

export interface LatentBatch {
  /** [batchSize, H, W, C], NHWC. */
  readonly latents: Float32Array
  readonly labels: Int32Array
  readonly shape: readonly [number, number, number, number]
}

export interface LatentSource {
  readonly batch: (options: { readonly seed: number; readonly batchSize: number }, step: number) => LatentBatch
}

/**
 * Latents [N, H, W, C] with labels, served in order: batch `step` holds
 * items (step·B + i) mod N, so consecutive batches walk the set in epochs.
 * The order does not depend on the seed.
 */
export function fromArrays(latents: Float32Array, labels: Int32Array, shape: readonly [number, number, number, number]): LatentSource {
  const [n, h, w, c] = shape
  const per = h * w * c
  if (latents.length !== n * per || labels.length !== n) throw new Error(`${n} latents of ${h}×${w}×${c} need ${n * per} values and ${n} labels`)
  return {
    batch: ({ batchSize }, step) => {
      const out = new Float32Array(batchSize * per)
      const ys = new Int32Array(batchSize)
      for (let i = 0; i < batchSize; i++) {
        const item = (step * batchSize + i) % n
        out.set(latents.subarray(item * per, (item + 1) * per), i * per)
        ys[i] = labels[item]!
      }
      return { latents: out, labels: ys, shape: [batchSize, h, w, c] }
    }
  }
}
