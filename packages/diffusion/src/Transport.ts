/**
 * SiT's transport with the linear interpolant and velocity prediction, in the
 * reference's time convention: x_t = t·x_1 + (1 − t)·ε with x_1 the data,
 * so t = 0 is noise and t = 1 is data, the target is u_t = x_1 − ε, and
 * sampling integrates from 0 to 1. (SPEC's x_s = (1−s)·x_0 + s·ε with target
 * ε − x_0 is the same path with s = 1 − t; the network sees t, so official
 * SiT checkpoints load unchanged.)
 */
import { Rng, tf } from "@tinyfusion/tensor"
import type * as Network from "./Network.ts"

const column = (t: ArrayLike<number>): tf.Tensor4D => tf.tensor4d(Float32Array.from(t), [t.length, 1, 1, 1])

/** x_t and the velocity target u_t for data x_1, noise ε, times t ∈ [0, 1]. */
export const interpolate = (x1: tf.Tensor4D, noise: tf.Tensor4D, t: ArrayLike<number>) => {
  const tt = column(t)
  return {
    xt: tf.add(tf.mul(tt, x1), tf.mul(tf.sub(1, tt), noise)) as tf.Tensor4D,
    ut: tf.sub(x1, noise) as tf.Tensor4D
  }
}

/** training_losses: mean_flat((v̂(x_t, t) − u_t)²) per sample, and the raw model output. */
export function trainingLosses(
  denoiser: Network.Denoiser,
  x1: tf.Tensor4D,
  t: ArrayLike<number>,
  noise: tf.Tensor4D
): { readonly loss: tf.Tensor1D; readonly output: tf.Tensor4D } {
  const { xt, ut } = interpolate(x1, noise, t)
  const output = denoiser(xt, Array.from(t))
  return { loss: tf.mean(tf.squaredDifference(output, ut), [1, 2, 3]) as tf.Tensor1D, output }
}

const times = (batch: number, t: number) => Array.from({ length: batch }, () => t)

function integrate(x0: tf.Tensor4D, grid: ReadonlyArray<number>, step: (x: tf.Tensor4D, i: number) => tf.Tensor4D): tf.Tensor4D {
  let x = x0
  for (let i = 0; i + 1 < grid.length; i++) {
    const current = x
    x = tf.tidy(() => step(current, i))
    if (current !== x0) current.dispose()
  }
  return x
}

/** numSteps points evenly from t0 to t1 (torch.linspace). */
const grid = (t0: number, t1: number, numSteps: number): Array<number> => {
  if (!Number.isInteger(numSteps) || numSteps < 2) throw new Error(`a sampler grid needs at least 2 points, got ${numSteps}`)
  return Array.from({ length: numSteps }, (_, i) => t0 + ((t1 - t0) * i) / (numSteps - 1))
}

export interface OdeOptions {
  /** Grid points from 0 to 1 (SiT's num_sampling_steps): numSteps − 1 updates. */
  readonly numSteps: number
  readonly method: "euler" | "heun"
}

/**
 * The probability-flow ODE dx/dt = v̂(x, t) from noise at t = 0 to data at
 * t = 1 on a fixed grid: Euler, or Heun (trapezoidal predictor–corrector).
 */
export function sampleOde(denoiser: Network.Denoiser, x0: tf.Tensor4D, options: OdeOptions): tf.Tensor4D {
  const ts = grid(0, 1, options.numSteps)
  const b = x0.shape[0]
  return integrate(x0, ts, (x, i) => {
    const dt = ts[i + 1]! - ts[i]!
    const v = denoiser(x, times(b, ts[i]!))
    const euler = tf.add(x, tf.mul(v, dt)) as tf.Tensor4D
    if (options.method === "euler") return euler
    const v2 = denoiser(euler, times(b, ts[i + 1]!))
    return tf.add(x, tf.mul(tf.add(v, v2), dt / 2)) as tf.Tensor4D
  })
}

export interface SdeOptions {
  /** Grid points from 0 to 1 − lastStepSize (SiT's num_sampling_steps). */
  readonly numSteps: number
  /** The final deterministic step (SiT's last-step-size, default 0.04). */
  readonly lastStepSize?: number
  /** Scale of the diffusion coefficient w(t) = norm·(1 − t) (SiT's "sigma" form; default 1). */
  readonly diffusionNorm?: number
  /** Noise of update i is drawn from this stream at index i. */
  readonly noise: Rng.Stream
}

/**
 * SiT's SDE sampler, Euler–Maruyama with the "sigma" diffusion form and the
 * "Mean" last step: drift = v̂ + w·s with the score s = (t·v̂ − x)/(1 − t)
 * of the linear path, so w·s = norm·(t·v̂ − x);
 * x ← x + drift·dt + √(2w)·√dt·z, then x ← x + drift·lastStepSize at 1 − lastStepSize.
 */
export function sampleSde(denoiser: Network.Denoiser, x0: tf.Tensor4D, options: SdeOptions): tf.Tensor4D {
  const last = options.lastStepSize ?? 0.04
  const norm = options.diffusionNorm ?? 1
  const ts = grid(0, 1 - last, options.numSteps)
  const dt = ts[1]! - ts[0]!
  const b = x0.shape[0]
  const drift = (x: tf.Tensor4D, t: number) => {
    const v = denoiser(x, times(b, t))
    return tf.add(v, tf.mul(tf.sub(tf.mul(v, t), x), norm))
  }
  const walked = integrate(x0, ts, (x, i) => {
    const t = ts[i]!
    const z = Rng.normalTensor(options.noise, i, x.shape)
    const noise = tf.mul(z, Math.sqrt(2 * norm * (1 - t)) * Math.sqrt(dt))
    return tf.add(tf.add(x, tf.mul(drift(x, t), dt)), noise) as tf.Tensor4D
  })
  const final = tf.tidy(() => tf.add(walked, tf.mul(drift(walked, 1 - last), last)) as tf.Tensor4D)
  if (walked !== x0) walked.dispose()
  return final
}
