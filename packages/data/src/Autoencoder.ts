/**
 * A KL-regularised convolutional autoencoder (the role of Stable Diffusion's
 * VAE at mini scale): the encoder maps an image to the mean and log-variance
 * of a diagonal Gaussian over latents, the decoder maps a latent back.
 * 32×32×1 images → 8×8×4 latents for the mini preset.
 *
 *   encoder: conv_in 3×3 → per level [SiLU → down (2×2, stride 2) → x + res(SiLU x) (3×3)] → SiLU → conv_out 3×3 (2·latent channels)
 *   decoder: conv_in 3×3 → x + res.0(SiLU x) → per level [SiLU → up (2×2 transposed) → x + res(SiLU x)] → SiLU → conv_out 3×3
 *
 * Loss per image: Σ(x − x̂)² + klWeight · KL(q(z|x) ‖ N(0, I)), averaged over
 * the batch and divided by the pixel count; z = μ + σ·ε with ε from the
 * stream "autoencoder/noise" at the step.
 */
import { Effect, Schema } from "effect"
import { AdamW, Compute, type ComputeError, ParamTree, Rng, tf, tidy, Update } from "@tinyfusion/tensor"
import * as Batches from "./Batches.ts"
import type * as Images from "./Images.ts"
import * as Nn from "./Nn.ts"

export const Config = Schema.Struct({
  imageSize: Schema.Int,
  imageChannels: Schema.Int,
  /** Channels per resolution level; each level after the first halves the side. */
  channels: Schema.Array(Schema.Int),
  latentChannels: Schema.Int,
  klWeight: Schema.Number
})
export type Config = typeof Config.Type

export const mini: Config = { imageSize: 32, imageChannels: 1, channels: [16, 32, 64], latentChannels: 4, klWeight: 1e-4 }

export const latentSize = (config: Config): number => config.imageSize / 2 ** (config.channels.length - 1)
export const latentShape = (config: Config): readonly [number, number, number] =>
  [latentSize(config), latentSize(config), config.latentChannels]

/** The autoencoder's parameter tree. */
export type Params = {
  readonly encoder: {
    readonly conv_in: Nn.Conv
    readonly down: ReadonlyArray<Nn.Conv>
    readonly res: ReadonlyArray<Nn.Conv>
    readonly conv_out: Nn.Conv
  }
  readonly decoder: {
    readonly conv_in: Nn.Conv
    readonly res: ReadonlyArray<Nn.Conv>
    readonly up: ReadonlyArray<Nn.Conv>
    readonly conv_out: Nn.Conv
  }
}

/** A tree read from a file, as the autoencoder's (its keys were written from Params). */
const asParams = (tree: ParamTree.ParamTree) => tree as Params

export function init(config: Config, seed: number): Params {
  const s = Rng.stream(seed, "autoencoder/init")
  const ch = config.channels
  const last = ch[ch.length - 1]!
  const conv = (key: string, i: number, o: number, k: number) => Nn.init(s, key, [o, i, k, k], o)
  const levels = ch.slice(1).map((c, l) => [ch[l]!, c] as const)
  const params: Params = {
    encoder: {
      conv_in: conv("encoder.conv_in", config.imageChannels, ch[0]!, 3),
      down: levels.map(([i, o], l) => conv(`encoder.down.${l}`, i, o, 2)),
      res: levels.map(([, o], l) => conv(`encoder.res.${l}`, o, o, 3)),
      conv_out: conv("encoder.conv_out", last, 2 * config.latentChannels, 3)
    },
    decoder: {
      conv_in: conv("decoder.conv_in", config.latentChannels, last, 3),
      res: [last, ...[...ch].reverse().slice(1)].map((c, l) => conv(`decoder.res.${l}`, c, c, 3)),
      up: [...levels].reverse().map(([o, i], l) => Nn.init(s, `decoder.up.${l}`, [i, o, 2, 2], o)),
      conv_out: conv("decoder.conv_out", ch[0]!, config.imageChannels, 3)
    }
  }
  return params
}

export interface Posterior {
  readonly mean: tf.Tensor4D
  readonly logvar: tf.Tensor4D
}

/** Images [N,H,W,C] in [-1, 1] → posterior mean and log-variance [N,h,w,latentChannels]. */
export function encode(tree: ParamTree.ParamTree, x: tf.Tensor4D): Posterior {
  const p = asParams(tree).encoder
  let h = Nn.conv2d(x, p.conv_in)
  p.down.forEach((down, l) => {
    h = Nn.down(Nn.silu(h), down)
    h = tf.add(h, Nn.conv2d(Nn.silu(h), p.res[l]!))
  })
  const moments = Nn.conv2d(Nn.silu(h), p.conv_out)
  const [mean, logvar] = tf.split(moments, 2, 3) as [tf.Tensor4D, tf.Tensor4D]
  // As LDM's DiagonalGaussianDistribution: keeps exp(logvar) finite early in training.
  return { mean, logvar: tf.clipByValue(logvar, -30, 20) }
}

/** Latents [N,h,w,latentChannels] → images [N,H,W,C] (unclamped). */
export function decode(tree: ParamTree.ParamTree, z: tf.Tensor4D): tf.Tensor4D {
  const p = asParams(tree).decoder
  let h = Nn.conv2d(z, p.conv_in)
  h = tf.add(h, Nn.conv2d(Nn.silu(h), p.res[0]!))
  p.up.forEach((up, l) => {
    h = Nn.up(Nn.silu(h), up)
    h = tf.add(h, Nn.conv2d(Nn.silu(h), p.res[l + 1]!))
  })
  return Nn.conv2d(Nn.silu(h), p.conv_out)
}

/** z = μ + σ·ε. */
export const sample = (posterior: Posterior, noise: tf.Tensor): tf.Tensor4D =>
  tf.add(posterior.mean, tf.mul(tf.exp(tf.mul(posterior.logvar, 0.5)), noise))

/** KL(N(μ, σ²) ‖ N(0, 1)) summed over each latent: [N]. */
export const kl = (posterior: Posterior): tf.Tensor1D =>
  tf.mul(tf.sum(tf.sub(tf.add(tf.square(posterior.mean), tf.exp(posterior.logvar)), tf.add(posterior.logvar, 1)), [1, 2, 3]), 0.5)

export interface Losses {
  readonly total: tf.Scalar
  /** Mean squared error per pixel. */
  readonly mse: tf.Scalar
  /** Mean KL per image. */
  readonly kl: tf.Scalar
}

export function loss(config: Config, tree: ParamTree.ParamTree, x: tf.Tensor4D, noise: tf.Tensor): Losses {
  const posterior = encode(tree, x)
  const reconstruction = decode(tree, sample(posterior, noise))
  const mse = tf.mean(tf.squaredDifference(reconstruction, x)) as tf.Scalar
  const klMean = tf.mean(kl(posterior)) as tf.Scalar
  const pixels = x.shape[1] * x.shape[2] * x.shape[3]
  return { total: tf.add(mse, tf.mul(klMean, config.klWeight / pixels)), mse, kl: klMean }
}

export const TrainConfig = Schema.Struct({
  seed: Schema.Int,
  steps: Schema.Int,
  batchSize: Schema.Int,
  lr: Schema.Number,
  /** Global gradient-norm clip. */
  clip: Schema.Number
})
export type TrainConfig = typeof TrainConfig.Type

export const miniTraining: TrainConfig = { seed: 0, steps: 2500, batchSize: 32, lr: 2e-3, clip: 1 }

export interface TrainState {
  readonly step: number
  readonly params: Params
  readonly optimiser: AdamW.State
}

export const initialState = (config: Config, training: TrainConfig): TrainState => {
  const params = init(config, training.seed)
  return { step: 0, params, optimiser: AdamW.init(params) }
}

/** Cosine decay of the learning rate to a tenth over the run. */
const lrScale = (training: TrainConfig, step: number) => 0.1 + 0.45 * (1 + Math.cos((Math.PI * step) / training.steps))

/** One AdamW step on batch `state.step` of the set. Disposes nothing: the caller owns both states. */
export function step(config: Config, training: TrainConfig, state: TrainState, set: Images.ImageSet): { readonly state: TrainState; readonly losses: Losses } {
  return tidy(() => {
    const batch = Batches.at(set, { seed: training.seed, batchSize: training.batchSize, flip: true }, state.step)
    const x = tf.tensor4d(batch.images, [...batch.shape])
    const noise = Rng.normalTensor(Rng.stream(training.seed, "autoencoder/noise"), state.step, [training.batchSize, ...latentShape(config)])
    let parts: Losses | undefined
    const next = Update.apply({ optimiser: AdamW.single(training.lr), maxGradNorm: training.clip }, state, (p) => {
      parts = loss(config, p, x, noise)
      // The gradient releases everything but the value; the parts are read for progress.
      tf.keep(parts.mse)
      tf.keep(parts.kl)
      return parts.total
    }, lrScale(training, state.step))
    return { state: { step: state.step + 1, params: next.state.params, optimiser: next.state.optimiser }, losses: parts! }
  })
}

export const disposeState = (state: TrainState): void => ParamTree.dispose([state.params, state.optimiser.m, state.optimiser.v])

/** Encodes and decodes (posterior mean) images [start, start + count) of a set in batches; host arrays in [-1, 1]. */
export const reconstruct = Effect.fn("Autoencoder.reconstruct")(function*(
  tree: ParamTree.ParamTree,
  set: Images.ImageSet,
  count: number,
  batchSize: number
): Effect.fn.Return<{ readonly originals: Float32Array; readonly reconstructions: Float32Array }, ComputeError, Compute> {
  const compute = yield* Compute
  const n = Math.min(count, set.count)
  const per = set.height * set.width * set.channels
  const originals = new Float32Array(n * per)
  const reconstructions = new Float32Array(n * per)
  for (let start = 0; start < n; start += batchSize) {
    const batch = Batches.range(set, start, Math.min(batchSize, n - start))
    const out = yield* compute.scoped(Effect.gen(function*() {
      const x = tf.tensor4d(batch.images, [...batch.shape])
      return yield* compute.read(tf.clipByValue(decode(tree, encode(tree, x).mean), -1, 1))
    }))
    originals.set(batch.images, start * per)
    reconstructions.set(out, start * per)
  }
  return { originals, reconstructions }
})

/**
 * PSNR in dB of each image pair, pixels mapped from [-1, 1] to [0, 1],
 * over the `crop` × `crop` centre (28 for padded Fashion-MNIST: the padding
 * is not part of the picture).
 */
export function psnr(
  a: Float32Array,
  b: Float32Array,
  shape: readonly [number, number, number, number],
  crop: number
): Float64Array {
  const [n, h, w, c] = shape
  const top = Math.floor((h - crop) / 2)
  const left = Math.floor((w - crop) / 2)
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    let sum = 0
    for (let y = top; y < top + crop; y++) {
      for (let x = left; x < left + crop; x++) {
        for (let k = 0; k < c; k++) {
          const at = ((i * h + y) * w + x) * c + k
          sum += ((a[at]! - b[at]!) / 2) ** 2
        }
      }
    }
    out[i] = 10 * Math.log10(1 / (sum / (crop * crop * c)))
  }
  return out
}

/**
 * The latent scale factor: 1 / standard deviation of posterior samples over
 * the first `count` images (LDM's scale_factor, 0.18215 for SD's VAE).
 * Noise from the stream "autoencoder/scale" at the batch index.
 */
export const scaleFactor = Effect.fn("Autoencoder.scaleFactor")(function*(
  config: Config,
  tree: ParamTree.ParamTree,
  set: Images.ImageSet,
  count: number,
  batchSize: number,
  seed: number
): Effect.fn.Return<number, ComputeError, Compute> {
  const compute = yield* Compute
  const n = Math.min(count, set.count)
  let sum = 0
  let squares = 0
  let values = 0
  for (let start = 0, index = 0; start < n; start += batchSize, index++) {
    const batch = Batches.range(set, start, Math.min(batchSize, n - start))
    const z = yield* compute.scoped(Effect.gen(function*() {
      const x = tf.tensor4d(batch.images, [...batch.shape])
      const noise = Rng.normalTensor(Rng.stream(seed, "autoencoder/scale"), index, [batch.shape[0], ...latentShape(config)])
      return yield* compute.read(sample(encode(tree, x), noise))
    }))
    for (const v of z) {
      sum += v
      squares += v * v
    }
    values += z.length
  }
  const mean = sum / values
  return 1 / Math.sqrt(squares / values - mean * mean)
})
