/**
 * A model's weights as the reference state_dict, in and out of safetensors
 * files (reference checkpoints, our model files). Our parameter trees
 * already use the reference state_dict keys and PyTorch layouts, so import
 * and export are (de)serialisation plus a check that every key and shape
 * fits the config. Our own files carry the config as JSON in the
 * safetensors metadata. (A training loop's resumable state is packages/core
 * Checkpoint.)
 */
import { Effect, Option, Schema } from "effect"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as Embeddings from "./Embeddings.ts"

export class StateDictMismatch extends Schema.TaggedError<StateDictMismatch>()("StateDictMismatch", {
  /** The config the file was checked against. */
  model: Schema.String,
  /** The first mismatches, one line each. */
  mismatches: Schema.Array(Schema.String),
  /** How many there are in all. */
  count: Schema.Int
}) {
  override get message(): string {
    const more = this.count > this.mismatches.length ? ` (and ${this.count - this.mismatches.length} more)` : ""
    return `checkpoint does not fit ${this.model}: ${this.count} mismatch${this.count === 1 ? "" : "es"}${more}:\n  ` +
      this.mismatches.join("\n  ")
  }
}

/** How many mismatches an error lists. */
export const listed = 10

/** Every reference state_dict key with its shape, in the reference's state_dict order. */
export function referenceShapes(config: Config.Config): Array<readonly [string, ReadonlyArray<number>]> {
  const d = config.hiddenSize
  const p = config.patchSize
  const linear = (prefix: string, out: number, inp: number) =>
    [[`${prefix}.weight`, [out, inp]], [`${prefix}.bias`, [out]]] as const
  return [
    ["pos_embed", [1, Config.tokens(config), d]],
    ["x_embedder.proj.weight", [d, config.inChannels, p, p]],
    ["x_embedder.proj.bias", [d]],
    ...linear("t_embedder.mlp.0", d, Embeddings.timestepFrequencies),
    ...linear("t_embedder.mlp.2", d, d),
    ["y_embedder.embedding_table.weight", [Config.labelRows(config), d]],
    ...Array.from({ length: config.depth }, (_, i) => [
      ...linear(`blocks.${i}.attn.qkv`, 3 * Config.attentionWidth(config), d),
      ...linear(`blocks.${i}.attn.proj`, d, Config.attentionWidth(config)),
      ...linear(`blocks.${i}.mlp.fc1`, Config.mlpHidden(config), d),
      ...linear(`blocks.${i}.mlp.fc2`, d, Config.mlpHidden(config)),
      ...linear(`blocks.${i}.adaLN_modulation.1`, 6 * d, d)
    ]).flat(),
    ...linear("final_layer.linear", p * p * Config.outChannels(config), d),
    ...linear("final_layer.adaLN_modulation.1", 2 * d, d)
  ]
}

const shapeText = (shape: ReadonlyArray<number>) => `[${shape.join(", ")}]`

/** Mismatches between tensors and expected keys and shapes, in the expected order, then unexpected keys. */
/** What a check needs of a tensor: a host tensor, or a file's listing of one. */
export interface Shaped {
  readonly shape: ReadonlyArray<number>
  readonly dtype: string
}

export function mismatchesOf(
  expected: ReadonlyArray<readonly [string, ReadonlyArray<number>]>,
  tensors: ReadonlyMap<string, Shaped>
): Array<string> {
  const known = new Set(expected.map(([k]) => k))
  const out: Array<string> = []
  for (const [key, shape] of expected) {
    const t = tensors.get(key)
    if (t === undefined) out.push(`missing ${key} ${shapeText(shape)}`)
    else if (t.dtype !== "float32") out.push(`${key} is ${t.dtype}, expected a float tensor`)
    else if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) {
      out.push(`${key} is ${shapeText(t.shape)}, expected ${shapeText(shape)}`)
    }
  }
  for (const key of [...tensors.keys()].sort()) if (!known.has(key)) out.push(`unexpected ${key} ${shapeText(tensors.get(key)!.shape)}`)
  return out
}

/** Mismatches between tensors and a DiT config. */
export const mismatches = (config: Config.Config, tensors: ReadonlyMap<string, Shaped>): Array<string> =>
  mismatchesOf(referenceShapes(config), tensors)

/** Fails with the first mismatches unless the tensors are exactly the expected keys and shapes; `model` names them. */
export const checkShapes = Effect.fn("StateDict.checkShapes")(function*(
  model: string,
  expected: ReadonlyArray<readonly [string, ReadonlyArray<number>]>,
  tensors: ReadonlyMap<string, Shaped>
) {
  const found = mismatchesOf(expected, tensors)
  if (found.length > 0) return yield* new StateDictMismatch({ model, mismatches: found.slice(0, listed), count: found.length })
})

/** Fails with the first mismatches unless the tensors fit the config exactly. */
export const check = (config: Config.Config, tensors: ReadonlyMap<string, Shaped>) =>
  checkShapes(Config.describe(config), referenceShapes(config), tensors)

/** Metadata key of our files: the config as JSON. */
export const configKey = "tinyfusion.dit"

/** Metadata key of our files: the network family ("dit" or "sit"), where it is known. */
export const familyKey = "tinyfusion.family"

/** The config stored in a file's metadata, if any. */
export const storedConfig = Effect.fn("StateDict.storedConfig")(function*(metadata: Readonly<Record<string, string>>) {
  const text = metadata[configKey]
  if (text === undefined) return Option.none<Config.Config>()
  const json = yield* Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: () => new Config.InvalidConfig({ reason: `metadata ${configKey} is not JSON` })
  })
  return Option.some(yield* Config.decode(json))
})

export interface Loaded {
  readonly params: HostTensor.HostTree
  /** The file's metadata. */
  readonly metadata: Readonly<Record<string, string>>
  /** Stored dtype of the tensors read ("F32", "F16", "BF16", …), one entry per distinct dtype. */
  readonly dtypes: ReadonlyArray<string>
}

/**
 * The parameter tree for `config` from a parsed safetensors file. With a
 * prefix (e.g. "ema." for a training checkpoint that holds model and EMA),
 * only keys under it are read and the prefix is removed. Half-precision
 * tensors arrive widened to float32 (exactly).
 */
export const fromFile = Effect.fn("StateDict.fromFile")(function*(
  config: Config.Config,
  file: Safetensors.File,
  options: { readonly prefix?: string } = {}
) {
  const prefix = options.prefix ?? ""
  const dtypes = new Set([...file.dtypes].filter(([key]) => key.startsWith(prefix)).map(([, d]) => d))
  return { ...(yield* fromTensors(config, file.tensors, options)), metadata: file.metadata, dtypes: [...dtypes].sort() } satisfies Loaded
})

/** The parameter tree for `config` from a state_dict (keys under `prefix` only, the prefix removed), checked key by key. */
export const fromTensors = Effect.fn("StateDict.fromTensors")(function*(
  config: Config.Config,
  all: ReadonlyMap<string, HostTensor.HostTensor>,
  options: { readonly prefix?: string } = {}
) {
  const prefix = options.prefix ?? ""
  const tensors = new Map([...all].filter(([key]) => key.startsWith(prefix)).map(([key, t]) => [key.slice(prefix.length), t] as const))
  yield* check(config, tensors)
  return { params: ParamTree.unflatten(referenceShapes(config).map(([key]) => [key, tensors.get(key)!] as const)) as HostTensor.HostTree }
})

/** Parses safetensors bytes and reads them as `fromFile` does. */
export const decode = Effect.fn("StateDict.decode")(function*(
  config: Config.Config,
  bytes: Uint8Array,
  options: { readonly prefix?: string } = {}
) {
  return yield* fromFile(config, yield* Safetensors.decode(bytes), options)
})

/**
 * Writes a parameter tree with exactly the reference keys, in F32, F16 or
 * BF16 (round to nearest even), with our config in the metadata.
 */
export const encode = Effect.fn("StateDict.encode")(function*(
  config: Config.Config,
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
