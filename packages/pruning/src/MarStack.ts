/**
 * MAR as a BlockStack, so every pruner works on it unchanged. The blocks
 * are the reference's two ModuleLists in forward order — encoder_blocks
 * 0..E−1, then decoder_blocks as E..E+D−1 — one stack of E + D blocks, as
 * the paper counts MAR-Large's "32 transformer blocks". N:M groups are
 * consecutive in that order; with E a multiple of M no group straddles the
 * encoder and decoder (MAR-L's 1:2 groups are 8 encoder pairs and 8 decoder
 * pairs, so TinyMAR-D16 keeps 8 + 8), and a selection keeps each kept block
 * in its own half (Mar.keepBlocks).
 *
 * The loss is MAR's training loss (masking, DiffLoss on every row, the
 * masked rows' mean) with the block gates and a Linear hook; LoRA adapts
 * every Linear of the network and of the DiffLoss head. Every parameter
 * trains (MAR's position embeddings are learned). A calibration set fixes
 * the orders, the masked count, the timesteps and the noise of every row;
 * its loss is the masked rows' mean over the whole set, without dropout.
 */
import { Effect } from "effect"
import { DiffLoss, MarTraining } from "@tinyfusion/diffusion"
import type { CalibrationLoss } from "@tinyfusion/eval"
import { Mar, MarStateDict, MarConfig } from "@tinyfusion/models"
import { Compute, type ComputeError, type ParamTree, tf } from "@tinyfusion/tensor"
import type { BlockStack, LinearLayout } from "./BlockStack.ts"

type Config = MarConfig.MarConfig

/** A MAR calibration set: the latents, and draws over its loss rows (as MarTraining.draws at purpose "calibration"). */
export interface CalibrationSet extends CalibrationLoss.CalibrationSet {
  readonly orders: Int32Array
  readonly masked: number
}

const isMarSet = (set: CalibrationLoss.CalibrationSet): set is CalibrationSet => "orders" in set && "masked" in set

/** Samples [from, to) of a set: latents, and the draws of their rows (rows are (repeat, sample, token)). */
export function slice(config: Config, set: CalibrationLoss.CalibrationSet, from: number, to: number): { readonly x: tf.Tensor4D; readonly draws: MarTraining.Draws } {
  if (!isMarSet(set)) throw new Error("a MAR stack needs a MAR calibration set (orders and masked count)")
  const [n, h, w, c] = set.shape
  const per = h * w * c
  const tokens = MarConfig.tokens(config)
  const dim = MarConfig.tokenDim(config)
  const t: Array<number> = []
  const noise: Array<Float32Array> = []
  for (let r = 0; r < config.diffusionBatchMul; r++) {
    const first = r * n * tokens + from * tokens
    const last = r * n * tokens + to * tokens
    t.push(...set.t.slice(first, last))
    noise.push(set.noise.subarray(first * dim, last * dim))
  }
  const joined = new Float32Array(noise.reduce((k, a) => k + a.length, 0))
  noise.reduce((at, a) => (joined.set(a, at), at + a.length), 0)
  return {
    x: tf.tensor4d(set.latents.subarray(from * per, to * per), [to - from, h, w, c]),
    draws: {
      t,
      noise: joined,
      labels: set.labels.subarray(from, to),
      orders: set.orders.subarray(from * tokens, to * tokens),
      masked: set.masked,
      at: { seed: 0, step: 0, purpose: "calibration" }
    }
  }
}

/** A MAR of this config, trained with its DiffLoss. */
export function make(diffloss: DiffLoss.DiffLoss, config: Config): BlockStack {
  const linears = MarStateDict.referenceShapes(config).flatMap(([key, shape]): Array<LinearLayout> =>
    key.endsWith(".weight") && shape.length === 2 && key !== "class_emb.weight"
      ? [{ path: key.slice(0, -".weight".length), outFeatures: shape[0]!, inFeatures: shape[1]! }]
      : []
  )
  return {
    depth: MarConfig.depth(config),
    description: MarConfig.describe(config),
    block: (params, index) => Mar.stackBlock(config, Mar.params(params), index).params as unknown as ParamTree.ParamTree,
    linears,
    split: (params) => ({ trainable: params, frozen: {} }),
    join: (trainable) => trainable,
    draws: (labels, at) => MarTraining.draws(config, labels, at),
    loss: (params, x, draws, options) => {
      const d = MarTraining.marDraws(draws)
      return MarTraining.loss(diffloss, config, params, x, d, { ...options, dropout: MarTraining.dropout(d.at) }).loss
    },
    hidden: (params, x, draws) => {
      const d = MarTraining.marDraws(draws)
      const inputs = { tokens: Mar.patchify(x, config.patchSize), mask: MarTraining.maskOf(config, d), labels: d.labels }
      return Mar.forwardHidden(config, params, inputs).blocks
    },
    calibrationSet: (batch, seed) => {
      const [, h, w, c] = batch.shape
      if (h !== config.inputSize || w !== config.inputSize || c !== config.inChannels) {
        throw new Error(`calibration latents ${h}×${w}×${c} do not fit ${MarConfig.describe(config)}`)
      }
      const d = MarTraining.draws(config, batch.labels, { seed, step: 0, purpose: "calibration" })
      // The labels as given: a calibration set is class-conditional, not a training batch.
      const set: CalibrationSet = { shape: batch.shape, latents: batch.latents, labels: Int32Array.from(batch.labels), t: d.t, noise: d.noise, orders: d.orders, masked: d.masked }
      return set
    },
    slice: (set, from, to) => slice(config, set, from, to),
    calibrationLoss: (params, set, options = {}) => calibrationLoss(diffloss, config, params, set, options)
  }
}

/** The masked rows' mean loss over the set (float64 sums), of the whole, gated or block-subset model; eval mode. */
export const calibrationLoss = Effect.fn("MarStack.calibrationLoss")(function*(
  diffloss: DiffLoss.DiffLoss,
  config: Config,
  params: ParamTree.ParamTree,
  set: CalibrationLoss.CalibrationSet,
  options: CalibrationLoss.Options = {}
): Effect.fn.Return<number, ComputeError, Compute> {
  const compute = yield* Compute
  if (options.kept !== undefined && options.mask !== undefined) throw new Error("a calibration loss takes kept blocks or a mask, not both")
  const depth = MarConfig.depth(config)
  if (options.mask !== undefined && options.mask.length !== depth) throw new Error(`a mask of ${options.mask.length} gates for depth ${depth}`)
  const model = options.kept === undefined ? { config, params } : Mar.keepBlocks(config, params, options.kept)
  const n = set.shape[0]
  const size = options.batchSize ?? 64
  let total = 0
  let count = 0
  for (let from = 0; from < n; from += size) {
    const to = Math.min(n, from + size)
    const [sum, masked] = yield* compute.scoped(Effect.gen(function*() {
      const { x, draws } = slice(config, set, from, to)
      const gates = options.mask === undefined ? undefined : tf.tile(tf.tensor2d([...options.mask], [1, depth]), [to - from, 1]) as tf.Tensor2D
      const out = MarTraining.loss(diffloss, model.config, model.params, x, draws, {
        ...(gates === undefined ? {} : { gates }),
        ...(options.linear === undefined ? {} : { linear: options.linear })
      })
      return yield* compute.read(tf.stack([tf.sum(tf.mul(out.perRow, out.mask)), tf.sum(out.mask)]))
    }))
    total += sum!
    count += masked!
  }
  return total / count
})

/** The stack of a MAR with its DiffLoss (generation schedule from the config). */
export const of = Effect.fn("MarStack.of")(function*(config: Config) {
  return make(yield* DiffLoss.make(config.numSamplingSteps), config)
})
