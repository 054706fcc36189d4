/**
 * `tinyfusion sample`: a PNG grid of class-conditional samples, one row per
 * class, from a model given as a checkpoint file (our safetensors, its
 * config in the metadata as `checkpoint import` writes it) or as the key of
 * a model artifact in the store (pretrain, recovery, a pruned export: any
 * stage output with family and config; its EMA weights unless --raw).
 * Decoded through the autoencoder when one is given — an autoencoder
 * artifact key (trained or an imported SD-VAE; its scale factor comes with
 * it), a params file of our trained autoencoder with --latent-scale, or a
 * published SD-VAE file with --vae (as `repro --preset paper` takes it; the
 * latents of the official DiT and SiT checkpoints, scale 0.18215) —
 * otherwise each latent is shown as its channels side by side in grey (−3
 * black, +3 white). Weights that are not all finite are refused, as `eval`
 * refuses them: a grid of them shows nothing.
 */
import { Console, Effect, FileSystem, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Autoencoder, Codec, Images, Png, Stages } from "@tinyfusion/data"
import { Evaluation, Sampling } from "@tinyfusion/eval"
import { Config, ModelArtifact, ModelFile, SdVae, StateDict } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Safetensors, tf } from "@tinyfusion/tensor"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import { writeAtomic } from "./checkpoint.ts"

export class SampleInput extends Schema.TaggedError<SampleInput>()("SampleInput", {
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.input}: ${this.reason}`
  }
}

/** A file of that name, else the verified artifact of that key (as any stage's input is opened by key). */
const open = Effect.fn("sample.open")(function*(name: string) {
  const fs = yield* FileSystem.FileSystem
  if (yield* fs.exists(name)) return { _tag: "File", bytes: yield* fs.readFile(name) } as const
  const store = yield* ArtifactStore
  if ((yield* store.inspect(name, { hash: false }))._tag === "Missing") {
    return yield* new SampleInput({ input: name, reason: `neither a file nor an artifact of the store ${store.root}` })
  }
  const artifact = yield* Stage.open(name).pipe(Effect.mapError((e) => new SampleInput({ input: name, reason: `artifact is corrupt: ${e.reason}` })))
  return { _tag: "Artifact", manifest: artifact.manifest, read: artifact.bytes } as const
})

const loadModel = Effect.fn("sample.loadModel")(function*(name: string, options: { readonly family: Option.Option<ModelArtifact.Family>; readonly raw: boolean }) {
  const source = yield* open(name)
  if (source._tag === "File") {
    const file = yield* Safetensors.decode(source.bytes)
    const config = yield* StateDict.storedConfig(file.metadata)
    if (Option.isNone(config)) {
      return yield* new SampleInput({ input: name, reason: `carries no ${StateDict.configKey} metadata; convert it with tinyfusion checkpoint import` })
    }
    const family = yield* ModelFile.family(file.metadata, Option.getOrUndefined(options.family), name)
    const loaded = yield* StateDict.fromFile(config.value, file)
    yield* Evaluation.checkWeights(`the weights of ${name}`, loaded.params)
    return { family, config: config.value, params: loaded.params, weights: "file" }
  }
  const output = yield* Schema.decodeUnknownEffect(ModelArtifact.Identity)(source.manifest.output).pipe(
    Effect.mapError(() => new SampleInput({ input: name, reason: `an artifact of stage ${source.manifest.stage} holds no model` }))
  )
  if (Option.isSome(options.family) && options.family.value !== output.family) {
    return yield* new SampleInput({ input: name, reason: `holds a ${output.family} model, not ${options.family.value}` })
  }
  const hasEma = source.manifest.files.some((f) => f.name === ModelArtifact.files.ema)
  const file = !options.raw && hasEma ? ModelArtifact.files.ema : ModelArtifact.files.raw
  const loaded = yield* StateDict.decode(output.config, yield* source.read(file))
  yield* Evaluation.checkWeights(`the ${file === ModelArtifact.files.ema ? "EMA" : "raw"} weights of ${name}`, loaded.params)
  return { family: output.family, config: output.config, params: loaded.params, weights: file }
})

/** A decoder: its weights, how it decodes with them on the device, the factor latents were multiplied by. */
interface Decoder {
  readonly params: HostTensor.HostTree
  readonly decode: (params: ParamTree.ParamTree, z: tf.Tensor4D) => tf.Tensor4D
  readonly scale: number
  readonly latentChannels: number
  readonly what: string
}

/** An autoencoder artifact (trained or an imported SD-VAE) or our trained autoencoder's params file. */
const loadAutoencoder = Effect.fn("sample.loadAutoencoder")(function*(name: string, latentScale: Option.Option<number>) {
  const source = yield* open(name)
  if (source._tag === "File") {
    const params = ParamTree.unflatten((yield* Safetensors.decode(source.bytes)).tensors) as HostTensor.HostTree
    const scale = yield* Option.match(latentScale, {
      onNone: () => Effect.fail(new SampleInput({ input: name, reason: "an autoencoder file needs --latent-scale (an artifact carries it)" })),
      onSome: Effect.succeed
    })
    const convIn = new Map(ParamTree.flatten(params, HostTensor.isHostTensor)).get("decoder.conv_in.weight")
    return { params, decode: Autoencoder.decode, scale, latentChannels: convIn?.shape[1] ?? 0, what: "the autoencoder" } satisfies Decoder
  }
  const output = yield* Schema.decodeUnknownEffect(Stages.AutoencoderOutput)(source.manifest.output).pipe(
    Effect.mapError(() => new SampleInput({ input: name, reason: `an artifact of stage ${source.manifest.stage} is not an autoencoder` }))
  )
  const file = yield* Safetensors.decode(yield* source.read("params.safetensors"))
  return {
    params: ParamTree.unflatten(file.tensors) as HostTensor.HostTree,
    decode: (params, z) => Codec.make(output.model, params).decode(z),
    scale: Option.getOrElse(latentScale, () => output.scale),
    latentChannels: Codec.shapes(output.model).latentShape[2],
    what: Codec.describe(output.model)
  } satisfies Decoder
})

/** A published SD-VAE file (diffusers' or latent-diffusion's layout) for latents of side `latentSide`; its scale kl-f8's unless given. */
const loadVae = Effect.fn("sample.loadVae")(function*(path: string, latentScale: Option.Option<number>, latentSide: number) {
  const described = yield* Stages.inspectSdVae(path, { latent: latentSide })
  const tensors = yield* Stages.readSdVae(path, described)
  const { config } = described.model
  return {
    params: ParamTree.unflatten([...tensors]) as HostTensor.HostTree,
    decode: (params, z) => SdVae.decode(config, params, z),
    scale: Option.getOrElse(latentScale, () => config.scale),
    latentChannels: config.latentChannels,
    what: SdVae.describe(config)
  } satisfies Decoder
})

/** Each sample as a raster: decoded images, or the latent's channels side by side. */
const pictures = (latents: Float32Array, shape: ReadonlyArray<number>): Array<Png.Raster> => {
  const [n, h, w, c] = shape as [number, number, number, number]
  const per = h * w * c
  return Array.from({ length: n }, (_, i) => {
    const x = latents.subarray(i * per, (i + 1) * per)
    if (c === 1 || c === 3) return Png.raster(w, h, c, Images.toBytes(x))
    const grey = new Float32Array(per)
    for (let y = 0; y < h; y++) {
      for (let k = 0; k < c; k++) for (let u = 0; u < w; u++) grey[y * w * c + k * w + u] = x[(y * w + u) * c + k]! / 3
    }
    return Png.raster(w * c, h, 1, Images.toBytes(grey))
  })
}

const classesOf = (given: Option.Option<ReadonlyArray<number>>, classes: number) =>
  Effect.gen(function*() {
    if (Option.isNone(given)) return Array.from({ length: classes }, (_, i) => i)
    const bad = given.value.find((y) => y >= classes)
    if (bad !== undefined) return yield* new SampleInput({ input: "--classes", reason: `${bad} is not a class of 0..${classes - 1}` })
    return given.value
  })

export const sample = Command.make(
  "sample",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Checkpoint file (.safetensors with our config) or model artifact key")),
    family: Flag.Literals("family", ["dit", "sit"]).pipe(
      Flag.withDescription("The model's family: checked against the one its file or artifact records; needed only for a file that records none (default dit)"),
      Flag.optional
    ),
    raw: Flag.Boolean("raw").pipe(Flag.withDescription("Sample an artifact's raw weights rather than its EMA"), Flag.withDefault(false)),
    classes: CheckedFlags.indices("classes", { increasing: false }).pipe(Flag.withDescription("Comma-separated classes, one row each (default: every class)"), Flag.optional),
    perClass: CheckedFlags.count("per-class").pipe(Flag.withDescription("Samples per class (the columns)"), Flag.withDefault(8)),
    sampler: Flag.Literals("sampler", ["ddpm", "ddim", "ode", "sde"]).pipe(
      Flag.withDescription("DiT: ddpm or ddim; SiT: ode (Heun) or sde (Euler–Maruyama). Default ddpm / ode"),
      Flag.optional
    ),
    steps: Flag.String("steps").pipe(
      Flag.withDescription("ddpm/ddim: timestep respacing (\"250\", \"ddim50\"); ode/sde: grid points"),
      Flag.withDefault("250")
    ),
    cfgScale: CheckedFlags.guidance("cfg-scale").pipe(Flag.withDescription("Classifier-free guidance scale (1: none)"), Flag.withDefault(4)),
    guided: Flag.Literals("guided-channels", ["first-3", "all"]).pipe(
      Flag.withDescription("Latent channels guidance moves (the reference: the first 3)"),
      Flag.withDefault("first-3")
    ),
    seed: CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of the sampling noise"), Flag.withDefault(0)),
    autoencoder: Flag.String("autoencoder").pipe(Flag.withDescription("Autoencoder artifact key or params file to decode through"), Flag.optional),
    vae: Flag.String("vae").pipe(
      Flag.withDescription("A published SD-VAE file to decode through: sd-vae-ft-ema's diffusion_pytorch_model.safetensors (or -mse, or latent-diffusion's kl-f8)"),
      Flag.optional
    ),
    latentScale: CheckedFlags.positive("latent-scale").pipe(
      Flag.withDescription("Scale factor the latents were multiplied by (for an autoencoder file; an artifact carries it, an SD-VAE's is 0.18215)"),
      Flag.optional
    ),
    out: Flag.String("out").pipe(Flag.withDescription("PNG to write"), Flag.withDefault("samples.png"))
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const compute = yield* Compute
      const model = yield* loadModel(o.model, { family: o.family, raw: o.raw })
      if (Option.isSome(o.autoencoder) && Option.isSome(o.vae)) {
        return yield* new SampleInput({ input: "--autoencoder and --vae", reason: "give one decoder" })
      }
      const decoder = Option.isSome(o.vae)
        ? yield* loadVae(o.vae.value, o.latentScale, model.config.inputSize)
        : Option.isSome(o.autoencoder)
        ? yield* loadAutoencoder(o.autoencoder.value, o.latentScale)
        : undefined
      if (decoder !== undefined && decoder.latentChannels !== model.config.inChannels) {
        return yield* new SampleInput({
          input: Option.getOrElse(Option.orElse(o.vae, () => o.autoencoder), () => ""),
          reason: `is not a decoder of ${model.config.inChannels}-channel latents (${decoder.what} decodes ${decoder.latentChannels})`
        })
      }
      if (decoder !== undefined) yield* Evaluation.checkWeights(`the weights of ${decoder.what}`, decoder.params)
      const classes = yield* classesOf(o.classes, model.config.numClasses)
      const options = yield* Schema.decodeUnknownEffect(Sampling.Options)({
        sampler: Option.getOrElse(o.sampler, () => (model.family === "sit" ? "ode" : "ddpm")),
        steps: o.steps,
        cfgScale: o.cfgScale,
        guidedChannels: o.guided,
        seed: o.seed
      }).pipe(Effect.mapError((e) => new SampleInput({ input: "sampling flags", reason: e.message })))
      yield* Sampling.check(model, options)
      const sampler = yield* Sampling.make(options)
      const tiles = yield* Effect.acquireUseRelease(
        Effect.sync(() => ({ model: HostTensor.treeToTensors(model.params), decoder: decoder && HostTensor.treeToTensors(decoder.params) })),
        (device) =>
          Effect.forEach(classes, (y, row) =>
            compute.scoped(Effect.gen(function*() {
              const z = sampler.sample({ family: model.family, config: model.config, params: device.model }, row, Array(o.perClass).fill(y))
              const images = device.decoder === undefined ? z : decoder!.decode(device.decoder, tf.div(z, decoder!.scale) as tf.Tensor4D)
              const pixels = yield* compute.read(images)
              yield* Evaluation.checkFinite(`the samples of class ${y}`, [["samples", pixels]])
              return pictures(pixels, images.shape)
            }))),
        (device) => Effect.sync(() => ParamTree.dispose([device.model, device.decoder ?? {}]))
      )
      const grid = Png.grid(tiles.flat(), o.perClass, { gap: 2, background: 255 })
      yield* writeAtomic(o.out, Png.encode(grid))
      yield* Console.log(
        `${o.out}: ${grid.width}×${grid.height}, classes ${classes.join(",")} × ${o.perClass}, ${model.family} ${Config.describe(model.config)} ` +
          `(${model.weights}), ${options.sampler} ${options.steps} steps, cfg ${options.cfgScale} (${options.guidedChannels}), seed ${o.seed}` +
          (decoder === undefined ? ", latents shown as channels" : `, decoded by ${decoder.what} (scale ${decoder.scale})`)
      )
    }))
).pipe(Command.withDescription("A PNG grid of class-conditional samples from a checkpoint file or model artifact"))
