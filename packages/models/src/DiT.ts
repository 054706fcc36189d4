/**
 * DiT (Peebles & Xie) as a pure function of a parameter tree whose dotted keys
 * are the reference state_dict keys. Images are NHWC; weights keep PyTorch
 * layouts and the forward does the transposes.
 *
 * The block stack is open: `embed`, `block` and `finalLayer` are exported,
 * `forward` takes per-sample block gates (x ← m·f(x) + (1−m)·x) and a Linear
 * override, `forwardHidden` also returns every block's input and the last
 * block's output, `infer` is the forward for sampling (block by block, less
 * memory), and `keepBlocks` selects and renumbers a subset of blocks.
 */
import { Fused, ParamTree, tf } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as Embeddings from "./Embeddings.ts"
import * as Linear from "./Linear.ts"

type AdaLN = { readonly "1": Linear.Params }

export type BlockParams = {
  readonly attn: { readonly qkv: Linear.Params; readonly proj: Linear.Params }
  readonly mlp: { readonly fc1: Linear.Params; readonly fc2: Linear.Params }
  readonly adaLN_modulation: AdaLN
}

export type Params = {
  /** [1, T, D], fixed sin-cos (not trained; kept because the reference state_dict holds it). */
  readonly pos_embed: tf.Tensor
  /** Conv2d weight [D, C, p, p] and bias [D]. */
  readonly x_embedder: { readonly proj: Linear.Params }
  readonly t_embedder: { readonly mlp: { readonly "0": Linear.Params; readonly "2": Linear.Params } }
  readonly y_embedder: { readonly embedding_table: { readonly weight: tf.Tensor } }
  readonly blocks: ReadonlyArray<BlockParams>
  readonly final_layer: { readonly linear: Linear.Params; readonly adaLN_modulation: AdaLN }
}

/** A tree as DiT params (the keys are checked by StateDict on import, not here). */
export const params = (tree: ParamTree.ParamTree): Params => tree as Params

export interface Inputs {
  /** Latents [B, H, W, C]. */
  readonly x: tf.Tensor4D
  /** Timesteps as the network sees them (DDPM: original indices 0..999; SiT: t in [0, 1]). */
  readonly t: ArrayLike<number>
  /** Class labels; the null class (numClasses) means unconditional. */
  readonly y: ArrayLike<number>
}

export interface Options {
  /**
   * Per-sample gate of every block, [B, depth]: block i computes
   * x ← m·f(x) + (1−m)·x with m = gates[:, i]. Absent: every block is applied.
   */
  readonly gates?: tf.Tensor2D
  /** Replaces every nn.Linear (LoRA, probes); default Linear.apply. */
  readonly linear?: Linear.Apply
}

/** The conditioning vectors after SiLU → Linear: mod [B, chunks·D], the reference's .chunk(n, dim=1) read in place by the fused ops. */
const adaLN = (path: string, p: AdaLN, c: tf.Tensor, linear: Linear.Apply): tf.Tensor =>
  linear(`${path}.adaLN_modulation.1`, p["1"], Fused.silu(c))

/**
 * Labels as one-hot rows, built on the host. The embedding lookup is a
 * matmul with them: tf.gather's gradient needs UnsortedSegmentSum, which the
 * wasm backend lacks.
 */
const oneHot = (labels: ArrayLike<number>, rows: number): tf.Tensor2D => {
  const out = new Float32Array(labels.length * rows)
  for (let b = 0; b < labels.length; b++) {
    const y = labels[b]!
    if (!Number.isInteger(y) || y < 0 || y >= rows) throw new Error(`label ${y} is outside the ${rows}-row label table`)
    out[b * rows + y] = 1
  }
  return tf.tensor2d(out, [labels.length, rows])
}

/**
 * Patch, timestep and label embeddings: tokens x [B, T, D] (patches + fixed
 * position embedding) and the conditioning c = t_emb + y_emb [B, D].
 */
export function embed(
  config: Config.Config,
  p: Params,
  inputs: Inputs,
  linear: Linear.Apply = Linear.apply
): { readonly x: tf.Tensor3D; readonly c: tf.Tensor2D } {
  const [b, h, w, ch] = inputs.x.shape
  if (h !== config.inputSize || w !== config.inputSize || ch !== config.inChannels) {
    throw new Error(`input ${h}×${w}×${ch} does not match ${Config.describe(config)}`)
  }
  if (inputs.t.length !== b || inputs.y.length !== b) {
    throw new Error(`batch of ${b} images with ${inputs.t.length} timesteps and ${inputs.y.length} labels`)
  }
  const ps = config.patchSize
  // Conv2d(kernel = stride = p) as a matmul: weight [D, C, p, p] → [D, p, p, C] → [D, p·p·C], matching patchify's (i, j, c).
  const kernel = tf.reshape(tf.transpose(p.x_embedder.proj.weight, [0, 2, 3, 1]), [config.hiddenSize, ps * ps * ch])
  const patches = Linear.apply("x_embedder.proj", { weight: kernel, bias: p.x_embedder.proj.bias }, Embeddings.patchify(inputs.x, ps))
  const x = tf.add(patches, p.pos_embed) as tf.Tensor3D
  const freqs = tf.tensor2d(Embeddings.timestepEmbedding(inputs.t), [b, Embeddings.timestepFrequencies])
  const mlp = p.t_embedder.mlp
  const tEmb = linear("t_embedder.mlp.2", mlp["2"], Fused.silu(linear("t_embedder.mlp.0", mlp["0"], freqs)))
  const table = p.y_embedder.embedding_table.weight
  const yEmb = tf.matMul(oneHot(inputs.y, table.shape[0]!), table)
  return { x, c: tf.add(tEmb, yEmb) as tf.Tensor2D }
}

/** One adaLN-Zero block (block `index` of the tree, for Linear paths) on tokens x [B, T, D]. */
export function block(
  config: Config.Config,
  p: BlockParams,
  index: number,
  x: tf.Tensor3D,
  c: tf.Tensor2D,
  linear: Linear.Apply = Linear.apply
): tf.Tensor3D {
  const path = `blocks.${index}`
  // mod's chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp.
  const mod = adaLN(path, p.adaLN_modulation, c, linear)
  const qkv = linear(`${path}.attn.qkv`, p.attn.qkv, Fused.layerNormModulate(x, mod, 0, 1))
  const attn = linear(`${path}.attn.proj`, p.attn.proj, Fused.attention(qkv, config.numHeads))
  const x1 = Fused.gatedResidual(x, attn, mod, 2)
  const hidden = Fused.gelu(linear(`${path}.mlp.fc1`, p.mlp.fc1, Fused.layerNormModulate(x1, mod, 3, 4)))
  return Fused.gatedResidual(x1, linear(`${path}.mlp.fc2`, p.mlp.fc2, hidden), mod, 5) as tf.Tensor3D
}

/** Final layer (LN → adaLN shift/scale → Linear) and unpatchify: [B, H, W, C_out]. */
export function finalLayer(
  config: Config.Config,
  p: Params,
  x: tf.Tensor3D,
  c: tf.Tensor2D,
  linear: Linear.Apply = Linear.apply
): tf.Tensor4D {
  // mod's chunks: shift, scale.
  const mod = adaLN("final_layer", p.final_layer.adaLN_modulation, c, linear)
  const out = linear("final_layer.linear", p.final_layer.linear, Fused.layerNormModulate(x, mod, 0, 1)) as tf.Tensor3D
  return Embeddings.unpatchify(out, config.patchSize, Config.outChannels(config))
}

/** x ← m·f(x) + (1−m)·x for the gate column m = gates[:, i] of every sample. */
const gated = (gates: tf.Tensor2D, i: number, x: tf.Tensor3D, fx: tf.Tensor3D): tf.Tensor3D => {
  const m = tf.reshape(tf.slice(gates, [0, i], [-1, 1]), [-1, 1, 1])
  return tf.add(tf.mul(m, fx), tf.mul(tf.sub(1, m), x)) as tf.Tensor3D
}

/**
 * The network with every block's hidden state: `hidden[i]` is the input of
 * block i and `hidden[depth]` the output of the last block (so block i's
 * output is `hidden[i + 1]`). Output [B, H, W, C_out].
 */
export function forwardHidden(
  config: Config.Config,
  tree: ParamTree.ParamTree,
  inputs: Inputs,
  options: Options = {}
): { readonly output: tf.Tensor4D; readonly hidden: ReadonlyArray<tf.Tensor3D> } {
  const p = params(tree)
  if (p.blocks.length !== config.depth) throw new Error(`params hold ${p.blocks.length} blocks, the config says depth ${config.depth}`)
  const gates = options.gates
  if (gates !== undefined && (gates.shape[0] !== inputs.x.shape[0] || gates.shape[1] !== config.depth)) {
    throw new Error(`gates [${gates.shape}] are not [batch ${inputs.x.shape[0]}, depth ${config.depth}]`)
  }
  const linear = options.linear ?? Linear.apply
  const { x: x0, c } = embed(config, p, inputs, linear)
  const hidden: Array<tf.Tensor3D> = [x0]
  let x = x0
  p.blocks.forEach((bp, i) => {
    const fx = block(config, bp, i, x, c, linear)
    x = gates === undefined ? fx : gated(gates, i, x, fx)
    hidden.push(x)
  })
  return { output: finalLayer(config, p, x, c, linear), hidden }
}

/** DiT.forward: [B, H, W, C_out] (ε then v channels when learn_sigma). */
export const forward = (config: Config.Config, tree: ParamTree.ParamTree, inputs: Inputs, options: Options = {}): tf.Tensor4D =>
  forwardHidden(config, tree, inputs, options).output

/**
 * DiT.forward for inference (sampling): the same values, with each block run
 * in its own tidy so that only one block's intermediates are alive at a time.
 * A single tidy holds every block's (the mini teacher at a batch of 128:
 * 2 GB of wasm heap, the 32-bit heap's limit; blockwise: 125 MB). No gates,
 * Linear hook or hidden states.
 */
export function infer(config: Config.Config, tree: ParamTree.ParamTree, inputs: Inputs): tf.Tensor4D {
  const p = params(tree)
  if (p.blocks.length !== config.depth) throw new Error(`params hold ${p.blocks.length} blocks, the config says depth ${config.depth}`)
  return tf.tidy(() => {
    const { x: x0, c } = embed(config, p, inputs)
    let x = x0
    p.blocks.forEach((bp, i) => {
      const previous = x
      x = tf.tidy(() => block(config, bp, i, previous, c))
      previous.dispose()
    })
    return finalLayer(config, p, x, c)
  })
}

/**
 * The model with only the blocks at `kept` (ascending, distinct), renumbered
 * 0..k−1: pruning's export. The tensors are shared with the input tree.
 */
export function keepBlocks<L>(
  config: Config.Config,
  tree: ParamTree.Tree<L>,
  kept: ReadonlyArray<number>
): { readonly config: Config.Config; readonly params: ParamTree.Tree<L> } {
  // Restructures the tree and reads no leaf, so it serves device and host trees alike.
  const { blocks, ...rest } = tree as { readonly blocks: ReadonlyArray<ParamTree.Tree<L>> }
  kept.forEach((k, i) => {
    if (!Number.isInteger(k) || k < 0 || k >= blocks.length) throw new Error(`block ${k} is not in 0..${blocks.length - 1}`)
    if (i > 0 && k <= kept[i - 1]!) throw new Error(`kept blocks must be ascending and distinct, got [${kept}]`)
  })
  if (kept.length === 0) throw new Error("a DiT needs at least one block")
  return { config: { ...config, depth: kept.length }, params: { ...rest, blocks: kept.map((k) => blocks[k]!) } }
}

/** Keys that are not trained (DiT's pos_embed has requires_grad=False). */
export const frozenKeys = ["pos_embed"] as const

/** The trainable sub-tree and the frozen one (empty for a tree without pos_embed), sharing tensors with the input. */
export function split(tree: ParamTree.ParamTree): { readonly trainable: ParamTree.ParamTree; readonly frozen: ParamTree.ParamTree } {
  const { pos_embed, ...trainable } = tree as Record<string, ParamTree.ParamTree>
  return { trainable, frozen: pos_embed === undefined ? {} : { pos_embed } }
}

/** The inverse of split. */
export const join = (trainable: ParamTree.ParamTree, frozen: ParamTree.ParamTree): ParamTree.ParamTree =>
  ({ ...(frozen as Record<string, ParamTree.ParamTree>), ...(trainable as Record<string, ParamTree.ParamTree>) })
