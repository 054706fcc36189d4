/**
 * `tinyfusion checkpoint import|export`: reference DiT/SiT checkpoints in and
 * out. `import` reads a file as it is published (a torch.save .pt — DiT's bare
 * state_dict or a training checkpoint's ema/model entry — or safetensors in
 * F32/F16/BF16), takes its config from --model or else from the tensor shapes
 * (asking for --heads only when the width names no known model, and saying
 * what it assumed), checks every key and shape, and writes our float32 file
 * with the config in its metadata; `export` writes exactly the reference
 * keys, so a (pruned) model loads in the reference code with load_state_dict.
 */
import { Console, Effect, FileSystem, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { Config, ModelFile, StateDict } from "@tinyfusion/models"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as CheckedFlags from "../CheckedFlags.ts"

const model = Flag.Literals("model", Config.presetNames).pipe(
  Flag.withDescription("Preset the file is checked against (DiT-XL/2 … DiT-S/8, TinyDiT-D19/D14/D7, mini)"),
  Flag.optional
)

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

const summary = (config: Config.Config, params: HostTensor.HostTree) => {
  const count = ParamTree.flatten(params, HostTensor.isHostTensor).reduce((n, [, t]) => n + HostTensor.numel(t.shape), 0)
  return `${ModelFile.describeModel("dit", config)}: ${count.toLocaleString("en-US")} parameters`
}

const importCommand = Command.make(
  "import",
  {
    input: Argument.String("reference").pipe(Argument.withDescription("Reference checkpoint: a torch.save file (.pt, .pth) or .safetensors")),
    out: Flag.String("out").pipe(Flag.withDescription("Where to write our checkpoint (float32 safetensors)")),
    model: Flag.Literals("model", Config.presetNames).pipe(
      Flag.withDescription("Check against this preset instead of reading the config from the tensor shapes"),
      Flag.optional
    ),
    weights: Flag.Literals("weights", ["ema", "model"]).pipe(
      Flag.withDescription("A training checkpoint's state_dict to read (default: ema, as DiT's find_model)"),
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
    family: Flag.Literals("family", ["dit", "sit"]).pipe(
      Flag.withDescription("The network family, recorded in the file (DiT and SiT checkpoints share a layout; checked against one the file records; without either, eval and sample take the file as a DiT unless told)"),
      Flag.optional
    ),
    ...overrides
  },
  Effect.fn(function*(o) {
    const { numHeads: heads, ...rest } = overridden(o)
    const loaded = yield* ModelFile.read(o.input, {
      family: Option.getOrUndefined(o.family),
      prefix: o.prefix,
      ...(Option.isSome(o.weights) ? { entry: o.weights.value } : {}),
      ...(Option.isSome(o.model)
        ? { preset: o.model.value, overrides: overridden(o) }
        : {
          overrides: rest,
          infer: { ...(heads === undefined ? {} : { heads }), ...(Option.isSome(o.classDropout) ? { classDropoutProb: o.classDropout.value } : {}) }
        })
    })
    // The family goes in when it is known: given, or recorded by the file read.
    const known = Option.orElse(o.family, () => Option.fromUndefinedOr(loaded.weights.metadata[StateDict.familyKey]))
    const family = Option.match(known, { onNone: () => ({}), onSome: (f) => ({ [StateDict.familyKey]: f }) })
    yield* writeAtomic(o.out, yield* StateDict.encode(loaded.config, loaded.params, { metadata: { "tinyfusion.source": o.input, ...family } }))
    const unread = loaded.weights.unread.length > 0 ? `; left unread: ${loaded.weights.unread.join(", ")}` : ""
    yield* Console.log(
      `imported ${o.input} (${loaded.weights.format}, ${loaded.weights.source}${unread}) → ${o.out}\n` +
        `config ${loaded.configFrom}\n${summary(loaded.config, loaded.params)}`
    )
  })
).pipe(Command.withDescription("Read a reference DiT/SiT checkpoint (.pt or safetensors) into our float32 params, checking every key and shape"))

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
    const base = Option.isSome(o.model) ? Option.some(yield* Config.make(o.model.value)) : yield* StateDict.storedConfig(file.metadata)
    if (Option.isNone(base)) {
      return yield* new Config.InvalidConfig({ reason: `${o.input} carries no ${StateDict.configKey} metadata; name its shape with --model` })
    }
    const config = yield* Config.decode({ ...base.value, ...overridden(o) })
    const loaded = yield* StateDict.fromFile(config, file)
    const dtype = ({ f32: "F32", f16: "F16", bf16: "BF16" } as const)[o.dtype]
    // The family goes along where the file records it (the reference code ignores metadata).
    const family = file.metadata[StateDict.familyKey]
    const metadata = family === undefined ? {} : { [StateDict.familyKey]: family }
    yield* writeAtomic(o.out, yield* StateDict.encode(config, loaded.params, { dtype, metadata }))
    yield* Console.log(`exported ${o.input} → ${o.out} (${dtype}, reference keys)\n${summary(config, loaded.params)}`)
  })
).pipe(Command.withDescription("Write our checkpoint with exactly the reference state_dict keys (F32, F16 or BF16)"))

export const checkpoint = Command.make("checkpoint").pipe(
  Command.withDescription("Import and export reference DiT/SiT checkpoints (.pt, safetensors)"),
  Command.withSubcommands([importCommand, exportCommand])
)
