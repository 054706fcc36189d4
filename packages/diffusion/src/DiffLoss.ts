/**
 * MAR's DiffLoss (models/diffloss.py): a Gaussian diffusion per token,
 * conditioned on the token's z. It is DiT's Gaussian diffusion with the
 * cosine schedule — create_diffusion("", "cosine") for training (1000 steps,
 * ε-prediction, LEARNED_RANGE, loss mse + vb) and create_diffusion(
 * num_sampling_steps, "cosine") for sampling — so it is GaussianDiffusion
 * itself, run on token rows shaped [N, 1, 1, C]: a 1×1 "image" per token,
 * over whose C values every mean_flat of the diffusion then runs, as the
 * reference's over its [N, C] rows.
 *
 * The loss is the per-row loss averaged over the masked rows only,
 * Σ loss·mask / Σ mask (DiffLoss.forward); sampling is p_sample_loop with a
 * temperature on the added noise, guided by forward_with_cfg.
 */
import { Effect } from "effect"
import { type Rng, tf } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import type * as Network from "./Network.ts"

export interface DiffLoss {
  /** train_diffusion: the cosine schedule over 1000 steps. */
  readonly train: GaussianDiffusion.GaussianDiffusion
  /** gen_diffusion: the same respaced to num_sampling_steps. */
  readonly generate: GaussianDiffusion.GaussianDiffusion
}

export const make = Effect.fn("DiffLoss.make")(function*(numSamplingSteps: string) {
  return {
    train: yield* GaussianDiffusion.make({ schedule: "cosine", learnSigma: true }),
    generate: yield* GaussianDiffusion.make({ schedule: "cosine", respacing: numSamplingSteps, learnSigma: true })
  } satisfies DiffLoss
})

/** The head with its conditions fixed: noised rows x [N, C] and network timesteps → [N, 2C] (ε, then v). */
export type Head = (x: tf.Tensor2D, t: ReadonlyArray<number>) => tf.Tensor2D

const asImages = (x: tf.Tensor2D): tf.Tensor4D => tf.reshape(x, [x.shape[0], 1, 1, x.shape[1]])
const asRows = (x: tf.Tensor4D): tf.Tensor2D => tf.reshape(x, [x.shape[0], x.shape[3]])

/** The head as GaussianDiffusion's denoiser of [N, 1, 1, C] rows. */
export const denoiser = (head: Head): Network.Denoiser => (x, t) => asImages(head(asRows(x), t))

/**
 * training_losses of every row: x_t = q_sample(target, t, noise), mse =
 * mean((ε − ε̂)²) and vb (the variance's bound, ε̂ stop-gradiented) per row.
 * `t` are chain steps (U{0..999}); target and noise [N, C].
 */
export function rowLosses(d: DiffLoss, head: Head, target: tf.Tensor2D, t: ArrayLike<number>, noise: tf.Tensor2D): GaussianDiffusion.Losses {
  return GaussianDiffusion.trainingLosses(d.train, denoiser(head), asImages(target), t, asImages(noise))
}

/** DiffLoss.forward's reduction: (loss · mask).sum() / mask.sum(), so the unmasked rows count for nothing. */
export const maskedMean = (perRow: tf.Tensor1D, mask: tf.Tensor1D): tf.Scalar => tf.div(tf.sum(tf.mul(perRow, mask)), tf.sum(mask)) as tf.Scalar

/**
 * forward_with_cfg for the rows that matter: the net on each row under its
 * condition and under the unconditional one, ε = ε_u + s·(ε_c − ε_u), and
 * v from the conditional half. (The reference carries an unconditional copy
 * of x through p_sample and drops it: forward_with_cfg only reads the first
 * half.) `both` evaluates the net on [x; x] with the conditions [c; u].
 */
export const guided = (both: Head, scale: number): Head => (x, t) => {
  const n = x.shape[0]
  const c = x.shape[1]
  const out = both(tf.concat([x, x]) as tf.Tensor2D, [...t, ...t])
  const eps = (from: number) => tf.slice(out, [from, 0], [n, c])
  const mixed = tf.add(eps(n), tf.mul(tf.sub(eps(0), eps(n)), scale))
  return tf.concat([mixed, tf.slice(out, [0, c], [n, c])], 1) as tf.Tensor2D
}

/**
 * DiffLoss.sample: p_sample_loop over the generation schedule from the
 * noise rows xT [N, C], noise at step i from `noise` at index i scaled by the
 * temperature, x̂_0 not clipped. Returns a new [N, C] tensor.
 */
export function sample(d: DiffLoss, head: Head, xT: tf.Tensor2D, options: { readonly noise: Rng.Stream; readonly temperature: number }): tf.Tensor2D {
  return tf.tidy(() => {
    const images = asImages(xT)
    return asRows(GaussianDiffusion.ddpmSample(d.generate, denoiser(head), images, {
      noise: options.noise,
      temperature: options.temperature,
      clipDenoised: false
    }))
  })
}
