/**
 * LoRA (Hu et al.) as the co-optimised weight update ΔW of mask learning
 * (paper eq. 7): W + α/r · B·A on every Linear of the network, as the
 * reference installs torchtune's LoRALinear on every nn.Linear (attention,
 * MLP, adaLN, timestep embedder, final layer; not the patch conv nor the
 * label table). A [r, in] starts Kaiming-uniform with a = √5 (torch's Linear
 * default: U(±1/√in)), B [out, r] at zero, so the update starts at zero.
 *
 * The adapters are a parameter tree keyed like the reference's LoRA modules:
 * `<linear path>.lora_a.weight`, `<linear path>.lora_b.weight`.
 */
import { Linear } from "@tinyfusion/models"
import { HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import type { LinearLayout } from "./BlockStack.ts"

/** Fresh adapters of rank r for these Linears, on the host; every A draws from its own stream. */
export function init(linears: ReadonlyArray<LinearLayout>, rank: number, seed: number): HostTensor.HostTree {
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRA rank must be a positive integer, got ${rank}`)
  return ParamTree.unflatten(linears.flatMap(({ path, inFeatures, outFeatures }) => {
    const bound = 1 / Math.sqrt(inFeatures)
    const a = Rng.uniform(Rng.stream(seed, `lora/${path}`), 0, rank * inFeatures).map((u) => (2 * u - 1) * bound)
    return [
      [`${path}.lora_a.weight`, HostTensor.float32([rank, inFeatures], a)] as const,
      [`${path}.lora_b.weight`, HostTensor.float32([outFeatures, rank], new Float32Array(outFeatures * rank))] as const
    ]
  }))
}

type Adapter = {
  readonly lora_a: { readonly weight: tf.Tensor }
  readonly lora_b: { readonly weight: tf.Tensor }
}

/**
 * The Linear hook of the adapted network: the layer's weight plus scale·B·A
 * (scale = α/r), then the plain Linear. Merging ΔW into W is the same
 * function as the reference's separate x·Aᵀ·Bᵀ branch; it keeps what the
 * backward pass holds at the size of the weights, where the branch holds
 * [tokens, out] activations per Linear (measured on wasm, mini teacher at
 * batch 32: 1.95 GB of heap merged, 2.46 GB as a branch; batch 64 as a
 * branch overruns the 4 GB wasm heap). Every Linear must have an adapter.
 */
export const linear = (adapters: ParamTree.ParamTree, scale: number): Linear.Apply => (path, layer, x) => {
  // The adapters were made by `init` for every Linear: this path's is an Adapter.
  const adapter = ParamTree.at(adapters, path) as Adapter
  const delta = tf.mul(tf.matMul(adapter.lora_b.weight, adapter.lora_a.weight), scale)
  return Linear.apply(path, { weight: tf.add(layer.weight, delta), bias: layer.bias }, x)
}
