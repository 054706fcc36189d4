/**
 * The ops of a DiT block, each one kernel (with its gradient) on the wasm
 * backend (FusedKernels) and composed from tfjs ops elsewhere. `composed`
 * holds the compositions: the reference the kernels are tested against, and
 * exactly the ops the model used before it had kernels, so cpu and webgpu
 * compute the same numbers as they did.
 *
 * adaLN conditioning comes as one tensor mod [B, n·D] of n chunks (DiT's
 * shift_msa, scale_msa, gate_msa, …); ops that take a chunk take its index,
 * so the chunks are read in place rather than split out.
 */
import * as FusedKernels from "./FusedKernels.ts"
import { tf } from "./tf.ts"

const { names, runKernel: run } = FusedKernels

/** Chunk `index` of mod [B, n·D] as [B, 1, D] (broadcast over tokens). */
const chunk = (mod: tf.Tensor, index: number, d: number): tf.Tensor => tf.expandDims(tf.slice(mod, [0, index * d], [-1, d]), 1)

export const composed = {
  /** nn.Linear on a PyTorch-layout weight [out, in]: x·Wᵀ + b over the last axis. */
  linear: (x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor => {
    const [outFeatures, inFeatures] = weight.shape as [number, number]
    const lead = x.shape.slice(0, -1)
    const flat = tf.reshape(x, [-1, inFeatures])
    const y = tf.add(tf.matMul(flat, weight, false, true), bias)
    return lead.length === 1 ? y : tf.reshape(y, [...lead, outFeatures])
  },

  silu: (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x)),

  /**
   * nn.GELU(approximate="tanh"): ½x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³),
   * computed as x·σ(2u) (the same function; wasm's tanh and pow kernels are
   * 6–8× slower than sigmoid and mul).
   */
  gelu: (x: tf.Tensor): tf.Tensor => {
    const cube = tf.mul(tf.mul(x, x), x)
    return tf.mul(x, tf.sigmoid(tf.mul(2 * Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, cube)))))
  },

  /** LayerNorm without affine parameters over the last axis, then x·(1 + scale) + shift. */
  layerNormModulate: (x: tf.Tensor, mod: tf.Tensor, shift: number, scale: number, eps = 1e-6): tf.Tensor => {
    const d = x.shape[x.shape.length - 1]!
    const { mean, variance } = tf.moments(x, -1, true)
    const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)))
    return tf.add(tf.mul(normed, tf.add(chunk(mod, scale, d), 1)), chunk(mod, shift, d))
  },

  /** x + gate·y. */
  gatedResidual: (x: tf.Tensor, y: tf.Tensor, mod: tf.Tensor, gate: number): tf.Tensor =>
    tf.add(x, tf.mul(chunk(mod, gate, x.shape[x.shape.length - 1]!), y)),

  /**
   * Multi-head self-attention on qkv [B, T, 3·D], its features laid out
   * (3, heads, head_dim) as the reference reshapes them: softmax(q·kᵀ/√hd)·v,
   * heads merged back to [B, T, D].
   */
  attention: (qkv: tf.Tensor, heads: number): tf.Tensor => {
    const [b, t, three] = qkv.shape as [number, number, number]
    const d = three / 3
    const hd = d / heads
    const [q, k, v] = tf.split(qkv, 3, 2).map((part) => tf.transpose(tf.reshape(part, [b, t, heads, hd]), [0, 2, 1, 3]))
    const weights = tf.softmax(tf.mul(tf.matMul(q!, k!, false, true), 1 / Math.sqrt(hd)))
    return tf.reshape(tf.transpose(tf.matMul(weights, v!), [0, 2, 1, 3]), [b, t, d])
  }
}

const checkChunks = (op: string, x: tf.Tensor, mod: tf.Tensor, ...indices: Array<number>): number => {
  const d = x.shape[x.shape.length - 1]!
  if (x.rank !== 3 || mod.rank !== 2 || mod.shape[0] !== x.shape[0] || mod.shape[1]! % d !== 0) {
    throw new Error(`${op}: x [${x.shape}] is not [B, T, D] or mod [${mod.shape}] is not [B, n·D]`)
  }
  const n = mod.shape[1]! / d
  for (const i of indices) if (!Number.isInteger(i) || i < 0 || i >= n) throw new Error(`${op}: chunk ${i} is not one of mod's ${n}`)
  return d
}

export const linear = (x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor =>
  FusedKernels.active() ? run(names.linear, { x, weight, bias }) : composed.linear(x, weight, bias)

export const silu = (x: tf.Tensor): tf.Tensor => FusedKernels.active() ? run(names.silu, { x }) : composed.silu(x)

export const gelu = (x: tf.Tensor): tf.Tensor => FusedKernels.active() ? run(names.gelu, { x }) : composed.gelu(x)

export const layerNormModulate = (x: tf.Tensor, mod: tf.Tensor, shift: number, scale: number, eps = 1e-6): tf.Tensor => {
  const d = checkChunks("layerNormModulate", x, mod, shift, scale)
  return FusedKernels.active()
    ? run(names.layerNormModulate, { x, mod }, { shift: shift * d, scale: scale * d, eps })
    : composed.layerNormModulate(x, mod, shift, scale, eps)
}

export const gatedResidual = (x: tf.Tensor, y: tf.Tensor, mod: tf.Tensor, gate: number): tf.Tensor => {
  const d = checkChunks("gatedResidual", x, mod, gate)
  return FusedKernels.active() ? run(names.gatedResidual, { x, y, mod }, { gate: gate * d }) : composed.gatedResidual(x, y, mod, gate)
}

export const attention = (qkv: tf.Tensor, heads: number): tf.Tensor => {
  if (qkv.rank !== 3 || qkv.shape[2]! % (3 * heads) !== 0) throw new Error(`attention: qkv [${qkv.shape}] is not [B, T, 3·${heads}·head_dim]`)
  if (!FusedKernels.active()) return composed.attention(qkv, heads)
  const [out, probs] = tf.engine().runKernel(names.attention, { qkv }, { heads } as unknown as tf.NamedAttrMap) as Array<tf.Tensor>
  // The tape keeps its own reference to probs for the gradient.
  probs!.dispose()
  return out!
}
