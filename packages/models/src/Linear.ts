/**
 * nn.Linear on a PyTorch-layout weight [out, in]: y = x·Wᵀ + b over the last
 * axis. Every Linear of the DiT goes through an `Apply` named by its module
 * path ("blocks.3.attn.qkv"), so a weight transform — LoRA's ΔW = α·B·A, a
 * frozen/trainable split, a probe — replaces one function instead of
 * editing the model.
 */
import { Fused, type tf } from "@tinyfusion/tensor"

export type Params = {
  readonly weight: tf.Tensor
  readonly bias: tf.Tensor
}

/** Applies the Linear at `path` (its state_dict prefix) to x [..., in]. */
export type Apply = (path: string, layer: Params, x: tf.Tensor) => tf.Tensor

/** The plain nn.Linear (one fused kernel on wasm). */
export const apply: Apply = (_path, layer, x) => Fused.linear(x, layer.weight, layer.bias)
