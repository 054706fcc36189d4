/**
 * Calibration loss (paper §4.3, Table 3, Figure 5): the diffusion loss of a
 * model — whole, with blocks gated off, or with only some blocks kept — on a
 * fixed calibration set. The latents, labels, noise and timesteps are drawn
 * once, from Rng streams, so every candidate model is scored on exactly the
 * same numbers and a loss is a pure function of the weights and the mask.
 *
 * The labels are used as given (no label dropout): the calibration set is a
 * class-conditional batch like the evaluation's, not a training batch.
 */
import { Effect } from "effect"
import { Training } from "@tinyfusion/diffusion"
import { type Config, DiT, type Linear } from "@tinyfusion/models"
import { Compute, type ComputeError, type ParamTree, tf } from "@tinyfusion/tensor"

export interface CalibrationSet {
  /** [N, H, W, C]. */
  readonly shape: readonly [number, number, number, number]
  readonly latents: Float32Array
  readonly labels: Int32Array
  /** Per sample: DDPM chain steps in [0, T), SiT times in (0, 1). */
  readonly t: ReadonlyArray<number>
  /** Standard normal, the latents' shape. */
  readonly noise: Float32Array
}

/**
 * The calibration set of latents and labels: timesteps and noise from the
 * streams `calibration/timesteps` and `calibration/noise` of `seed` at index 0.
 */
export function make(
  objective: Training.Objective,
  config: Config.Config,
  batch: { readonly latents: Float32Array; readonly labels: ArrayLike<number>; readonly shape: readonly [number, number, number, number] },
  seed: number
): CalibrationSet {
  const [n, h, w, c] = batch.shape
  if (h !== config.inputSize || w !== config.inputSize || c !== config.inChannels) {
    throw new Error(`calibration latents ${h}×${w}×${c} do not fit the model's ${config.inputSize}×${config.inputSize}×${config.inChannels}`)
  }
  if (batch.latents.length !== n * h * w * c || batch.labels.length !== n) {
    throw new Error(`calibration batch of ${n} needs ${n * h * w * c} latent values and ${n} labels`)
  }
  const draws = Training.draws(objective, config, batch.labels, { seed, step: 0, purpose: "calibration" })
  return { shape: batch.shape, latents: batch.latents, labels: Int32Array.from(batch.labels), t: draws.t, noise: draws.noise }
}

/** Samples [from, to) of the set: latents and the step's draws. */
export function slice(set: CalibrationSet, from: number, to: number): { readonly x: tf.Tensor4D; readonly draws: Training.Draws } {
  const [, h, w, c] = set.shape
  const per = h * w * c
  return {
    x: tf.tensor4d(set.latents.subarray(from * per, to * per), [to - from, h, w, c]),
    draws: { t: set.t.slice(from, to), noise: set.noise.subarray(from * per, to * per), labels: set.labels.subarray(from, to) }
  }
}

export interface Options {
  /** Only these blocks (ascending), renumbered: the pruned model. */
  readonly kept?: ReadonlyArray<number>
  /** One gate per block for every sample (x ← m·f(x) + (1−m)·x): the gated model. */
  readonly mask?: ReadonlyArray<number>
  /** Replaces every nn.Linear (a LoRA-updated model). */
  readonly linear?: Linear.Apply
  /** Samples per forward; default 64. */
  readonly batchSize?: number
}

/**
 * The mean per-sample loss over the set (accumulated in float64). Non-finite
 * losses are returned as they are: deciding what they mean is the caller's.
 */
export const evaluate = Effect.fn("CalibrationLoss.evaluate")(function*(
  objective: Training.Objective,
  config: Config.Config,
  params: ParamTree.ParamTree,
  set: CalibrationSet,
  options: Options = {}
): Effect.fn.Return<number, ComputeError, Compute> {
  const compute = yield* Compute
  if (options.kept !== undefined && options.mask !== undefined) throw new Error("a calibration loss takes kept blocks or a mask, not both")
  if (options.mask !== undefined && options.mask.length !== config.depth) {
    throw new Error(`a mask of ${options.mask.length} gates for depth ${config.depth}`)
  }
  const model = options.kept === undefined ? { config, params } : DiT.keepBlocks(config, params, options.kept)
  const n = set.shape[0]
  const size = options.batchSize ?? 64
  let total = 0
  for (let from = 0; from < n; from += size) {
    const to = Math.min(n, from + size)
    const sum = yield* compute.scoped(Effect.gen(function*() {
      const { x, draws } = slice(set, from, to)
      const gates = options.mask === undefined
        ? undefined
        : tf.tile(tf.tensor2d([...options.mask], [1, config.depth]), [to - from, 1]) as tf.Tensor2D
      const forward: DiT.Options = {
        ...(gates === undefined ? {} : { gates }),
        ...(options.linear === undefined ? {} : { linear: options.linear })
      }
      const terms = Training.loss(objective, model.config, model.params, x, draws, forward)
      return (yield* compute.read(tf.sum(terms.perSample)))[0]!
    }))
    total += sum
  }
  return total / n
})
