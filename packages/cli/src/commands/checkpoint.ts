/**
 * `tinyfusion checkpoint import|export`: reference DiT/SiT/MAR checkpoints in
 * and out. `import` reads a file as it is published (a torch.save .pt/.pth —
 * DiT's bare state_dict, a training checkpoint's ema/model entry, MAR's
 * checkpoint-last.pth with model_ema/model — or safetensors in
 * F32/F16/BF16), takes its config from --model or else from the tensor shapes
 * (a MAR's training checkpoint adds its args; --heads is asked only when
 * nothing names a known model, and what was assumed is said), checks every
 * key and shape, and writes our float32 file with the config in its
 * metadata; `export` writes exactly the reference keys, so a (pruned) model
 * loads in the reference code with load_state_dict.
 */
import { Console, Effect, FileSystem, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { Config, MarConfig, MarFile, MarStateDict, ModelFile, StateDict } from "@tinyfusion/models"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as CheckedFlags from "../CheckedFlags.ts"

/** Preset names of either family (both have a `mini`: the family decides which). */
const presetNames = [...new Set<string>([...Config.presetNames, ...MarConfig.presetNames])]

const model = Flag.Literals("model", presetNames).pipe(
  Flag.withDescription("Preset the file is checked against (DiT-XL/2 … DiT-S/8, TinyDiT-D19/D14/D7, mini; MAR-B/L/H, TinyMAR-D16, mini, mini-base)"),
  Flag.optional
)

/** A preset name of the family, or an error naming the family's presets. */
const presetOf = <N extends string>(name: string, names: ReadonlyArray<N>, family: string) =>
  names.includes(name as N)
    ? Effect.succeed(name as N)
    : Effect.fail(new Config.InvalidConfig({ reason: `--model ${name} is not a ${family} preset (${names.join(", ")})` }))

const int = (name: string, description: string) => CheckedFlags.count(name).pipe(Flag.withDescription(description), Flag.optional)

/** Flags that override single fields of the preset (a pruned depth, a mini width…). */
const overrides = {
  depth: int("depth", "Number of blocks (e.g. 14 for a pruned XL/2)"),
  hidden: int("hidden", "Hidden width"),
  heads: int("heads", "Attention heads"),
  patch: int("patch", "Patch size"),
  inputSize: int("input-size", "Latent side"),
  channels: int("channels", "Latent channels"),
  classes: int("classes", "Number of classes")
}

type Overrides = { readonly [K in keyof typeof overrides]: Option.Option<number> }

const overridden = (o: Overrides): Partial<Config.Config> => {
  const fields: Array<[keyof Config.Config, Option.Option<number>]> = [
    ["depth", o.depth],
    ["hiddenSize", o.hidden],
    ["numHeads", o.heads],
    ["patchSize", o.patch],
    ["inputSize", o.inputSize],
    ["inChannels", o.channels],
    ["numClasses", o.classes]
  ]
  return Object.fromEntries(fields.flatMap(([k, v]) => (Option.isSome(v) ? [[k, v.value]] : [])))
}

/** Writes through a temporary file and a rename, so a failed write leaves no partial file. */
export const writeAtomic = Effect.fn("checkpoint.writeAtomic")(function*(path: string, bytes: Uint8Array) {
  const fs = yield* FileSystem.FileSystem
  const temp = `${path}.partial-${process.pid}`
  yield* fs.writeFile(temp, bytes).pipe(Effect.onError(() => fs.remove(temp, { force: true }).pipe(Effect.ignore)))
  yield* fs.rename(temp, path)
})

const parameters = (params: HostTensor.HostTree) =>
  ParamTree.flatten(params, HostTensor.isHostTensor).reduce((n, [, t]) => n + HostTensor.numel(t.shape), 0).toLocaleString("en-US")

const summary = (config: Config.Config, params: HostTensor.HostTree) => `${ModelFile.describeModel("dit", config)}: ${parameters(params)} parameters`

const marSummary = (config: MarConfig.MarConfig, params: HostTensor.HostTree) => {
  const preset = MarConfig.presetNames.find((name) => JSON.stringify(MarConfig.presets[name]) === JSON.stringify(config))
  return `${preset === undefined ? "" : `${preset}: `}${MarConfig.describe(config)}: ${parameters(params)} parameters`
}

/** The DiT overrides a MAR cannot take (its two halves have their own depth and width). */
const refusedForMar = (o: Overrides) =>
  (["depth", "hidden", "inputSize", "channels", "classes"] as const).filter((k) => Option.isSome(o[k]))

/** `import --family mar`: a MAR checkpoint (main_mar.py's checkpoint-last.pth, a state_dict, safetensors) into our MAR file. */
const importMar = Effect.fn("checkpoint.importMar")(function*(o: Overrides & {
  readonly input: string
  readonly out: string
  readonly model: Option.Option<string>
  readonly weights: Option.Option<"ema" | "model">
  readonly classDropout: Option.Option<number>
  readonly prefix: string
}) {
  const refused = [...refusedForMar(o), ...(Option.isSome(o.classDropout) ? ["classDropout"] : [])]
  if (refused.length > 0) {
    return yield* new Config.InvalidConfig({
      reason: `a MAR takes its shape from the file (or --model, --heads, --patch); not --${refused.map((k) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).join(", --")}`
    })
  }
  const heads = Option.getOrUndefined(o.heads)
  const patch = Option.getOrUndefined(o.patch)
  const loaded = yield* MarFile.read(o.input, {
    entry: Option.getOrUndefined(o.weights),
    prefix: o.prefix,
    ...(Option.isSome(o.model)
      ? {
        preset: yield* presetOf(o.model.value, MarConfig.presetNames, "MAR"),
        overrides: {
          ...(heads === undefined ? {} : { encoderNumHeads: heads, decoderNumHeads: heads }),
          ...(patch === undefined ? {} : { patchSize: patch })
        }
      }
      : { infer: { heads, patch } })
  })
  const metadata = { "tinyfusion.source": o.input, [StateDict.familyKey]: "mar" }
  yield* writeAtomic(o.out, yield* MarStateDict.encode(loaded.config, loaded.params, { metadata }))
  const unread = loaded.weights.unread.length > 0 ? `; left unread: ${loaded.weights.unread.join(", ")}` : ""
  yield* Console.log(
    `imported ${o.input} (${loaded.weights.format}, ${loaded.weights.source}${unread}) → ${o.out}\n` +
      `config ${loaded.configFrom}\n${marSummary(loaded.config, loaded.params)}`
  )
})

const importCommand = Command.make(
  "import",
  {
    input: Argument.String("reference").pipe(Argument.withDescription("Reference checkpoint: a torch.save file (.pt, .pth) or .safetensors")),
    out: Flag.String("out").pipe(Flag.withDescription("Where to write our checkpoint (float32 safetensors)")),
    model: Flag.Literals("model", presetNames).pipe(
      Flag.withDescription("Check against this preset of the family instead of reading the config from the tensor shapes"),
      Flag.optional
    ),
    weights: Flag.Literals("weights", ["ema", "model"]).pipe(
      Flag.withDescription("A training checkpoint's state_dict to read (default: ema — DiT's `ema`, MAR's `model_ema` —, as DiT's find_model)"),
      Flag.optional
    ),
    classDropout: CheckedFlags.fraction("class-dropout").pipe(
      Flag.withDescription("Label dropout the model was trained with (default 0.1, DiT's: the label table's last row is the null class)"),
      Flag.optional
    ),
    prefix: Flag.String("prefix").pipe(
      Flag.withDescription("Read only keys under this prefix, e.g. ema. for a safetensors conversion of a whole training checkpoint"),
      Flag.withDefault("")
    ),
    family: Flag.Literals("family", ["dit", "sit", "mar"]).pipe(
      Flag.withDescription("The network family: mar reads a MAR (LTH14/mar) checkpoint; dit/sit are recorded in the file (DiT and SiT checkpoints share a layout; checked against one the file records; without either, eval and sample take the file as a DiT unless told)"),
      Flag.optional
    ),
    ...overrides
  },
  Effect.fn(function*(o) {
    if (Option.contains(o.family, "mar")) return yield* importMar(o)
    const asked = Option.flatMap(o.family, (f) => (f === "mar" ? Option.none() : Option.some(f)))
    const preset = Option.isSome(o.model) ? Option.some(yield* presetOf(o.model.value, Config.presetNames, "DiT/SiT")) : Option.none()
    const { numHeads: heads, ...rest } = overridden(o)
    const loaded = yield* ModelFile.read(o.input, {
      family: Option.getOrUndefined(asked),
      prefix: o.prefix,
      ...(Option.isSome(o.weights) ? { entry: o.weights.value } : {}),
      ...(Option.isSome(preset)
        ? { preset: preset.value, overrides: overridden(o) }
        : {
          overrides: rest,
          infer: { ...(heads === undefined ? {} : { heads }), ...(Option.isSome(o.classDropout) ? { classDropoutProb: o.classDropout.value } : {}) }
        })
    })
    // The family goes in when it is known: given, or recorded by the file read.
    const known = Option.orElse(asked, () => Option.fromUndefinedOr(loaded.weights.metadata[StateDict.familyKey]))
    const family = Option.match(known, { onNone: () => ({}), onSome: (f) => ({ [StateDict.familyKey]: f }) })
    yield* writeAtomic(o.out, yield* StateDict.encode(loaded.config, loaded.params, { metadata: { "tinyfusion.source": o.input, ...family } }))
    const unread = loaded.weights.unread.length > 0 ? `; left unread: ${loaded.weights.unread.join(", ")}` : ""
    yield* Console.log(
      `imported ${o.input} (${loaded.weights.format}, ${loaded.weights.source}${unread}) → ${o.out}\n` +
        `config ${loaded.configFrom}\n${summary(loaded.config, loaded.params)}`
    )
  })
).pipe(Command.withDescription("Read a reference DiT/SiT/MAR checkpoint (.pt, .pth or safetensors) into our float32 params, checking every key and shape"))

const exportCommand = Command.make(
  "export",
  {
    input: Argument.String("checkpoint").pipe(Argument.withDescription("Our checkpoint (.safetensors)")),
    out: Flag.String("out").pipe(Flag.withDescription("Where to write the reference checkpoint")),
    dtype: Flag.Literals("dtype", ["f32", "f16", "bf16"]).pipe(
      Flag.withDescription("Stored precision (f16/bf16 round to nearest even)"),
      Flag.withDefault("f32" as const)
    ),
    model,
    ...overrides
  },
  Effect.fn(function*(o) {
    const fs = yield* FileSystem.FileSystem
    const file = yield* Safetensors.decode(yield* fs.readFile(o.input))
    const dtype = ({ f32: "F32", f16: "F16", bf16: "BF16" } as const)[o.dtype]
    const mar = yield* MarStateDict.storedConfig(file.metadata)
    if (Option.isSome(mar)) {
      const refused = refusedForMar(o)
      if (refused.length > 0 || Option.isSome(o.model)) {
        return yield* new Config.InvalidConfig({ reason: `${o.input} is a MAR file and says its shape; it takes no --model, --depth, --hidden, --input-size, --channels or --classes` })
      }
      const heads = Option.getOrUndefined(o.heads)
      const config = yield* MarConfig.decode({
        ...mar.value,
        ...(heads === undefined ? {} : { encoderNumHeads: heads, decoderNumHeads: heads }),
        ...Option.match(o.patch, { onNone: () => ({}), onSome: (patchSize) => ({ patchSize }) })
      })
      const loaded = yield* MarStateDict.decode(config, yield* fs.readFile(o.input))
      yield* writeAtomic(o.out, yield* MarStateDict.encode(config, loaded.params, { dtype, metadata: { [StateDict.familyKey]: "mar" } }))
      return yield* Console.log(`exported ${o.input} → ${o.out} (${dtype}, reference keys)\n${marSummary(config, loaded.params)}`)
    }
    const preset = Option.isSome(o.model) ? Option.some(yield* presetOf(o.model.value, Config.presetNames, "DiT/SiT")) : Option.none()
    const base = Option.isSome(preset) ? Option.some(yield* Config.make(preset.value)) : yield* StateDict.storedConfig(file.metadata)
    if (Option.isNone(base)) {
      return yield* new Config.InvalidConfig({ reason: `${o.input} carries no ${StateDict.configKey} metadata; name its shape with --model` })
    }
    const config = yield* Config.decode({ ...base.value, ...overridden(o) })
    const loaded = yield* StateDict.fromFile(config, file)
    // The family goes along where the file records it (the reference code ignores metadata).
    const family = file.metadata[StateDict.familyKey]
    const metadata = family === undefined ? {} : { [StateDict.familyKey]: family }
    yield* writeAtomic(o.out, yield* StateDict.encode(config, loaded.params, { dtype, metadata }))
    yield* Console.log(`exported ${o.input} → ${o.out} (${dtype}, reference keys)\n${summary(config, loaded.params)}`)
  })
).pipe(Command.withDescription("Write our checkpoint with exactly the reference state_dict keys (F32, F16 or BF16)"))

export const checkpoint = Command.make("checkpoint").pipe(
  Command.withDescription("Import and export reference DiT/SiT/MAR checkpoints (.pt, .pth, safetensors)"),
  Command.withSubcommands([importCommand, exportCommand])
)
