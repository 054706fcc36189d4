/**
 * Extracted latents as training data for the diffusion model: batches in a
 * deterministic shuffled order (the image datasets' "data/shuffle" epochs,
 * dropping the last partial batch), each item taking its mirrored copy with
 * probability ½ (stream "latents/flip" at the step): the reference's
 * horizontal-flip augmentation, moved before encoding.
 */
import { Context, Effect, Layer } from "effect"
import { Rng } from "@tinyfusion/tensor"
import * as Batches from "./Batches.ts"
import * as LatentShards from "./LatentShards.ts"

export interface LatentBatch {
  /** [batchSize, h, w, c], already multiplied by the scale factor. */
  readonly latents: Float32Array
  readonly labels: Int32Array
  readonly shape: readonly [number, number, number, number]
  /** Which copy each item took (true: the mirror). */
  readonly mirrored: ReadonlyArray<boolean>
}

export class LatentDataset extends Context.Service<LatentDataset, {
  readonly count: number
  readonly classes: number
  readonly latentShape: readonly [number, number, number]
  /** The scale factor the latents were multiplied by (divide by it before decoding). */
  readonly scale: number
  /** Batch `step` of a run seeded by `seed`: a pure function of both. */
  readonly batch: (options: { readonly seed: number; readonly batchSize: number }, step: number) => LatentBatch
}>()("@tinyfusion/data/LatentDataset") {
  /** The shards extracted into `dir` (LatentShards.extract), held in memory. */
  static fromDirectory(dir: string): Layer.Layer<LatentDataset, LatentShards.LatentShardsError> {
    return Layer.effect(LatentDataset, LatentShards.load(dir).pipe(Effect.map(fromLoaded)))
  }
}

function fromLoaded(loaded: LatentShards.Loaded): LatentDataset["Service"] {
  const { manifest } = loaded
  const [h, w, c] = manifest.latentShape
  const per = h * w * c
  return LatentDataset.of({
    count: manifest.count,
    classes: manifest.classes,
    latentShape: manifest.latentShape,
    scale: manifest.scale,
    batch: (options, step) => {
      const indices = Batches.indices(manifest.count, { ...options, flip: false }, step)
      const mirrored = Array.from(Rng.uniform(Rng.stream(options.seed, "latents/flip"), step, options.batchSize), (u) => u < 0.5)
      const latents = new Float32Array(options.batchSize * per)
      indices.forEach((index, i) => {
        const from = (index * 2 + (mirrored[i] ? 1 : 0)) * per
        latents.set(loaded.latents.subarray(from, from + per), i * per)
      })
      return {
        latents,
        labels: Int32Array.from(indices, (index) => loaded.labels[index]!),
        shape: [options.batchSize, h, w, c],
        mirrored
      }
    }
  })
}
