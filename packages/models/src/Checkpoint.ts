/**
 * Reference checkpoints in and out. Our parameter trees already use the
 * reference state_dict keys and PyTorch layouts, so import and export are
 * (de)serialisation plus a check that every key and shape fits the config.
 * Our own files carry the config as JSON in the safetensors metadata.
 */
import { Effect, Option, Schema } from "effect"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as Embeddings from "./Embeddings.ts"

export class CheckpointMismatch extends Schema.TaggedError<CheckpointMismatch>()("CheckpointMismatch", {
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

/** Mismatches between tensors and the config, in reference key order, then unexpected keys. */
export const mismatches = (config: Config.Config, tensors: ReadonlyMap<string, HostTensor.HostTensor>): Array<string> =>
  mismatchesOf(referenceShapes(config), tensors)

/** Mismatches between tensors and expected (key, shape) pairs, in their order, then unexpected keys. */
export function mismatchesOf(
  expected: ReadonlyArray<readonly [string, ReadonlyArray<number>]>,
  tensors: ReadonlyMap<string, HostTensor.HostTensor>
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

/** Fails with the first mismatches unless the tensors fit the config exactly. */
export const check = Effect.fn("Checkpoint.check")(function*(
  config: Config.Config,
  tensors: ReadonlyMap<string, HostTensor.HostTensor>
) {
  const found = mismatches(config, tensors)
  if (found.length > 0) {
    return yield* new CheckpointMismatch({ model: Config.describe(config), mismatches: found.slice(0, listed), count: found.length })
  }
})

/** Metadata key of our files: the config as JSON. */
export const configKey = "tinyfusion.dit"

/** The config stored in a file's metadata, if any. */
export const storedConfig = Effect.fn("Checkpoint.storedConfig")(function*(metadata: Readonly<Record<string, string>>) {
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
export const fromFile = Effect.fn("Checkpoint.fromFile")(function*(
  config: Config.Config,
  file: Safetensors.File,
  options: { readonly prefix?: string } = {}
) {
  const prefix = options.prefix ?? ""
  const tensors = new Map<string, HostTensor.HostTensor>()
  const dtypes = new Set<string>()
  for (const [key, t] of file.tensors) {
    if (!key.startsWith(prefix)) continue
    tensors.set(key.slice(prefix.length), t)
    dtypes.add(file.dtypes.get(key)!)
  }
  yield* check(config, tensors)
  return {
    params: ParamTree.unflatten(referenceShapes(config).map(([key]) => [key, tensors.get(key)!] as const)),
    metadata: file.metadata,
    dtypes: [...dtypes].sort()
  } satisfies Loaded
})

/** Parses safetensors bytes and reads them as `fromFile` does. */
export const decode = Effect.fn("Checkpoint.decode")(function*(
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
export const encode = Effect.fn("Checkpoint.encode")(function*(
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
