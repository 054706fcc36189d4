/**
 * The functions samplers and losses call, and classifier-free guidance.
 *
 * A `Network` is the class-conditional model (x, t, y) → output; a
 * `Denoiser` is one with its labels (and guidance) fixed: (x, t) → output.
 * DiT outputs ε then v; SiT's network is the same DiT with the v half
 * dropped (the reference SiT's forward chunks it away), giving a velocity.
 */
import { Config, DiT } from "@tinyfusion/models"
import { type ParamTree, tf } from "@tinyfusion/tensor"

export type Network = (x: tf.Tensor4D, t: ReadonlyArray<number>, y: ReadonlyArray<number>) => tf.Tensor4D
export type Denoiser = (x: tf.Tensor4D, t: ReadonlyArray<number>) => tf.Tensor4D

/** DiT.forward as a Network (ε and v channels). */
export const dit = (config: Config.Config, params: ParamTree.ParamTree, options: DiT.Options = {}): Network => (x, t, y) =>
  DiT.forward(config, params, { x, t, y }, options)

/** The first C channels of a learn_sigma output: SiT's velocity. */
export const velocity = (config: Config.Config, output: tf.Tensor4D): tf.Tensor4D =>
  config.learnSigma ? tf.slice(output, [0, 0, 0, 0], [-1, -1, -1, config.inChannels]) : output

/** SiT's network: the DiT with its v channels dropped (t ∈ [0, 1], 1 = data). */
export const sit = (config: Config.Config, params: ParamTree.ParamTree, options: DiT.Options = {}): Network => (x, t, y) =>
  velocity(config, DiT.forward(config, params, { x, t, y }, options))

/** Which output channels guidance moves: the reference's first 3, or all C latent channels. */
export type GuidedChannels = "first-3" | "all"

export interface Guidance {
  readonly scale: number
  /** The label of the unconditional half (Config.nullClass). */
  readonly nullClass: number
  readonly channels: GuidedChannels
  /** Latent channels C (what "all" guides). */
  readonly inChannels: number
}

/**
 * forward_with_cfg: the batch runs twice, with its labels and with the null
 * class; on the guided channels out = uncond + s·(cond − uncond), the other
 * channels (the 4th latent channel in the reference, and v) come from the
 * conditional half. The reference guides 3 channels "for exact
 * reproducibility"; `all` is the standard form it leaves commented out.
 */
export const guided = (network: Network, labels: ReadonlyArray<number>, guidance: Guidance): Denoiser => (x, t) => {
  const b = x.shape[0]
  const both = network(tf.concat([x, x]) as tf.Tensor4D, [...t, ...t], [...labels, ...labels.map(() => guidance.nullClass)])
  const channels = guidance.channels === "all" ? guidance.inChannels : 3
  const total = both.shape[3]
  const cond = tf.slice(both, [0, 0, 0, 0], [b, -1, -1, -1])
  const uncond = tf.slice(both, [b, 0, 0, 0], [b, -1, -1, -1])
  const g = (u: tf.Tensor) => tf.slice(u, [0, 0, 0, 0], [-1, -1, -1, channels])
  const mixed = tf.add(g(uncond), tf.mul(tf.sub(g(cond), g(uncond)), guidance.scale))
  return (channels === total ? mixed : tf.concat([mixed, tf.slice(cond, [0, 0, 0, channels], [-1, -1, -1, total - channels])], 3)) as tf.Tensor4D
}

/** The denoiser for labels: guided when the scale is above 1 (as DiT's sample.py), plain otherwise. */
export const denoiser = (network: Network, labels: ReadonlyArray<number>, guidance?: Guidance): Denoiser =>
  guidance !== undefined && guidance.scale > 1 ? guided(network, labels, guidance) : (x, t) => network(x, t, labels)
