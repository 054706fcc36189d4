/**
 * What a pruner needs of a model: a stack of blocks it can gate, read the
 * hidden states of, select and train through. DiT and SiT (the same network
 * under two objectives) are one implementation; another family (MAR) is
 * another value of this interface, and every pruner works on it unchanged.
 */
import { Effect } from "effect"
import { GaussianDiffusion, Training, Transport } from "@tinyfusion/diffusion"
import { CalibrationLoss } from "@tinyfusion/eval"
import { Config, DiT, StateDict } from "@tinyfusion/models"
import { type Compute, type ComputeError, type ParamTree, tf } from "@tinyfusion/tensor"

/** An nn.Linear the forward routes through its Linear hook: its module path and [out, in]. */
export interface LinearLayout {
  readonly path: string
  readonly inFeatures: number
  readonly outFeatures: number
}

export interface BlockStack {
  readonly depth: number
  /** A DiT or SiT: its shape and objective, for pruners of its structure (width pruning). */
  readonly dit?: { readonly config: Config.Config; readonly objective: Training.Objective }
  /** For messages, e.g. "DiT(depth 28, hidden 128, …)". */
  readonly description: string
  /** Block `index`'s parameters. */
  readonly block: (params: ParamTree.ParamTree, index: number) => ParamTree.ParamTree
  /** Every Linear a LoRA update adapts (the forward's Linear hook sees exactly these paths). */
  readonly linears: ReadonlyArray<LinearLayout>
  /** The trained parameters and the fixed ones (DiT: pos_embed). */
  readonly split: (params: ParamTree.ParamTree) => { readonly trainable: ParamTree.ParamTree; readonly frozen: ParamTree.ParamTree }
  readonly join: (trainable: ParamTree.ParamTree, frozen: ParamTree.ParamTree) => ParamTree.ParamTree
  /** A training batch's draws (timesteps, noise, dropped labels) from `${purpose}/…` streams at `step`. */
  readonly draws: (labels: ArrayLike<number>, at: { readonly seed: number; readonly step: number; readonly purpose: string }) => Training.Draws
  /** The training loss (batch mean) with per-sample gates [B, depth] and a Linear hook. */
  readonly loss: (params: ParamTree.ParamTree, x: tf.Tensor4D, draws: Training.Draws, options: DiT.Options) => tf.Scalar
  /** Every block's input and output tokens [B, T_i, D] on the noised batch (a MAR's encoder blocks see fewer tokens). */
  readonly hidden: (params: ParamTree.ParamTree, x: tf.Tensor4D, draws: Training.Draws) => ReadonlyArray<BlockStates>
  /** The fixed calibration set of a latent batch. */
  readonly calibrationSet: (batch: CalibrationBatch, seed: number) => CalibrationLoss.CalibrationSet
  /** Samples [from, to) of a calibration set: their latents and draws. */
  readonly slice: (set: CalibrationLoss.CalibrationSet, from: number, to: number) => { readonly x: tf.Tensor4D; readonly draws: Training.Draws }
  /** The calibration loss of the whole, gated or block-subset model (packages/eval). */
  readonly calibrationLoss: (
    params: ParamTree.ParamTree,
    set: CalibrationLoss.CalibrationSet,
    options?: CalibrationLoss.Options
  ) => Effect.Effect<number, ComputeError, Compute>
}

export interface BlockStates {
  readonly input: tf.Tensor3D
  readonly output: tf.Tensor3D
}

export interface CalibrationBatch {
  readonly latents: Float32Array
  readonly labels: ArrayLike<number>
  readonly shape: readonly [number, number, number, number]
}

/** The network's input x_t and timesteps for clean latents and draws, as the objective's loss builds them. */
const noised = (objective: Training.Objective, x: tf.Tensor4D, d: Training.Draws): { readonly xt: tf.Tensor4D; readonly t: ReadonlyArray<number> } => {
  const noise = tf.tensor4d(d.noise, x.shape)
  if (objective._tag === "ddpm") {
    return { xt: GaussianDiffusion.qSample(objective.diffusion, x, d.t, noise), t: GaussianDiffusion.networkTimesteps(objective.diffusion, d.t) }
  }
  return { xt: Transport.interpolate(x, noise, d.t).xt, t: d.t }
}

/** A DiT (objective ddpm) or SiT (objective sit) of this config. */
export function dit(objective: Training.Objective, config: Config.Config): BlockStack {
  const linears = StateDict.referenceShapes(config).flatMap(([key, shape]): Array<LinearLayout> =>
    key.endsWith(".weight") && shape.length === 2 && key !== "y_embedder.embedding_table.weight"
      ? [{ path: key.slice(0, -".weight".length), outFeatures: shape[0]!, inFeatures: shape[1]! }]
      : []
  )
  return {
    depth: config.depth,
    dit: { config, objective },
    description: Config.describe(config),
    block: (params, index) => DiT.params(params).blocks[index]!,
    linears,
    split: DiT.split,
    join: DiT.join,
    draws: (labels, at) => Training.draws(objective, config, labels, at),
    loss: (params, x, draws, options) => Training.loss(objective, config, params, x, draws, options).loss,
    hidden: (params, x, draws) => {
      const { xt, t } = noised(objective, x, draws)
      const hidden = DiT.forwardHidden(config, params, { x: xt, t, y: draws.labels }).hidden
      return hidden.slice(0, -1).map((input, i) => ({ input, output: hidden[i + 1]! }))
    },
    calibrationSet: (batch, seed) => CalibrationLoss.make(objective, config, batch, seed),
    slice: CalibrationLoss.slice,
    calibrationLoss: (params, set, options = {}) => CalibrationLoss.evaluate(objective, config, params, set, options)
  }
}

/** The objective of a model family: DiT's Gaussian diffusion (1000 steps) or SiT's linear transport. */
export const objective = Effect.fn("BlockStack.objective")(function*(family: "dit" | "sit", config: Config.Config) {
  if (family === "sit") return { _tag: "sit" } as const satisfies Training.Objective
  return { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make({ learnSigma: config.learnSigma }) } as const satisfies Training.Objective
})
