/**
 * MAR's training objective (MAR.forward): per sample a random generation
 * order; one masking ratio per batch from the truncated normal on
 * [mask_ratio_min, 1] centred at 1 with σ 0.25, ⌈T·ratio⌉ tokens masked
 * (the first of each order); the class embedding replaced by fake_latent
 * with probability label_drop_prob; the encoder sees the unmasked tokens,
 * the decoder gives every token a condition z, and DiffLoss is trained on
 * every token repeated diffusion_batch_mul times, averaged over the masked
 * rows only.
 *
 * As for DiT, every random number of a step comes from Rng streams at the
 * step index (`${purpose}/orders/b`, `/mask-ratio`, `/timesteps`, `/noise`,
 * `/label-drop`, and `/dropout/<module>` for training's dropout), so a
 * resumed run and a teacher's forward see the same draws.
 */
import { Mar, MarConfig } from "@tinyfusion/models"
import { type HostTensor, type ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as DiffLoss from "./DiffLoss.ts"
import type * as Trainer from "./Trainer.ts"
import type * as Training from "./Training.ts"

type Config = MarConfig.MarConfig

/** A step's draws: Training.Draws over the loss rows (t and noise per row), the orders and the masked count. */
export interface Draws extends Training.Draws {
  /** Per sample a permutation of the T tokens: the generation order (B × T). */
  readonly orders: Int32Array
  /** Tokens masked in every sample: the first `masked` of each order. */
  readonly masked: number
  /** Where the draws came from: training's dropout draws its masks there too. */
  readonly at: { readonly seed: number; readonly step: number; readonly purpose: string }
}

/** Whether a Training.Draws carries MAR's masking. */
export const isMar = (d: Training.Draws): d is Draws => "orders" in d && "masked" in d

/** Complementary error function (Numerical Recipes' erfcc, relative error below 1.2e-7). */
const erfc = (x: number): number => {
  const z = Math.abs(x)
  const t = 1 / (1 + 0.5 * z)
  const r = t * Math.exp(
    -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
      t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
  )
  return x >= 0 ? r : 2 - r
}

/** Φ, the standard normal CDF. */
const normalCdf = (x: number): number => 0.5 * erfc(-x / Math.SQRT2)

/** Φ⁻¹ (Acklam's rational approximation, then one Newton step on Φ). */
const normalQuantile = (p: number): number => {
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239]
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1]
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783]
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416]
  const tail = (q: number) => (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1)
  let x: number
  if (p < 0.02425) x = tail(Math.sqrt(-2 * Math.log(p)))
  else if (p > 1 - 0.02425) x = -tail(Math.sqrt(-2 * Math.log(1 - p)))
  else {
    const q = p - 0.5
    const r = q * q
    x = ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
      (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1)
  }
  return x - (normalCdf(x) - p) * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2)
}

/**
 * The masking ratio at a uniform u ∈ (0, 1): the u-quantile of
 * truncnorm((min − 1)/0.25, 0, loc = 1, scale = 0.25), MAR's mask_ratio_generator.
 */
export const maskRatio = (maskRatioMin: number, u: number): number => {
  const lo = normalCdf((maskRatioMin - 1) / 0.25)
  const hi = 0.5
  return 1 + 0.25 * Math.min(0, normalQuantile(lo + u * (hi - lo)))
}

/** Rows of the loss: every token of every sample, diffusion_batch_mul times (row = rep·B·T + b·T + token). */
export const rows = (config: Config, batch: number): number => batch * MarConfig.tokens(config) * config.diffusionBatchMul

/** The draws of a training step for a batch's labels. */
export function draws(config: Config, labels: ArrayLike<number>, at: { readonly seed: number; readonly step: number; readonly purpose?: string }): Draws {
  const purpose = at.purpose ?? "train"
  const stream = (name: string) => Rng.stream(at.seed, `${purpose}/${name}`)
  const b = labels.length
  const tokens = MarConfig.tokens(config)
  const orders = new Int32Array(b * tokens)
  for (let i = 0; i < b; i++) orders.set(Rng.permutation(stream(`orders/${i}`), at.step, tokens), i * tokens)
  const ratio = maskRatio(config.maskRatioMin, Rng.uniform(stream("mask-ratio"), at.step, 1)[0]!)
  const n = rows(config, b)
  const drop = Rng.uniform(stream("label-drop"), at.step, b)
  return {
    t: Array.from(Rng.integers(stream("timesteps"), at.step, n, 0, 1000)),
    noise: Rng.normal(stream("noise"), at.step, n * MarConfig.tokenDim(config)),
    labels: Int32Array.from(labels, (y, i) => (drop[i]! < config.labelDropProb ? MarConfig.nullClass(config) : y)),
    orders,
    masked: Math.ceil(tokens * ratio),
    at: { seed: at.seed, step: at.step, purpose }
  }
}

/** The token mask of a step's draws. */
export const maskOf = (config: Config, d: Draws): Mar.Mask =>
  Mar.maskByOrder(d.orders, d.labels.length, MarConfig.tokens(config), d.masked)

/**
 * Training's dropout for a step: each module's keep mask from the stream
 * `${purpose}/dropout/<module path>` at the step, kept values scaled by 1/(1 − p).
 */
export const dropout = (at: Draws["at"]): Mar.Dropout => (path, x, rate) => {
  if (rate === 0) return x
  const u = Rng.uniform(Rng.stream(at.seed, `${at.purpose}/dropout/${path}`), at.step, x.size)
  const keep = Float32Array.from(u, (v) => (v >= rate ? 1 / (1 - rate) : 0))
  return tf.mul(x, tf.tensor(keep, x.shape))
}

export interface LossTerms {
  /** Σ loss·mask / Σ mask over the rows. */
  readonly loss: tf.Scalar
  /** mse + vb of every row. */
  readonly perRow: tf.Tensor1D
  /** 1 for the rows of masked tokens. */
  readonly mask: tf.Tensor1D
  /** The head's output per row [rows, 2C] (ε, v), for distillation. */
  readonly output: tf.Tensor2D
  /** Every block's input and output, and z. */
  readonly hidden: Mar.Hidden
}

/** Token rows [B·T, F] repeated diffusion_batch_mul times (torch's .repeat(mul, 1)). */
const repeatRows = (x: tf.Tensor, mul: number): tf.Tensor2D => {
  const flat = tf.reshape(x, [-1, x.shape[x.shape.length - 1]!]) as tf.Tensor2D
  return mul === 1 ? flat : tf.tile(flat, [mul, 1]) as tf.Tensor2D
}

/**
 * MAR.forward's loss on latents x [B, H, W, C] with a step's draws: the
 * network (gates, Linear hook, dropout as given) and DiffLoss on every row.
 */
export function loss(
  diffloss: DiffLoss.DiffLoss,
  config: Config,
  params: ParamTree.ParamTree,
  x: tf.Tensor4D,
  d: Draws,
  options: Mar.Options = {}
): LossTerms {
  const b = x.shape[0]
  const tokens = Mar.patchify(x, config.patchSize)
  const m = maskOf(config, d)
  const hidden = Mar.forwardHidden(config, params, { tokens, mask: m, labels: d.labels }, options)
  const mul = config.diffusionBatchMul
  const target = repeatRows(tokens, mul)
  const z = repeatRows(hidden.z, mul)
  const mask = tf.tile(tf.tensor1d(Float32Array.from(m.values)), [mul]) as tf.Tensor1D
  const n = rows(config, b)
  const noise = tf.tensor2d(d.noise, [n, MarConfig.tokenDim(config)])
  const head: DiffLoss.Head = (xt, t) => Mar.head(params, xt, t, z, options.linear)
  const terms = DiffLoss.rowLosses(diffloss, head, target, d.t, noise)
  return {
    loss: DiffLoss.maskedMean(terms.loss, mask),
    perRow: terms.loss,
    mask,
    output: tf.reshape(terms.output, [n, -1]) as tf.Tensor2D,
    hidden
  }
}

/** Draws of a step, checked to be MAR's (a task or stack of another family would hand over plain ones). */
export const marDraws = (d: Training.Draws): Draws => {
  if (!isMar(d)) throw new Error("MAR's loss needs MAR's draws (orders and masked count)")
  return d
}

/** Plain MAR training on the shared loop (pre-training, fine-tuning), dropout as the config says. */
export const task = (diffloss: DiffLoss.DiffLoss, config: Config, init: HostTensor.HostTree): Trainer.Task => ({
  data: config,
  init,
  draws: (labels, at) => draws(config, labels, at),
  loss: (batch) => {
    const d = marDraws(batch.draws)
    return (params) => ({ loss: loss(diffloss, config, params, batch.x, d, { dropout: dropout(d.at) }).loss, terms: {} })
  }
})
