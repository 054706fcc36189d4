/**
 * A checkpoint file brought into the store as a model artifact (the
 * `model-file` stage), so that a model made elsewhere is evaluated, pruned
 * or distilled like one trained here. The file is read as it is published —
 * DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt, TinyDiT-D14-MaskedKD-500K.pt
 * (torch.save files: a bare state_dict, or a training checkpoint whose `ema`
 * or `model` entry is the state_dict), a safetensors conversion, or one of
 * our own files (config in the metadata) — and its config comes from, in
 * order: a preset named by the caller, our metadata, or the tensor shapes
 * (`Config.infer`; heads by the width's known model, or given). Every key
 * and shape is then checked against that config. The family is the one the
 * file records (`tinyfusion.family`, which our files carry), and a caller
 * asking for another is refused; a file that records none is what the
 * caller says, a DiT by default. The stage key covers the
 * file's sha256, the family, the config and the entry read, not its path:
 * a moved file keeps its key.
 */
import { Effect, Option, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { type HostTensor, WeightsFile } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as ModelArtifact from "./ModelArtifact.ts"

export const ModelFileConfig = Schema.Struct({
  family: ModelArtifact.Family,
  config: Config.Config,
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
  /** The training checkpoint's state_dict that was read (absent: the file is one state_dict). */
  entry: Schema.optionalKey(WeightsFile.Entry)
})
export type ModelFileConfig = typeof ModelFileConfig.Type

/** The file given to the stage is not the one its config names. */
export class ModelFileChanged extends Schema.TaggedError<ModelFileChanged>()("ModelFileChanged", {
  expected: Schema.String,
  found: Schema.String
}) {
  override get message(): string {
    return `the model file's sha256 is ${this.found}, the stage config names ${this.expected}`
  }
}

export interface ReadOptions {
  /** The family asked for: checked against the one the file records (`family`); for a file that records none, dit by default. */
  readonly family?: ModelArtifact.Family | undefined
  /** A training checkpoint's state_dict to read (default: ema when present). */
  readonly entry?: WeightsFile.Entry
  /** Check against this preset (with `overrides`) instead of inferring the config. */
  readonly preset?: Config.PresetName
  readonly overrides?: Partial<Config.Config>
  readonly infer?: Config.InferOptions
  /** Read only keys under this prefix (a safetensors conversion of a whole training checkpoint). */
  readonly prefix?: string
}

/** A model file as inspected: its config decided and every key and shape checked, no tensor data read. */
export interface Described {
  readonly path: string
  readonly family: ModelArtifact.Family
  readonly config: Config.Config
  readonly sha256: string
  readonly weights: Omit<WeightsFile.Listing, "shapes">
  /** Where the config came from, in words, with what was assumed. */
  readonly configFrom: string
  readonly entry?: WeightsFile.Entry
  readonly prefix: string
}

export interface Loaded extends Described {
  readonly params: HostTensor.HostTree
}

const underPrefix = <T>(all: ReadonlyMap<string, T>, prefix: string) =>
  new Map([...all].filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t] as const))

/** A family asked for that is not the one a file records. */
export class FamilyMismatch extends Schema.TaggedError<FamilyMismatch>()("FamilyMismatch", {
  file: Schema.String,
  recorded: Schema.String,
  asked: Schema.String
}) {
  override get message(): string {
    return `${this.file} holds a ${this.recorded} model (its metadata records the family), not a ${this.asked} one`
  }
}

/**
 * The family of a checkpoint file: the one its metadata records (our files
 * do), which `asked` must match; for a file that records none (a reference
 * checkpoint imported without --family), `asked`, by default dit.
 */
export const family = Effect.fn("ModelFile.family")(function*(
  metadata: Readonly<Record<string, string>>,
  asked: ModelArtifact.Family | undefined,
  file: string
) {
  const text = metadata[StateDict.familyKey]
  if (text === undefined) return asked ?? "dit"
  const recorded = Schema.decodeUnknownOption(ModelArtifact.Family)(text)
  if (Option.isNone(recorded)) return yield* new FamilyMismatch({ file, recorded: JSON.stringify(text), asked: asked ?? "dit or sit" })
  if (asked !== undefined && asked !== recorded.value) return yield* new FamilyMismatch({ file, recorded: recorded.value, asked })
  return recorded.value
})

/** Decides a file's config (see the module comment) and checks its keys and shapes, reading no tensor data. */
export const inspect = Effect.fn("ModelFile.inspect")(function*(path: string, options: ReadOptions) {
  const { shapes: listed, ...weights } = yield* WeightsFile.inspect(path, options.entry === undefined ? {} : { entry: options.entry })
  const prefix = options.prefix ?? ""
  const shapes = underPrefix(listed, prefix)
  const stored = yield* StateDict.storedConfig(weights.metadata)
  let config: Config.Config
  let configFrom: string
  if (options.preset !== undefined) {
    config = yield* Config.make(options.preset, options.overrides)
    configFrom = `checked against ${options.preset}${Object.keys(options.overrides ?? {}).length > 0 ? " with overrides" : ""}`
  } else if (Option.isSome(stored)) {
    config = yield* Config.decode({ ...stored.value, ...options.overrides })
    configFrom = "from the file's metadata"
  } else {
    const inferred = yield* Config.infer(new Map([...shapes].map(([k, t]) => [k, t.shape] as const)), options.infer)
    config = yield* Config.decode({ ...inferred.config, ...options.overrides })
    configFrom = `inferred from the tensor shapes${inferred.assumed.length > 0 ? `; assumed ${inferred.assumed.join("; ")}` : ""}`
  }
  yield* StateDict.check(config, shapes)
  const { entry } = weights
  return {
    path,
    family: yield* family(weights.metadata, options.family, path),
    config,
    sha256: yield* WeightsFile.fileSha256(path),
    weights,
    configFrom,
    prefix,
    ...(entry === undefined ? {} : { entry })
  } satisfies Described
})

/** Reads the weights of an inspected file. */
export const load = Effect.fn("ModelFile.load")(function*(described: Described) {
  const { tensors } = yield* WeightsFile.read(described.path, described.entry === undefined ? {} : { entry: described.entry })
  const { params } = yield* StateDict.fromTensors(described.config, tensors, { prefix: described.prefix })
  return { ...described, params } satisfies Loaded
})

/** Inspects and reads a model file. */
export const read = (path: string, options: ReadOptions) => Effect.flatMap(inspect(path, options), load)

/** "DiT-XL/2 (DiT(depth 28, …))" or the description alone, for reports. */
export const describeModel = (family: ModelArtifact.Family, config: Config.Config): string => {
  const preset = Config.presetOf(config)
  const shape = Config.describe(config)
  const named = family === "sit" ? shape.replace(/^DiT/, "SiT") : shape
  return preset === undefined ? named : `${family === "sit" ? preset.replace(/^DiT/, "SiT") : preset}: ${named}`
}

/** The stage that stores an inspected model file as a model artifact; it reads the file only when it runs. */
export const stage = (described: Described) =>
  Stage.make({
    name: "model-file",
    module: import.meta.url,
    config: ModelFileConfig,
    output: ModelArtifact.Model,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        const found = yield* WeightsFile.fileSha256(described.path)
        if (config.sha256 !== found) return yield* new ModelFileChanged({ expected: config.sha256, found })
        const loaded = yield* load(described)
        return yield* ModelArtifact.write(ctx, { family: config.family, config: config.config, params: loaded.params })
      })
  })

/** The stage config of an inspected model file. */
export const stageConfig = (described: Described): ModelFileConfig => ({
  family: described.family,
  config: described.config,
  sha256: described.sha256,
  ...(described.entry === undefined ? {} : { entry: described.entry })
})

/** Inspects a model file and stores it (a cache hit, reading nothing more, when the same file was stored before). */
export const store = Effect.fn("ModelFile.store")(function*(path: string, options: ReadOptions) {
  const described = yield* inspect(path, options)
  return { described, artifact: yield* Stage.run(stage(described), stageConfig(described), {}) }
})
