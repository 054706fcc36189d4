/**
 * A MAR checkpoint file read as it is published — main_mar.py's
 * checkpoint-last.pth (misc.save_model: model, model_ema, optimizer, epoch,
 * scaler, args), a bare state_dict, a safetensors conversion — or one of our
 * MAR files (config in the metadata), as ModelFile reads a DiT/SiT. Its
 * config comes from, in order: a preset named by the caller, our metadata,
 * or the tensor shapes with the checkpoint's args (`MarConfig.infer`).
 * Every key and shape is then checked against that config.
 */
import { Effect, Option, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { type HostTensor, ParamTree, WeightsFile } from "@tinyfusion/tensor"
import * as MarArtifact from "./MarArtifact.ts"
import * as MarConfig from "./MarConfig.ts"
import * as ModelFile from "./ModelFile.ts"
import * as MarStateDict from "./MarStateDict.ts"
import * as StateDict from "./StateDict.ts"

export interface ReadOptions {
  /** A training checkpoint's state_dict to read (default: the EMA, model_ema, when present). */
  readonly entry?: WeightsFile.Entry | undefined
  /** Check against this config (one decided before, as the stage's) instead of deciding it. */
  readonly config?: MarConfig.MarConfig
  /** Check against this preset (with `overrides`) instead of inferring the config. */
  readonly preset?: MarConfig.PresetName | undefined
  readonly overrides?: Partial<MarConfig.MarConfig>
  readonly infer?: Omit<MarConfig.InferOptions, "args">
  /** Read only keys under this prefix (a safetensors conversion of a whole training checkpoint: "model_ema."). */
  readonly prefix?: string
}

export interface Loaded {
  readonly path: string
  readonly prefix: string
  readonly config: MarConfig.MarConfig
  readonly weights: Omit<WeightsFile.Weights, "tensors">
  /** Where the config came from, in words, with what was assumed. */
  readonly configFrom: string
  readonly params: HostTensor.HostTree
}

/** Reads a MAR checkpoint file, deciding its config (see the module comment) and checking every key and shape. */
export const read = Effect.fn("MarFile.read")(function*(path: string, options: ReadOptions = {}) {
  const { tensors: all, ...weights } = yield* WeightsFile.read(path, options.entry === undefined ? {} : { entry: options.entry })
  const prefix = options.prefix ?? ""
  const tensors = new Map([...all].filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t] as const))
  const stored = yield* MarStateDict.storedConfig(weights.metadata)
  const overridden = Object.keys(options.overrides ?? {}).length > 0 ? " with overrides" : ""
  let config: MarConfig.MarConfig
  let configFrom: string
  if (options.config !== undefined) {
    config = options.config
    configFrom = "as given"
  } else if (options.preset !== undefined) {
    config = yield* MarConfig.make(options.preset, options.overrides)
    configFrom = `checked against ${options.preset}${overridden}`
  } else if (Option.isSome(stored)) {
    config = yield* MarConfig.decode({ ...stored.value, ...options.overrides })
    configFrom = `from the file's metadata${overridden}`
  } else {
    const shapes = new Map([...tensors].map(([k, t]) => [k, t.shape] as const))
    const inferred = yield* MarConfig.infer(shapes, { ...options.infer, args: weights.args })
    config = yield* MarConfig.decode({ ...inferred.config, ...options.overrides })
    const from = weights.args === undefined ? "the tensor shapes" : "the tensor shapes and the checkpoint's args"
    configFrom = `inferred from ${from}${inferred.assumed.length > 0 ? `; assumed ${inferred.assumed.join("; ")}` : ""}`
  }
  yield* StateDict.checkShapes(MarConfig.describe(config), MarStateDict.referenceShapes(config), tensors)
  const params = ParamTree.unflatten(MarStateDict.referenceShapes(config).map(([key]) => [key, tensors.get(key)!] as const)) as HostTensor.HostTree
  return { path, prefix, config, weights, configFrom, params } satisfies Loaded
})

export const MarFileConfig = Schema.Struct({
  config: MarConfig.MarConfig,
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
  /** The training checkpoint's state_dict that was read (absent: the file is one state_dict). */
  entry: Schema.optionalKey(WeightsFile.Entry)
})
export type MarFileConfig = typeof MarFileConfig.Type

/**
 * The stage that stores a read MAR file as a MAR artifact (ModelFile's
 * `model-file` for a MAR): keyed by the file's sha256, config and entry, not
 * its path; it reads the file again only when it runs.
 */
export const stage = (loaded: Loaded) =>
  Stage.make({
    name: "mar-file",
    module: import.meta.url,
    config: MarFileConfig,
    output: MarArtifact.Model,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        const found = yield* WeightsFile.fileSha256(loaded.path)
        if (config.sha256 !== found) return yield* new ModelFile.ModelFileChanged({ expected: config.sha256, found })
        const again = yield* read(loaded.path, { ...(config.entry === undefined ? {} : { entry: config.entry }), config: config.config, prefix: loaded.prefix })
        return yield* MarArtifact.write(ctx, { config: config.config, params: again.params })
      })
  })

/** The stage config of a read MAR file. */
export const stageConfig = Effect.fn("MarFile.stageConfig")(function*(loaded: Loaded) {
  return {
    config: loaded.config,
    sha256: yield* WeightsFile.fileSha256(loaded.path),
    ...(loaded.weights.entry === undefined ? {} : { entry: loaded.weights.entry })
  } satisfies MarFileConfig
})
