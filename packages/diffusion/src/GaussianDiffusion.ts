/**
 * DiT's Gaussian diffusion (from ADM, via create_diffusion): linear betas (or
 * MAR's DiffLoss head: cosine) in float64, optional timestep respacing, ε-prediction with the LEARNED_RANGE
 * variance (or FIXED_LARGE without learned σ), the training loss ε-MSE + vb
 * (vb in bits with the mean stop-gradiented, the discretised Gaussian NLL at
 * t = 0), and the DDPM and DDIM samplers.
 *
 * Every coefficient table is float64 on the host; a batch's coefficients are
 * gathered there for its (host-known) timesteps and uploaded as [B, 1, 1, 1].
 * Tensors are NHWC; the model output holds ε then v along the channel axis.
 */
import { Effect } from "effect"
import { Gradients, Rng, tf } from "@tinyfusion/tensor"
import * as Likelihood from "./Likelihood.ts"
import type * as Network from "./Network.ts"
import * as Respacing from "./Respacing.ts"

export interface Options {
  /** Steps of the base schedule (DiT: 1000). */
  readonly steps?: number
  /** Kept steps, e.g. "250", "ddim50", "10,15,20"; "" keeps all (training). */
  readonly respacing?: string
  /** Model output carries v (2·C channels) and the variance is LEARNED_RANGE; otherwise FIXED_LARGE. */
  readonly learnSigma?: boolean
  /** get_named_beta_schedule's name: DiT's "linear" (default) or "cosine" (MAR's DiffLoss). */
  readonly schedule?: "linear" | "cosine"
}

export interface GaussianDiffusion {
  readonly numTimesteps: number
  /** The original timestep of each kept step: what the network sees (SpacedDiffusion's timestep_map). */
  readonly timestepMap: ReadonlyArray<number>
  readonly learnSigma: boolean
  readonly betas: Float64Array
  readonly alphasCumprod: Float64Array
  readonly alphasCumprodPrev: Float64Array
  readonly sqrtAlphasCumprod: Float64Array
  readonly sqrtOneMinusAlphasCumprod: Float64Array
  readonly sqrtRecipAlphasCumprod: Float64Array
  readonly sqrtRecipm1AlphasCumprod: Float64Array
  readonly posteriorVariance: Float64Array
  /** log β̃ with its first entry (0 at t = 0) replaced by the second. */
  readonly posteriorLogVarianceClipped: Float64Array
  readonly posteriorMeanCoef1: Float64Array
  readonly posteriorMeanCoef2: Float64Array
  readonly logBetas: Float64Array
  /** FIXED_LARGE variance: [β̃_1, β_1, β_2, …] and its log. */
  readonly fixedLargeVariance: Float64Array
  readonly fixedLargeLogVariance: Float64Array
}

/** numpy.linspace(start, stop, n) in float64: start + i·step, the last value exactly stop. */
export function linspace(start: number, stop: number, n: number): Float64Array {
  const out = new Float64Array(n)
  const step = (stop - start) / (n - 1)
  for (let i = 0; i < n; i++) out[i] = i * step + start
  if (n > 1) out[n - 1] = stop
  return out
}

/** get_named_beta_schedule("linear", n): linspace(scale·1e−4, scale·0.02, n), scale = 1000/n. */
export const linearBetas = (steps: number): Float64Array => {
  const scale = 1000 / steps
  return linspace(scale * 0.0001, scale * 0.02, steps)
}

/**
 * get_named_beta_schedule("cosine", n) (Nichol & Dhariwal): β_i = min(1 −
 * ᾱ((i+1)/n)/ᾱ(i/n), 0.999) with ᾱ(t) = cos²((t + 0.008)/1.008 · π/2).
 */
export const cosineBetas = (steps: number): Float64Array => {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2
  return Float64Array.from({ length: steps }, (_, i) => Math.min(1 - alphaBar((i + 1) / steps) / alphaBar(i / steps), 0.999))
}

const map = (a: Float64Array, f: (v: number, i: number) => number) => Float64Array.from(a, f)

/** The tables of a diffusion with the given betas (GaussianDiffusion.__init__). */
export function fromBetas(betas: Float64Array, timestepMap: ReadonlyArray<number>, learnSigma: boolean): GaussianDiffusion {
  const n = betas.length
  const alphasCumprod = new Float64Array(n)
  let acc = 1
  for (let i = 0; i < n; i++) alphasCumprod[i] = acc *= 1 - betas[i]!
  const alphasCumprodPrev = map(alphasCumprod, (_, i) => (i === 0 ? 1 : alphasCumprod[i - 1]!))
  const posteriorVariance = map(betas, (b, i) => (b * (1 - alphasCumprodPrev[i]!)) / (1 - alphasCumprod[i]!))
  const fixedLargeVariance = map(betas, (b, i) => (i === 0 ? posteriorVariance[1] ?? b : b))
  return {
    numTimesteps: n,
    timestepMap,
    learnSigma,
    betas,
    alphasCumprod,
    alphasCumprodPrev,
    sqrtAlphasCumprod: map(alphasCumprod, Math.sqrt),
    sqrtOneMinusAlphasCumprod: map(alphasCumprod, (a) => Math.sqrt(1 - a)),
    sqrtRecipAlphasCumprod: map(alphasCumprod, (a) => Math.sqrt(1 / a)),
    sqrtRecipm1AlphasCumprod: map(alphasCumprod, (a) => Math.sqrt(1 / a - 1)),
    posteriorVariance,
    posteriorLogVarianceClipped: map(posteriorVariance, (v, i) => Math.log(i === 0 ? posteriorVariance[1] ?? v : v)),
    posteriorMeanCoef1: map(betas, (b, i) => (b * Math.sqrt(alphasCumprodPrev[i]!)) / (1 - alphasCumprod[i]!)),
    posteriorMeanCoef2: map(betas, (b, i) => ((1 - alphasCumprodPrev[i]!) * Math.sqrt(1 - b)) / (1 - alphasCumprod[i]!)),
    logBetas: map(betas, Math.log),
    fixedLargeVariance,
    fixedLargeLogVariance: map(fixedLargeVariance, Math.log)
  }
}

/**
 * create_diffusion(timestep_respacing, noise_schedule, learn_sigma, diffusion_steps):
 * the respaced betas are 1 − ᾱ_k/ᾱ_prev over the kept steps.
 */
export const make = Effect.fn("GaussianDiffusion.make")(function*(options: Options = {}) {
  const steps = options.steps ?? 1000
  const base = options.schedule === "cosine" ? cosineBetas(steps) : linearBetas(steps)
  const kept = yield* Effect.try({
    try: () => Respacing.spaceTimesteps(steps, options.respacing ?? ""),
    catch: (e) => e as Respacing.InvalidRespacing
  })
  const full = fromBetas(base, [], false)
  let last = 1
  const betas = Float64Array.from(kept, (k) => {
    const beta = 1 - full.alphasCumprod[k]! / last
    last = full.alphasCumprod[k]!
    return beta
  })
  return fromBetas(betas, kept, options.learnSigma ?? true)
})

/** table[t_b] for every sample, as [B, 1, 1, 1] float32 (computed in float64, rounded once). */
export const coefficient = (table: Float64Array, t: ArrayLike<number>): tf.Tensor4D =>
  tf.tensor4d(Float32Array.from(t, (ti) => table[ti]!), [t.length, 1, 1, 1])

/** The network's timesteps for chain steps t. */
export const networkTimesteps = (d: GaussianDiffusion, t: ArrayLike<number>): Array<number> =>
  Array.from(t, (ti) => d.timestepMap[ti]!)

/** x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. */
export const qSample = (d: GaussianDiffusion, x0: tf.Tensor, t: ArrayLike<number>, noise: tf.Tensor): tf.Tensor4D =>
  tf.add(tf.mul(coefficient(d.sqrtAlphasCumprod, t), x0), tf.mul(coefficient(d.sqrtOneMinusAlphasCumprod, t), noise)) as tf.Tensor4D

/** q(x_{t−1} | x_t, x_0): mean, variance and clipped log variance ([B, 1, 1, 1] for the last two). */
export const qPosterior = (d: GaussianDiffusion, x0: tf.Tensor, xt: tf.Tensor, t: ArrayLike<number>) => ({
  mean: tf.add(tf.mul(coefficient(d.posteriorMeanCoef1, t), x0), tf.mul(coefficient(d.posteriorMeanCoef2, t), xt)) as tf.Tensor4D,
  variance: coefficient(d.posteriorVariance, t),
  logVariance: coefficient(d.posteriorLogVarianceClipped, t)
})

/** x̂_0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε. */
export const predictXstartFromEps = (d: GaussianDiffusion, xt: tf.Tensor, t: ArrayLike<number>, eps: tf.Tensor): tf.Tensor4D =>
  tf.sub(tf.mul(coefficient(d.sqrtRecipAlphasCumprod, t), xt), tf.mul(coefficient(d.sqrtRecipm1AlphasCumprod, t), eps)) as tf.Tensor4D

/** ε = (√(1/ᾱ_t)·x_t − x̂_0) / √(1/ᾱ_t − 1). */
export const predictEpsFromXstart = (d: GaussianDiffusion, xt: tf.Tensor, t: ArrayLike<number>, x0: tf.Tensor): tf.Tensor4D =>
  tf.div(tf.sub(tf.mul(coefficient(d.sqrtRecipAlphasCumprod, t), xt), x0), coefficient(d.sqrtRecipm1AlphasCumprod, t)) as tf.Tensor4D

/** The ε and v halves of a model output (v undefined without learned σ). */
export function splitOutput(d: GaussianDiffusion, output: tf.Tensor4D, channels: number): { readonly eps: tf.Tensor4D; readonly v: tf.Tensor4D | undefined } {
  const expected = d.learnSigma ? 2 * channels : channels
  if (output.shape[3] !== expected) throw new Error(`model output has ${output.shape[3]} channels, expected ${expected} for ${channels}-channel latents`)
  if (!d.learnSigma) return { eps: output, v: undefined }
  const [eps, v] = tf.split(output, 2, 3) as [tf.Tensor4D, tf.Tensor4D]
  return { eps, v }
}

export interface MeanVariance {
  readonly mean: tf.Tensor4D
  readonly logVariance: tf.Tensor4D
  readonly predXstart: tf.Tensor4D
}

/**
 * p(x_{t−1} | x_t) from a model output: LEARNED_RANGE log σ² = frac·log β_t +
 * (1−frac)·log β̃_t (clipped), frac = (v+1)/2; the mean is the posterior mean
 * at x̂_0 from ε (clamped to [−1, 1] when clipDenoised).
 */
export function pMeanVariance(
  d: GaussianDiffusion,
  output: tf.Tensor4D,
  xt: tf.Tensor4D,
  t: ArrayLike<number>,
  options: { readonly clipDenoised?: boolean } = {}
): MeanVariance {
  const { eps, v } = splitOutput(d, output, xt.shape[3])
  const logVariance = v === undefined
    ? tf.mul(coefficient(d.fixedLargeLogVariance, t), tf.onesLike(xt)) as tf.Tensor4D
    : (() => {
      const frac = tf.div(tf.add(v, 1), 2)
      return tf.add(tf.mul(frac, coefficient(d.logBetas, t)), tf.mul(tf.sub(1, frac), coefficient(d.posteriorLogVarianceClipped, t))) as tf.Tensor4D
    })()
  const x0 = predictXstartFromEps(d, xt, t, eps)
  const predXstart = options.clipDenoised === true ? tf.clipByValue(x0, -1, 1) as tf.Tensor4D : x0
  return { mean: qPosterior(d, predXstart, xt, t).mean, logVariance, predXstart }
}

const meanFlat = (x: tf.Tensor): tf.Tensor1D => tf.mean(x, [1, 2, 3]) as tf.Tensor1D

/**
 * _vb_terms_bpd per sample, in bits: KL(q(x_{t−1}|x_t,x_0) ‖ p(x_{t−1}|x_t)),
 * and at t = 0 the discretised Gaussian NLL of x_0.
 */
export function vbTerms(d: GaussianDiffusion, output: tf.Tensor4D, x0: tf.Tensor4D, xt: tf.Tensor4D, t: ArrayLike<number>): tf.Tensor1D {
  const truth = qPosterior(d, x0, xt, t)
  const model = pMeanVariance(d, output, xt, t)
  const kl = tf.div(meanFlat(Likelihood.normalKl(truth.mean, truth.logVariance, model.mean, model.logVariance)), Math.LN2)
  const nll = tf.div(
    meanFlat(tf.neg(Likelihood.discretizedGaussianLogLikelihood(x0, model.mean, tf.mul(model.logVariance, 0.5)))),
    Math.LN2
  )
  return tf.where(tf.tensor1d(Array.from(t, (ti) => ti === 0), "bool"), nll, kl) as tf.Tensor1D
}

export interface Losses {
  /** mse + vb per sample (the reference's terms["loss"]; the train loss is its mean). */
  readonly loss: tf.Tensor1D
  readonly mse: tf.Tensor1D
  /** Undefined without learned σ. */
  readonly vb: tf.Tensor1D | undefined
  /** The raw model output, for distillation. */
  readonly output: tf.Tensor4D
}

/**
 * training_losses with loss type MSE: x_t = q_sample(x_0, t, ε); mse =
 * mean_flat((ε − ε̂)²); vb from the output with ε̂ stop-gradiented, so vb only
 * trains the variance. `t` are chain steps; the denoiser sees timestepMap[t].
 */
export function trainingLosses(
  d: GaussianDiffusion,
  denoiser: Network.Denoiser,
  x0: tf.Tensor4D,
  t: ArrayLike<number>,
  noise: tf.Tensor4D
): Losses {
  const xt = qSample(d, x0, t, noise)
  const output = denoiser(xt, networkTimesteps(d, t))
  const { eps, v } = splitOutput(d, output, x0.shape[3])
  const mse = meanFlat(tf.squaredDifference(noise, eps))
  if (v === undefined) return { loss: mse, mse, vb: undefined, output }
  const frozen = tf.concat([Gradients.stopGradient(eps), v], 3) as tf.Tensor4D
  const vb = vbTerms(d, frozen, x0, xt, t)
  return { loss: tf.add(mse, vb) as tf.Tensor1D, mse, vb, output }
}

export interface SampleOptions {
  /** Noise of step i is drawn from this stream at index i. */
  readonly noise: Rng.Stream
  readonly clipDenoised?: boolean
  /** Scales the noise added at each step (MAR's DiffLoss sampling temperature); default 1. */
  readonly temperature?: number
}

const stepTimes = (batch: number, i: number) => Array.from({ length: batch }, () => i)

/** Runs `step` from the last chain step down to 0, releasing every intermediate. */
function loop(d: GaussianDiffusion, xT: tf.Tensor4D, step: (x: tf.Tensor4D, i: number) => tf.Tensor4D): tf.Tensor4D {
  let x = xT
  for (let i = d.numTimesteps - 1; i >= 0; i--) {
    const current = x
    x = tf.tidy(() => step(current, i))
    if (current !== xT) current.dispose()
  }
  return x
}

/**
 * p_sample_loop: from x_T, x_{t−1} = mean + τ·σ·z (no noise at the last step;
 * τ the temperature, 1 for DiT). Returns a new tensor; x_T is left to the caller.
 */
export function ddpmSample(d: GaussianDiffusion, denoiser: Network.Denoiser, xT: tf.Tensor4D, options: SampleOptions): tf.Tensor4D {
  const temperature = options.temperature ?? 1
  return loop(d, xT, (x, i) => {
    const t = stepTimes(x.shape[0], i)
    const out = pMeanVariance(d, denoiser(x, networkTimesteps(d, t)), x, t, options)
    if (i === 0) return out.mean
    const z = Rng.normalTensor(options.noise, i, x.shape)
    const scale = tf.exp(tf.mul(out.logVariance, 0.5))
    return tf.add(out.mean, tf.mul(temperature === 1 ? scale : tf.mul(scale, temperature), z)) as tf.Tensor4D
  })
}

/**
 * ddim_sample_loop: x_{t−1} = x̂_0·√ᾱ_prev + √(1 − ᾱ_prev − σ²)·ε̂ + σ·z with
 * σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1 − ᾱ/ᾱ_prev); η = 0 is deterministic.
 */
export function ddimSample(
  d: GaussianDiffusion,
  denoiser: Network.Denoiser,
  xT: tf.Tensor4D,
  options: SampleOptions & { readonly eta?: number }
): tf.Tensor4D {
  const eta = options.eta ?? 0
  return loop(d, xT, (x, i) => {
    const t = stepTimes(x.shape[0], i)
    const out = pMeanVariance(d, denoiser(x, networkTimesteps(d, t)), x, t, options)
    const eps = predictEpsFromXstart(d, x, t, out.predXstart)
    const alphaBar = d.alphasCumprod[i]!
    const alphaBarPrev = d.alphasCumprodPrev[i]!
    const sigma = eta * Math.sqrt((1 - alphaBarPrev) / (1 - alphaBar)) * Math.sqrt(1 - alphaBar / alphaBarPrev)
    const mean = tf.add(tf.mul(out.predXstart, Math.sqrt(alphaBarPrev)), tf.mul(eps, Math.sqrt(1 - alphaBarPrev - sigma ** 2)))
    if (i === 0 || sigma === 0) return mean as tf.Tensor4D
    return tf.add(mean, tf.mul(Rng.normalTensor(options.noise, i, x.shape), sigma)) as tf.Tensor4D
  })
}
