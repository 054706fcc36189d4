/**
 * How a MAR samples (MAR.sample_tokens): every token starts masked; at each
 * of `iterations` autoregressive steps the network conditions every token on
 * the ones already made, the mask ratio follows the cosine schedule
 * cos(π/2 · (step + 1)/iterations) — at least one token fewer each step, all
 * the rest at the last — and the tokens leaving the mask (the next ones of
 * each sample's random order) are drawn by the DiffLoss head's sampler over
 * the generation schedule, with the temperature on its noise. Under
 * classifier-free guidance the batch runs twice (labels and fake_latent) and
 * the head's ε is mixed at the scale of the step's schedule: linear
 * 1 + (cfg − 1)·(T − masked after the step)/T (Muse's), or constant.
 *
 * Randomness, as a pure function of (seed, batch): each sample's order from
 * "mar-sampling/orders/<batch>/<i>", the head's starting noise of step s from
 * "mar-sampling/x_T/<batch>" at index s and its step noise from
 * "mar-sampling/noise/<batch>/<s>".
 */
import { Effect, Schema } from "effect"
import { DiffLoss } from "@tinyfusion/diffusion"
import { Mar, MarConfig } from "@tinyfusion/models"
import { type ParamTree, Rng, tf } from "@tinyfusion/tensor"

export const Options = Schema.Struct({
  /** Autoregressive steps (num_iter; the reference evaluates at 64 or 256). */
  iterations: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Guidance scale; 1 samples without guidance. */
  cfgScale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1)),
  cfgSchedule: Schema.Literals(["linear", "constant"]),
  /** The head sampler's noise scale (the reference: 1.0 with guidance, 0.95 without). */
  temperature: Schema.Finite.check(Schema.isGreaterThan(0)),
  seed: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
})
export type Options = typeof Options.Type

export interface Model {
  readonly config: MarConfig.MarConfig
  /** Weights on the device. */
  readonly params: ParamTree.ParamTree
}

/** Tokens still masked after `step` of `iterations` (mask_len), given `masked` before it. */
export const maskedAfter = (tokens: number, iterations: number, step: number, masked: number): number =>
  Math.max(1, Math.min(masked - 1, Math.floor(tokens * Math.cos((Math.PI / 2) * (step + 1) / iterations))))

/** The guidance scale of a step whose next mask keeps `maskedNext` tokens. */
export const scaleAt = (o: Pick<Options, "cfgScale" | "cfgSchedule">, tokens: number, maskedNext: number): number =>
  o.cfgSchedule === "linear" ? 1 + ((o.cfgScale - 1) * (tokens - maskedNext)) / tokens : o.cfgScale

/** Batched forwards of one sample: per step the network once and the head once per generation step. */
export const evaluations = (o: Options, headSteps: number): number => o.iterations * (1 + headSteps)

/** One-hot rows [N, B·T] picking the positions where `pick` is 1, in row-major (sample, token) order. */
const picker = (pick: Uint8Array): { readonly rows: tf.Tensor2D; readonly count: number } => {
  const positions: Array<number> = []
  pick.forEach((v, i) => v === 1 && positions.push(i))
  const out = new Float32Array(positions.length * pick.length)
  positions.forEach((p, r) => (out[r * pick.length + p] = 1))
  return { rows: tf.tensor2d(out, [positions.length, pick.length]), count: positions.length }
}

export interface Sampler {
  readonly options: Options
  readonly diffloss: DiffLoss.DiffLoss
  /** Latents [B, H, W, C] of batch `batch` for its labels (the null class: unconditional); a new tensor. */
  readonly sample: (model: Model, batch: number, labels: ReadonlyArray<number>) => tf.Tensor4D
}

export const make = Effect.fn("MarSampling.make")(function*(config: MarConfig.MarConfig, o: Options) {
  const diffloss = yield* DiffLoss.make(config.numSamplingSteps)
  const sample = (model: Model, batch: number, labels: ReadonlyArray<number>): tf.Tensor4D => {
    const c = model.config
    const b = labels.length
    const tokens = MarConfig.tokens(c)
    const dim = MarConfig.tokenDim(c)
    const guided = o.cfgScale !== 1
    const orders = new Int32Array(b * tokens)
    for (let i = 0; i < b; i++) orders.set(Rng.permutation(Rng.stream(o.seed, `mar-sampling/orders/${batch}/${i}`), 0, tokens), i * tokens)
    const nulls = labels.map(() => MarConfig.nullClass(c))
    let mask = Mar.maskByOrder(orders, b, tokens, tokens)
    let current = tf.zeros([b, tokens, dim]) as tf.Tensor3D
    for (let step = 0; step < o.iterations; step++) {
      const maskedNext = maskedAfter(tokens, o.iterations, step, mask.count)
      const next = Mar.maskByOrder(orders, b, tokens, maskedNext)
      const last = step >= o.iterations - 1
      const pick = Uint8Array.from(mask.values, (v, i) => (last ? v : v & (1 - next.values[i]!)))
      const before = current
      current = tf.tidy(() => {
        const input = guided
          ? { tokens: tf.concat([before, before]) as tf.Tensor3D, mask: Mar.mask([...mask.values, ...mask.values], 2 * b, tokens), labels: [...labels, ...nulls] }
          : { tokens: before, mask, labels }
        const z = tf.reshape(Mar.infer(c, model.params, input), [-1, c.decoderEmbedDim]) as tf.Tensor2D
        const { rows, count } = picker(pick)
        if (count === 0) return tf.clone(before)
        const zCond = tf.matMul(rows, tf.slice(z, [0, 0], [b * tokens, -1]))
        const head: DiffLoss.Head = guided
          ? DiffLoss.guided(
            (x, t) => Mar.head(model.params, x, t, tf.concat([zCond, tf.matMul(rows, tf.slice(z, [b * tokens, 0], [b * tokens, -1]))]) as tf.Tensor2D),
            scaleAt(o, tokens, maskedNext)
          )
          : (x, t) => Mar.head(model.params, x, t, zCond as tf.Tensor2D)
        const xT = Rng.normalTensor(Rng.stream(o.seed, `mar-sampling/x_T/${batch}`), step, [count, dim]) as tf.Tensor2D
        const made = DiffLoss.sample(diffloss, head, xT, { noise: Rng.stream(o.seed, `mar-sampling/noise/${batch}/${step}`), temperature: o.temperature })
        // cur_tokens[mask_to_pred] = sampled: the picked rows replaced, the others kept.
        const flat = tf.reshape(before, [b * tokens, dim])
        const kept = tf.mul(flat, tf.sub(1, tf.tensor2d(Float32Array.from(pick), [b * tokens, 1])))
        return tf.reshape(tf.add(kept, tf.matMul(rows, made, true, false)), [b, tokens, dim]) as tf.Tensor3D
      })
      before.dispose()
      mask = next
    }
    const out = Mar.unpatchify(current, c.patchSize, c.inChannels)
    current.dispose()
    return out
  }
  return { options: o, diffloss, sample } satisfies Sampler
})
