/**
 * MAR checkpoints in and out, and the reference initialisation. Our trees
 * use the reference state_dict keys (models/mar.py, models/diffloss.py,
 * timm's ViT Block), so an official checkpoint's `model` or `model_ema`
 * dict imports as it is and ours export for the reference code. Our files
 * carry the config as JSON in the safetensors metadata.
 */
import { Effect, Option } from "effect"
import { HostTensor, ParamTree, Rng, Safetensors } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import { InvalidConfig } from "./Config.ts"
import * as Embeddings from "./Embeddings.ts"
import * as MarConfig from "./MarConfig.ts"

type Config = MarConfig.MarConfig
type Shapes = Array<readonly [string, ReadonlyArray<number>]>

const linear = (prefix: string, out: number, inp: number): Shapes => [[`${prefix}.weight`, [out, inp]], [`${prefix}.bias`, [out]]]
const norm = (prefix: string, dim: number): Shapes => [[`${prefix}.weight`, [dim]], [`${prefix}.bias`, [dim]]]

const blocks = (config: Config, name: string, depth: number, dim: number): Shapes =>
  Array.from({ length: depth }, (_, i) => {
    const p = `${name}.${i}`
    const hidden = MarConfig.mlpHidden(dim, config)
    return [
      ...norm(`${p}.norm1`, dim),
      ...linear(`${p}.attn.qkv`, 3 * dim, dim),
      ...linear(`${p}.attn.proj`, dim, dim),
      ...norm(`${p}.norm2`, dim),
      ...linear(`${p}.mlp.fc1`, hidden, dim),
      ...linear(`${p}.mlp.fc2`, dim, hidden)
    ]
  }).flat()

/**
 * Every reference state_dict key with its shape, in state_dict order (a
 * module's own parameters, then its submodules in registration order).
 */
export function referenceShapes(config: Config): Shapes {
  const de = config.encoderEmbedDim
  const dd = config.decoderEmbedDim
  const l = config.bufferSize + MarConfig.tokens(config)
  const c = MarConfig.tokenDim(config)
  const w = config.difflossWidth
  const net = "diffloss.net"
  return [
    ["fake_latent", [1, de]],
    ["encoder_pos_embed_learned", [1, l, de]],
    ["mask_token", [1, 1, dd]],
    ["decoder_pos_embed_learned", [1, l, dd]],
    ["diffusion_pos_embed_learned", [1, MarConfig.tokens(config), dd]],
    ["class_emb.weight", [config.numClasses, de]],
    ...linear("z_proj", de, c),
    ...norm("z_proj_ln", de),
    ...blocks(config, "encoder_blocks", config.encoderDepth, de),
    ...norm("encoder_norm", de),
    ...linear("decoder_embed", dd, de),
    ...blocks(config, "decoder_blocks", config.decoderDepth, dd),
    ...norm("decoder_norm", dd),
    ...linear(`${net}.time_embed.mlp.0`, w, Embeddings.timestepFrequencies),
    ...linear(`${net}.time_embed.mlp.2`, w, w),
    ...linear(`${net}.cond_embed`, w, dd),
    ...linear(`${net}.input_proj`, w, c),
    ...Array.from({ length: config.difflossDepth }, (_, i) => [
      ...norm(`${net}.res_blocks.${i}.in_ln`, w),
      ...linear(`${net}.res_blocks.${i}.mlp.0`, w, w),
      ...linear(`${net}.res_blocks.${i}.mlp.2`, w, w),
      ...linear(`${net}.res_blocks.${i}.adaLN_modulation.1`, 3 * w, w)
    ]).flat(),
    ...linear(`${net}.final_layer.linear`, 2 * c, w),
    ...linear(`${net}.final_layer.adaLN_modulation.1`, 2 * w, w)
  ]
}

/** Parameters of a model of this shape (every tensor of the state_dict). */
export const parameterCount = (config: Config): number => referenceShapes(config).reduce((n, [, s]) => n + HostTensor.numel(s), 0)

type Rule = "xavier" | "normal" | "zeros" | "ones"

/**
 * MAR.initialize_weights, then DiffLoss's own (built after it, so MAR's
 * pass does not touch the head): N(0, 0.02) for class_emb, fake_latent,
 * mask_token and the three position embeddings; Xavier-uniform Linear
 * weights, zero biases, LayerNorm 1 and 0; in the head N(0, 0.02) for the
 * time-MLP weights and zero adaLN output layers and final linear.
 */
const rule = (key: string): Rule => {
  if (key.includes("norm") || key.includes("_ln")) return key.endsWith(".weight") ? "ones" : "zeros"
  if (key.endsWith(".bias")) return "zeros"
  if (key.startsWith("diffloss.")) {
    if (key.includes("adaLN_modulation") || key.startsWith("diffloss.net.final_layer.linear")) return "zeros"
    if (key.includes(".time_embed.")) return "normal"
    return "xavier"
  }
  if (key.startsWith("class_emb.") || !key.includes(".")) return "normal"
  return "xavier"
}

const values = (key: string, shape: ReadonlyArray<number>, seed: number): Float32Array => {
  const n = HostTensor.numel(shape)
  const stream = Rng.stream(seed, `mar/init/${key}`)
  switch (rule(key)) {
    case "zeros":
      return new Float32Array(n)
    case "ones":
      return new Float32Array(n).fill(1)
    case "normal":
      return Rng.normal(stream, 0, n).map((v) => v * 0.02)
    case "xavier": {
      const bound = Math.sqrt(6 / (shape[0]! + shape[1]!))
      return Rng.uniform(stream, 0, n).map((u) => (2 * u - 1) * bound)
    }
  }
}

/** The reference initialisation as host tensors; every key draws from its own Rng stream. */
export const init = (config: Config, seed: number): HostTensor.HostTree =>
  ParamTree.unflatten(referenceShapes(config).map(([key, shape]) => [key, HostTensor.float32(shape, values(key, shape, seed))] as const))

/** Fails with the first mismatches unless the tensors fit the config exactly. */
export const check = Effect.fn("MarStateDict.check")(function*(config: Config, tensors: ReadonlyMap<string, HostTensor.HostTensor>) {
  const found = StateDict.mismatchesOf(referenceShapes(config), tensors)
  if (found.length > 0) {
    return yield* new StateDict.StateDictMismatch({
      model: MarConfig.describe(config),
      mismatches: found.slice(0, StateDict.listed),
      count: found.length
    })
  }
})

/** Metadata key of our MAR files: the config as JSON. */
export const configKey = "tinyfusion.mar"

/** The config stored in a file's metadata, if any. */
export const storedConfig = Effect.fn("MarStateDict.storedConfig")(function*(metadata: Readonly<Record<string, string>>) {
  const text = metadata[configKey]
  if (text === undefined) return Option.none<Config>()
  const json = yield* Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: () => new InvalidConfig({ reason: `metadata ${configKey} is not JSON` })
  })
  return Option.some(yield* MarConfig.decode(json))
})

/**
 * The tree for `config` from safetensors bytes. With a prefix ("model_ema."
 * for an official training checkpoint's EMA dict flattened into one file),
 * only keys under it are read and the prefix is removed.
 */
export const decode = Effect.fn("MarStateDict.decode")(function*(config: Config, bytes: Uint8Array, options: { readonly prefix?: string } = {}) {
  const file = yield* Safetensors.decode(bytes)
  const prefix = options.prefix ?? ""
  const tensors = new Map<string, HostTensor.HostTensor>()
  for (const [key, t] of file.tensors) if (key.startsWith(prefix)) tensors.set(key.slice(prefix.length), t)
  yield* check(config, tensors)
  return {
    params: ParamTree.unflatten(referenceShapes(config).map(([key]) => [key, tensors.get(key)!] as const)) as HostTensor.HostTree,
    metadata: file.metadata
  }
})

/** Writes a tree with exactly the reference keys (F32, F16 or BF16), with our config in the metadata. */
export const encode = Effect.fn("MarStateDict.encode")(function*(
  config: Config,
  params: HostTensor.HostTree,
  options: { readonly dtype?: Safetensors.WriteDtype; readonly metadata?: Readonly<Record<string, string>> } = {}
) {
  const tensors = new Map(ParamTree.flatten(params, HostTensor.isHostTensor))
  yield* check(config, tensors)
  return Safetensors.encode(tensors, {
    dtype: options.dtype ?? "F32",
    metadata: { format: "pt", ...options.metadata, [configKey]: JSON.stringify(config) }
  })
})
