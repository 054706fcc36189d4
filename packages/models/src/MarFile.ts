/**
 * A MAR checkpoint file read as it is published — main_mar.py's
 * checkpoint-last.pth (misc.save_model: model, model_ema, optimizer, epoch,
 * scaler, args), a bare state_dict, a safetensors conversion — or one of our
 * MAR files (config in the metadata), as ModelFile reads a DiT/SiT. Its
 * config comes from, in order: a preset named by the caller, our metadata,
 * or the tensor shapes with the checkpoint's args (`MarConfig.infer`).
 * Every key and shape is then checked against that config.
 */
import { Effect, Option } from "effect"
import { type HostTensor, ParamTree, WeightsFile } from "@tinyfusion/tensor"
import * as MarConfig from "./MarConfig.ts"
import * as MarStateDict from "./MarStateDict.ts"
import * as StateDict from "./StateDict.ts"

export interface ReadOptions {
  /** A training checkpoint's state_dict to read (default: the EMA, model_ema, when present). */
  readonly entry?: WeightsFile.Entry | undefined
  /** Check against this preset (with `overrides`) instead of inferring the config. */
  readonly preset?: MarConfig.PresetName | undefined
  readonly overrides?: Partial<MarConfig.MarConfig>
  readonly infer?: Omit<MarConfig.InferOptions, "args">
  /** Read only keys under this prefix (a safetensors conversion of a whole training checkpoint: "model_ema."). */
  readonly prefix?: string
}

export interface Loaded {
  readonly path: string
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
  if (options.preset !== undefined) {
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
  return { path, config, weights, configFrom, params } satisfies Loaded
})
