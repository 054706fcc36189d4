/**
 * One training step of a DiT (Gaussian diffusion) or SiT (linear transport):
 * the draws of a step (timesteps, noise, label dropout) from Rng streams at
 * the step index, the objective's loss, and the update (tensor's Update:
 * gradients, optional global-norm clipping, AdamW, EMA) of the trainable
 * parameters, pos_embed held fixed. Pure: returns a new state; the caller
 * releases the old one.
 *
 * `step` takes any scalar loss of the parameters, so distillation reuses it
 * with its own losses.
 */
import { Config, DiT } from "@tinyfusion/models"
import { AdamW, ParamTree, Rng, tf, tidy, Update } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Network from "./Network.ts"
import * as Transport from "./Transport.ts"

export type Objective =
  | { readonly _tag: "ddpm"; readonly diffusion: GaussianDiffusion.GaussianDiffusion }
  | { readonly _tag: "sit" }

export interface Draws {
  /** DDPM: chain steps in [0, T); SiT: times in (0, 1). */
  readonly t: ReadonlyArray<number>
  /** Standard normal, the latent batch's shape. */
  readonly noise: Float32Array
  /** The labels after dropout (dropped → the null class). */
  readonly labels: Int32Array
}

/**
 * The random numbers of one step, from streams `${purpose}/timesteps`,
 * `${purpose}/noise` and `${purpose}/label-drop` of the seed at index `step`:
 * t ~ U{0..T−1} (DDPM) or U(0, 1) (SiT), ε ~ N(0, I), labels dropped with
 * the config's class-dropout probability (torch.rand(B) < p).
 */
export function draws(
  objective: Objective,
  config: Config.Config,
  labels: ArrayLike<number>,
  options: { readonly seed: number; readonly step: number; readonly purpose?: string }
): Draws {
  const purpose = options.purpose ?? "train"
  const stream = (name: string) => Rng.stream(options.seed, `${purpose}/${name}`)
  const b = labels.length
  const t = objective._tag === "ddpm"
    ? Array.from(Rng.integers(stream("timesteps"), options.step, b, 0, objective.diffusion.numTimesteps))
    : Array.from(Rng.uniform(stream("timesteps"), options.step, b))
  const drop = Rng.uniform(stream("label-drop"), options.step, b)
  const size = b * config.inputSize * config.inputSize * config.inChannels
  return {
    t,
    noise: Rng.normal(stream("noise"), options.step, size),
    labels: Int32Array.from(labels, (y, i) => (drop[i]! < config.classDropoutProb ? Config.nullClass(config) : y))
  }
}

export interface LossTerms {
  /** The batch mean of the per-sample loss. */
  readonly loss: tf.Scalar
  /** Per sample: DDPM mse + vb, SiT velocity MSE. */
  readonly perSample: tf.Tensor1D
  /** The network's raw output (ε and v, or velocity), for distillation. */
  readonly output: tf.Tensor4D
}

/** The objective's loss of a DiT/SiT on latents x [B, H, W, C] with a step's draws. */
export function loss(
  objective: Objective,
  config: Config.Config,
  params: ParamTree.ParamTree,
  x: tf.Tensor4D,
  d: Draws,
  options: DiT.Options = {}
): LossTerms {
  const network = objective._tag === "ddpm" ? Network.dit(config, params, options) : Network.sit(config, params, options)
  return networkLoss(objective, network, x, d)
}

/**
 * The objective's loss of any network (DiT's ε and v, or SiT's velocity) with
 * a step's draws: what `loss` computes, for a network that does more than the
 * forward (one that keeps its hidden states for distillation).
 */
export function networkLoss(objective: Objective, network: Network.Network, x: tf.Tensor4D, d: Draws): LossTerms {
  const noise = tf.tensor4d(d.noise, x.shape)
  const denoiser = Network.denoiser(network, Array.from(d.labels))
  const terms = objective._tag === "ddpm"
    ? GaussianDiffusion.trainingLosses(objective.diffusion, denoiser, x, d.t, noise)
    : Transport.trainingLosses(denoiser, x, d.t, noise)
  return { loss: tf.mean(terms.loss), perSample: terms.loss, output: terms.output }
}

/** The update's settings with an EMA (DiT: 0.9999). */
export interface Hyper extends Update.Settings {
  readonly emaDecay: number
}

export interface State {
  /** Every parameter, pos_embed included. */
  readonly params: ParamTree.ParamTree
  readonly ema: ParamTree.ParamTree
  readonly optimiser: AdamW.State
}

/** The start of training: EMA = a copy of the params, zero moments for the trainable ones. */
export const init = (params: ParamTree.ParamTree): State => ({
  params,
  ema: ParamTree.clone(params),
  optimiser: AdamW.init(DiT.split(params).trainable)
})

/** Releases every tensor of a state. */
export const dispose = (state: State): void =>
  ParamTree.dispose([state.params, state.ema, state.optimiser.m, state.optimiser.v])

/**
 * One update on `lossOf(params)`: gradients of the trainable parameters,
 * clipping, AdamW (learning rates × lrScale) and the EMA of the trainable
 * parameters. The frozen pos_embed is carried over (new handles on the same
 * data, so releasing the old state does not release it).
 */
export function step(
  hyper: Hyper,
  state: State,
  lossOf: (params: ParamTree.ParamTree) => tf.Scalar,
  lrScale = 1
): { readonly state: State; readonly loss: tf.Scalar; readonly gradNorm: tf.Scalar } {
  return tidy(() => {
    const { trainable, frozen } = DiT.split(state.params)
    const ema = DiT.split(state.ema)
    const next = Update.apply(hyper, { params: trainable, optimiser: state.optimiser, ema: ema.trainable }, (p) => lossOf(DiT.join(p, frozen)), lrScale)
    return {
      state: {
        params: DiT.join(next.state.params, ParamTree.clone(frozen)),
        ema: DiT.join(next.state.ema!, ParamTree.clone(ema.frozen)),
        optimiser: next.state.optimiser
      },
      loss: next.loss,
      gradNorm: next.gradNorm
    }
  })
}

/** A full pre-training step of a DiT or SiT on a latent batch: draws, loss, update. */
export function trainStep(
  objective: Objective,
  config: Config.Config,
  hyper: Hyper,
  state: State,
  batch: { readonly x: tf.Tensor4D; readonly labels: ArrayLike<number> },
  at: { readonly seed: number; readonly step: number; readonly lrScale?: number }
): { readonly state: State; readonly loss: tf.Scalar; readonly gradNorm: tf.Scalar } {
  const d = draws(objective, config, batch.labels, at)
  return step(hyper, state, (p) => loss(objective, config, p, batch.x, d).loss, at.lrScale ?? 1)
}
