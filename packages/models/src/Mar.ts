/**
 * MAR (LTH14/mar, models/mar.py) as a pure function of a parameter tree whose
 * dotted keys are the reference state_dict keys. Latents are NHWC; weights
 * keep PyTorch layouts.
 *
 * The network maps latent tokens, a token mask and class labels to one
 * condition vector z per token (forward_mae_encoder + forward_mae_decoder):
 *
 *   encoder  z_proj(tokens); the first `bufferSize` positions hold the class
 *            embedding (fake_latent for the null class); + learned position
 *            embedding; z_proj_ln; the masked tokens are dropped; timm ViT
 *            blocks (pre-LN, exact GELU); encoder_norm
 *   decoder  decoder_embed; the dropped positions are filled with mask_token;
 *            + learned position embedding; blocks; decoder_norm; the buffer
 *            is cut off; + diffusion_pos_embed_learned
 *
 * and the DiffLoss head (`head`, models/diffloss.py's SimpleMLPAdaLN) maps a
 * noised token, its timestep and its z to ε and the variance interpolation v.
 *
 * The blocks form one stack in forward order, encoder first: block i < E is
 * encoder_blocks.i, block E + j is decoder_blocks.j. `forwardHidden` takes a
 * per-sample gate per block (x ← m·f(x) + (1−m)·x), a Linear hook, dropout,
 * and returns every block's input and output; `keepBlocks` selects blocks
 * of the stack and renumbers each half.
 *
 * Token selection (drop the masked tokens, put them back) is a batched
 * matmul with one-hot matrices built on the host: tf.gather's gradient needs
 * UnsortedSegmentSum, which the wasm backend lacks.
 */
import { type ParamTree, tf } from "@tinyfusion/tensor"
import * as Embeddings from "./Embeddings.ts"
import * as Linear from "./Linear.ts"
import * as MarConfig from "./MarConfig.ts"

type Config = MarConfig.MarConfig

export interface Norm {
  readonly weight: tf.Tensor
  readonly bias: tf.Tensor
}

export type BlockParams = {
  readonly norm1: Norm
  readonly attn: { readonly qkv: Linear.Params; readonly proj: Linear.Params }
  readonly norm2: Norm
  readonly mlp: { readonly fc1: Linear.Params; readonly fc2: Linear.Params }
}

type Mlp2 = { readonly "0": Linear.Params; readonly "2": Linear.Params }
type AdaLN = { readonly "1": Linear.Params }

export type HeadParams = {
  readonly time_embed: { readonly mlp: Mlp2 }
  readonly cond_embed: Linear.Params
  readonly input_proj: Linear.Params
  readonly res_blocks: ReadonlyArray<{ readonly in_ln: Norm; readonly mlp: Mlp2; readonly adaLN_modulation: AdaLN }>
  readonly final_layer: { readonly linear: Linear.Params; readonly adaLN_modulation: AdaLN }
}

export type Params = {
  readonly fake_latent: tf.Tensor
  readonly encoder_pos_embed_learned: tf.Tensor
  readonly mask_token: tf.Tensor
  readonly decoder_pos_embed_learned: tf.Tensor
  readonly diffusion_pos_embed_learned: tf.Tensor
  readonly class_emb: { readonly weight: tf.Tensor }
  readonly z_proj: Linear.Params
  readonly z_proj_ln: Norm
  /** Absent in a tree without encoder blocks (a pruned model that kept none). */
  readonly encoder_blocks?: ReadonlyArray<BlockParams>
  readonly encoder_norm: Norm
  readonly decoder_embed: Linear.Params
  readonly decoder_blocks?: ReadonlyArray<BlockParams>
  readonly decoder_norm: Norm
  readonly diffloss: { readonly net: HeadParams }
}

/** A tree as MAR params (the keys are checked by MarStateDict on import, not here). */
export const params = (tree: ParamTree.ParamTree): Params => tree as unknown as Params

const encoderBlocks = (p: Params) => p.encoder_blocks ?? []
const decoderBlocks = (p: Params) => p.decoder_blocks ?? []

/** Which tokens are masked: per sample, 1 = masked (to predict), 0 = seen. Every sample masks as many. */
export interface Mask {
  readonly batch: number
  readonly tokens: number
  readonly values: Uint8Array
  /** Masked tokens per sample. */
  readonly count: number
}

/** A mask from per-sample 0/1 values; throws unless every sample masks the same number of tokens (as the reference's reshape needs). */
export function mask(values: ArrayLike<number>, batch: number, tokens: number): Mask {
  if (values.length !== batch * tokens) throw new Error(`a mask of ${values.length} values for ${batch} samples of ${tokens} tokens`)
  const out = Uint8Array.from(values, (v) => (v ? 1 : 0))
  let count = -1
  for (let b = 0; b < batch; b++) {
    let n = 0
    for (let i = 0; i < tokens; i++) n += out[b * tokens + i]!
    if (count >= 0 && n !== count) throw new Error(`sample ${b} masks ${n} tokens, sample 0 masks ${count}: the encoder needs equal counts`)
    count = n
  }
  return { batch, tokens, values: out, count: Math.max(count, 0) }
}

/** The mask of `order` (a permutation per sample) whose first `count` tokens are masked: mask_by_order. */
export function maskByOrder(orders: ArrayLike<number>, batch: number, tokens: number, count: number): Mask {
  const values = new Uint8Array(batch * tokens)
  for (let b = 0; b < batch; b++) for (let i = 0; i < count; i++) values[b * tokens + orders[b * tokens + i]!] = 1
  return { batch, tokens, values, count }
}

export interface Inputs {
  /** Latent tokens [B, T, tokenDim] (patchify). */
  readonly tokens: tf.Tensor3D
  readonly mask: Mask
  /** Class labels; the null class (numClasses) takes fake_latent. */
  readonly labels: ArrayLike<number>
}

/** Dropout of a training forward: returns x with the module at `path`'s dropout applied (identity at rate 0). */
export type Dropout = (path: string, x: tf.Tensor, rate: number) => tf.Tensor

export interface Options {
  /** Per-sample gate of every block of the stack, [B, depth]. Absent: every block applied. */
  readonly gates?: tf.Tensor2D
  /** Replaces every nn.Linear (LoRA, probes); default Linear.apply. */
  readonly linear?: Linear.Apply
  /** Training's dropout (attn_drop, proj_drop); absent: eval mode. */
  readonly dropout?: Dropout
}

const silu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x))

/** nn.GELU() (exact): ½x·(1 + erf(x/√2)). */
const gelu = (x: tf.Tensor): tf.Tensor => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1))

/** LayerNorm over the last axis, eps 1e-6, with the affine weight and bias when given. */
const layerNorm = (x: tf.Tensor, affine?: Norm): tf.Tensor => {
  const { mean, variance } = tf.moments(x, -1, true)
  const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, 1e-6)))
  return affine === undefined ? normed : tf.add(tf.mul(normed, affine.weight), affine.bias)
}

/**
 * Latents [B, H, W, C] → tokens [B, (H/p)·(W/p), C·p·p], tokens row-major over
 * the grid and features ordered (c, i, j): MAR's patchify ("nchpwq->nhwcpq").
 */
export function patchify(x: tf.Tensor4D, p: number): tf.Tensor3D {
  const [n, h, w, c] = x.shape
  if (h % p !== 0 || w % p !== 0) throw new Error(`latents ${h}×${w} are not divisible into ${p}×${p} patches`)
  return tf.tidy(() => {
    const grid = tf.reshape(x, [n, h / p, p, w / p, p, c])
    return tf.reshape(tf.transpose(grid, [0, 1, 3, 5, 2, 4]), [n, (h / p) * (w / p), c * p * p])
  })
}

/** Tokens [B, T, C·p·p] on a square grid → latents [B, H, W, C]; the inverse of patchify. */
export function unpatchify(tokens: tf.Tensor3D, p: number, channels: number): tf.Tensor4D {
  const [n, t, features] = tokens.shape
  const side = Math.round(Math.sqrt(t))
  if (side * side !== t || features !== channels * p * p) throw new Error(`tokens [${tokens.shape}] are not ${channels}×${p}×${p} patches on a square grid`)
  return tf.tidy(() => {
    const grid = tf.reshape(tokens, [n, side, side, channels, p, p])
    return tf.reshape(tf.transpose(grid, [0, 1, 4, 2, 5, 3]), [n, side * p, side * p, channels])
  })
}

/**
 * One-hot rows selecting the kept positions of the buffered sequence: [B, K, L]
 * with L = buffer + T and K = buffer + unmasked tokens, kept positions in
 * ascending order (what boolean indexing returns).
 */
export function keepSelection(m: Mask, buffer: number): tf.Tensor3D {
  const l = buffer + m.tokens
  const k = buffer + m.tokens - m.count
  const out = new Float32Array(m.batch * k * l)
  for (let b = 0; b < m.batch; b++) {
    let row = 0
    for (let pos = 0; pos < l; pos++) {
      if (pos >= buffer && m.values[b * m.tokens + pos - buffer] === 1) continue
      out[(b * k + row) * l + pos] = 1
      row++
    }
  }
  return tf.tensor3d(out, [m.batch, k, l])
}

/** 1 at the masked positions of the buffered sequence, [B, L, 1] (where mask_token goes). */
const maskedPositions = (m: Mask, buffer: number): tf.Tensor3D => {
  const l = buffer + m.tokens
  const out = new Float32Array(m.batch * l)
  for (let b = 0; b < m.batch; b++) for (let i = 0; i < m.tokens; i++) out[b * l + buffer + i] = m.values[b * m.tokens + i]!
  return tf.tensor3d(out, [m.batch, l, 1])
}

/** The class embedding of each label: a row of class_emb, or fake_latent for the null class; [B, D]. */
export function classEmbedding(config: Config, p: Params, labels: ArrayLike<number>): tf.Tensor2D {
  const rows = config.numClasses + 1
  const onehot = new Float32Array(labels.length * rows)
  for (let b = 0; b < labels.length; b++) {
    const y = labels[b]!
    if (!Number.isInteger(y) || y < 0 || y >= rows) throw new Error(`label ${y} is outside 0..${config.numClasses} (${config.numClasses}: the null class)`)
    onehot[b * rows + y] = 1
  }
  // A matmul rather than tf.gather: the gather's gradient is missing on wasm.
  return tf.matMul(tf.tensor2d(onehot, [labels.length, rows]), tf.concat([p.class_emb.weight, p.fake_latent])) as tf.Tensor2D
}

function attention(heads: number, path: string, p: BlockParams["attn"], x: tf.Tensor3D, linear: Linear.Apply, config: Config, dropout?: Dropout): tf.Tensor {
  const [b, t, d] = x.shape
  const hd = d / heads
  // qkv features are laid out (3, heads, head_dim), as timm reshapes them.
  const [q, k, v] = tf.split(linear(`${path}.qkv`, p.qkv, x), 3, 2).map((part) =>
    tf.transpose(tf.reshape(part, [b, t, heads, hd]), [0, 2, 1, 3])
  )
  const scores = tf.softmax(tf.mul(tf.matMul(q!, k!, false, true), 1 / Math.sqrt(hd)))
  const weights = dropout === undefined ? scores : dropout(`${path}.attn_drop`, scores, config.attnDropout)
  const merged = tf.reshape(tf.transpose(tf.matMul(weights, v!), [0, 2, 1, 3]), [b, t, d])
  const out = linear(`${path}.proj`, p.proj, merged)
  return dropout === undefined ? out : dropout(`${path}.proj_drop`, out, config.projDropout)
}

/** timm's ViT Block: x + attn(norm1(x)), then x + mlp(norm2(x)); `path` is its state_dict prefix. */
export function block(
  config: Config,
  p: BlockParams,
  path: string,
  heads: number,
  x: tf.Tensor3D,
  options: Pick<Options, "linear" | "dropout"> = {}
): tf.Tensor3D {
  const linear = options.linear ?? Linear.apply
  const drop = options.dropout
  const x1 = tf.add(x, attention(heads, `${path}.attn`, p.attn, layerNorm(x, p.norm1) as tf.Tensor3D, linear, config, drop))
  const hidden = gelu(linear(`${path}.mlp.fc1`, p.mlp.fc1, layerNorm(x1, p.norm2)))
  const fc2 = linear(`${path}.mlp.fc2`, p.mlp.fc2, drop === undefined ? hidden : drop(`${path}.mlp.drop1`, hidden, config.projDropout))
  return tf.add(x1, drop === undefined ? fc2 : drop(`${path}.mlp.drop2`, fc2, config.projDropout)) as tf.Tensor3D
}

/** Block i of the stack: its tree, state_dict prefix and head count. */
export function stackBlock(config: Config, p: Params, i: number): { readonly params: BlockParams; readonly path: string; readonly heads: number } {
  const e = encoderBlocks(p).length
  return i < e
    ? { params: encoderBlocks(p)[i]!, path: `encoder_blocks.${i}`, heads: config.encoderNumHeads }
    : { params: decoderBlocks(p)[i - e]!, path: `decoder_blocks.${i - e}`, heads: config.decoderNumHeads }
}

/** Encoder input: the buffered, embedded, normalised sequence with the masked tokens dropped; [B, K, De]. */
export function encoderInput(config: Config, p: Params, inputs: Inputs, linear: Linear.Apply = Linear.apply): tf.Tensor3D {
  const [b, t, features] = inputs.tokens.shape
  if (t !== MarConfig.tokens(config) || features !== MarConfig.tokenDim(config)) {
    throw new Error(`tokens [${inputs.tokens.shape}] do not fit ${MarConfig.describe(config)}`)
  }
  if (inputs.labels.length !== b || inputs.mask.batch !== b || inputs.mask.tokens !== t) {
    throw new Error(`batch of ${b} with ${inputs.labels.length} labels and a mask of ${inputs.mask.batch}×${inputs.mask.tokens}`)
  }
  const x = linear("z_proj", p.z_proj, inputs.tokens)
  const buffer = tf.tile(tf.expandDims(classEmbedding(config, p, inputs.labels), 1), [1, config.bufferSize, 1])
  const full = layerNorm(tf.add(tf.concat([buffer, x], 1), p.encoder_pos_embed_learned), p.z_proj_ln)
  return tf.matMul(keepSelection(inputs.mask, config.bufferSize), full) as tf.Tensor3D
}

/** Decoder input from the encoder's output [B, K, De]: decoder_embed, mask tokens put back, position embedding; [B, L, Dd]. */
export function decoderInput(config: Config, p: Params, encoded: tf.Tensor3D, m: Mask, linear: Linear.Apply = Linear.apply): tf.Tensor3D {
  const x = linear("decoder_embed", p.decoder_embed, encoded)
  const placed = tf.matMul(keepSelection(m, config.bufferSize), x, true, false)
  const masked = tf.mul(maskedPositions(m, config.bufferSize), tf.reshape(p.mask_token, [1, 1, -1]))
  return tf.add(tf.add(placed, masked), p.decoder_pos_embed_learned) as tf.Tensor3D
}

/** The decoder's output after its blocks: decoder_norm, the buffer cut off, + diffusion_pos_embed_learned; z [B, T, Dd]. */
export function decoderOutput(config: Config, p: Params, x: tf.Tensor3D): tf.Tensor3D {
  const normed = layerNorm(x, p.decoder_norm)
  return tf.add(tf.slice(normed, [0, config.bufferSize, 0], [-1, -1, -1]), p.diffusion_pos_embed_learned) as tf.Tensor3D
}

/** x ← m·f(x) + (1−m)·x for the gate column m = gates[:, i] of every sample. */
const gated = (gates: tf.Tensor2D, i: number, x: tf.Tensor3D, fx: tf.Tensor3D): tf.Tensor3D => {
  const m = tf.reshape(tf.slice(gates, [0, i], [-1, 1]), [-1, 1, 1])
  return tf.add(tf.mul(m, fx), tf.mul(tf.sub(1, m), x)) as tf.Tensor3D
}

export interface Hidden {
  /** Block i's input and output (after its gate), in stack order. */
  readonly blocks: ReadonlyArray<{ readonly input: tf.Tensor3D; readonly output: tf.Tensor3D }>
  /** z [B, T, Dd]: the DiffLoss condition of every token. */
  readonly z: tf.Tensor3D
}

/** forward_mae_encoder + forward_mae_decoder with every block's input and output. */
export function forwardHidden(config: Config, tree: ParamTree.ParamTree, inputs: Inputs, options: Options = {}): Hidden {
  const p = params(tree)
  const e = encoderBlocks(p).length
  const depth = e + decoderBlocks(p).length
  if (e !== config.encoderDepth || depth !== MarConfig.depth(config)) {
    throw new Error(`params hold ${e} + ${depth - e} blocks, the config says ${config.encoderDepth} + ${config.decoderDepth}`)
  }
  const gates = options.gates
  if (gates !== undefined && (gates.shape[0] !== inputs.tokens.shape[0] || gates.shape[1] !== depth)) {
    throw new Error(`gates [${gates.shape}] are not [batch ${inputs.tokens.shape[0]}, depth ${depth}]`)
  }
  const linear = options.linear ?? Linear.apply
  const blocks: Array<{ input: tf.Tensor3D; output: tf.Tensor3D }> = []
  const run = (x0: tf.Tensor3D, from: number, to: number) => {
    let x = x0
    for (let i = from; i < to; i++) {
      const b = stackBlock(config, p, i)
      const fx = block(config, b.params, b.path, b.heads, x, options)
      const out = gates === undefined ? fx : gated(gates, i, x, fx)
      blocks.push({ input: x, output: out })
      x = out
    }
    return x
  }
  const encoded = layerNorm(run(encoderInput(config, p, inputs, linear), 0, e), p.encoder_norm) as tf.Tensor3D
  const decoded = run(decoderInput(config, p, encoded, inputs.mask, linear), e, depth)
  return { blocks, z: decoderOutput(config, p, decoded) }
}

/** z [B, T, Dd] of every token. */
export const forward = (config: Config, tree: ParamTree.ParamTree, inputs: Inputs, options: Options = {}): tf.Tensor3D =>
  forwardHidden(config, tree, inputs, options).z

/** The forward for sampling: the same z, each block in its own tidy (one block's intermediates alive at a time). */
export function infer(config: Config, tree: ParamTree.ParamTree, inputs: Inputs): tf.Tensor3D {
  const p = params(tree)
  const e = encoderBlocks(p).length
  const depth = e + decoderBlocks(p).length
  return tf.tidy(() => {
    const run = (x0: tf.Tensor3D, from: number, to: number) => {
      let x = x0
      for (let i = from; i < to; i++) {
        const previous = x
        const b = stackBlock(config, p, i)
        x = tf.tidy(() => block(config, b.params, b.path, b.heads, previous))
        if (previous !== x0) previous.dispose()
      }
      return x
    }
    const encoded = layerNorm(run(encoderInput(config, p, inputs), 0, e), p.encoder_norm) as tf.Tensor3D
    return decoderOutput(config, p, run(decoderInput(config, p, encoded, inputs.mask), e, depth))
  })
}

/**
 * The DiffLoss MLP (SimpleMLPAdaLN.forward): noised tokens x [N, C], network
 * timesteps t (N values) and conditions c [N, Dd] → [N, 2C] (ε, then v).
 */
export function head(
  tree: ParamTree.ParamTree,
  x: tf.Tensor2D,
  t: ArrayLike<number>,
  c: tf.Tensor2D,
  linear: Linear.Apply = Linear.apply
): tf.Tensor2D {
  const net = params(tree).diffloss.net
  const n = x.shape[0]
  if (t.length !== n || c.shape[0] !== n) throw new Error(`${n} head inputs with ${t.length} timesteps and ${c.shape[0]} conditions`)
  const path = "diffloss.net"
  const freqs = tf.tensor2d(Embeddings.timestepEmbedding(t), [n, Embeddings.timestepFrequencies])
  const tEmb = linear(`${path}.time_embed.mlp.2`, net.time_embed.mlp["2"], silu(linear(`${path}.time_embed.mlp.0`, net.time_embed.mlp["0"], freqs)))
  const y = silu(tf.add(tEmb, linear(`${path}.cond_embed`, net.cond_embed, c)))
  let h = linear(`${path}.input_proj`, net.input_proj, x)
  net.res_blocks.forEach((rb, i) => {
    const prefix = `${path}.res_blocks.${i}`
    const [shift, scale, gate] = tf.split(linear(`${prefix}.adaLN_modulation.1`, rb.adaLN_modulation["1"], y), 3, 1)
    const modulated = tf.add(tf.mul(layerNorm(h, rb.in_ln), tf.add(scale!, 1)), shift!)
    const mlp = linear(`${prefix}.mlp.2`, rb.mlp["2"], silu(linear(`${prefix}.mlp.0`, rb.mlp["0"], modulated)))
    h = tf.add(h, tf.mul(gate!, mlp))
  })
  const final = net.final_layer
  const [shift, scale] = tf.split(linear(`${path}.final_layer.adaLN_modulation.1`, final.adaLN_modulation["1"], y), 2, 1)
  return linear(`${path}.final_layer.linear`, final.linear, tf.add(tf.mul(layerNorm(h), tf.add(scale!, 1)), shift!)) as tf.Tensor2D
}

/**
 * The model with only the stack blocks at `kept` (ascending, distinct): those
 * below the encoder depth stay encoder blocks, the rest decoder blocks, each
 * half renumbered from 0. The tensors are shared with the input tree.
 */
export function keepBlocks<L>(
  config: Config,
  tree: ParamTree.Tree<L>,
  kept: ReadonlyArray<number>
): { readonly config: Config; readonly params: ParamTree.Tree<L> } {
  // Restructures the tree and reads no leaf, so it serves device and host trees alike.
  const { encoder_blocks: encoder = [], decoder_blocks: decoder = [], ...rest } = tree as {
    readonly encoder_blocks?: ReadonlyArray<ParamTree.Tree<L>>
    readonly decoder_blocks?: ReadonlyArray<ParamTree.Tree<L>>
  }
  const depth = MarConfig.depth(config)
  kept.forEach((k, i) => {
    if (!Number.isInteger(k) || k < 0 || k >= depth) throw new Error(`block ${k} is not in 0..${depth - 1}`)
    if (i > 0 && k <= kept[i - 1]!) throw new Error(`kept blocks must be ascending and distinct, got [${kept}]`)
  })
  if (kept.length === 0) throw new Error("a MAR needs at least one block")
  const e = config.encoderDepth
  const enc = kept.filter((k) => k < e).map((k) => encoder[k]!)
  const dec = kept.filter((k) => k >= e).map((k) => decoder[k - e]!)
  return {
    config: { ...config, encoderDepth: enc.length, decoderDepth: dec.length },
    params: {
      ...rest,
      ...(enc.length > 0 ? { encoder_blocks: enc } : {}),
      ...(dec.length > 0 ? { decoder_blocks: dec } : {})
    }
  }
}
