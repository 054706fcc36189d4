/**
 * `tinyfusion sample`: a PNG grid of class-conditional samples, one row per
 * class, from a model given as a checkpoint file (our safetensors, its
 * config in the metadata as `checkpoint import` writes it) or as the key of
 * a model artifact in the store (pretrain, recovery, a pruned export: any
 * stage output with family and config; its EMA weights unless --raw).
 * Decoded through the autoencoder when one is given — an autoencoder
 * artifact key (its scale factor comes with it) or a params file with
 * --latent-scale — otherwise each latent is shown as its channels side by
 * side in grey (−3 black, +3 white).
 */
import { Console, Effect, FileSystem, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Autoencoder, Images, Png, Stages } from "@tinyfusion/data"
import { Sampling } from "@tinyfusion/eval"
import { Config, ModelArtifact, ModelFile, StateDict } from "@tinyfusion/models"
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
  return { family: output.family, config: output.config, params: loaded.params, weights: file }
})

/** The decoder's params and the factor latents were multiplied by. */
const loadDecoder = Effect.fn("sample.loadDecoder")(function*(name: string, latentScale: Option.Option<number>, latentChannels: number) {
  const source = yield* open(name)
  const { params, scale } = source._tag === "File"
    ? {
      params: ParamTree.unflatten((yield* Safetensors.decode(source.bytes)).tensors),
      scale: yield* Option.match(latentScale, {
        onNone: () => Effect.fail(new SampleInput({ input: name, reason: "an autoencoder file needs --latent-scale (an artifact carries it)" })),
        onSome: Effect.succeed
      })
    }
    : yield* Effect.gen(function*() {
      const output = yield* Schema.decodeUnknownEffect(Stages.AutoencoderOutput)(source.manifest.output).pipe(
        Effect.mapError(() => new SampleInput({ input: name, reason: `an artifact of stage ${source.manifest.stage} is not an autoencoder` }))
      )
      const file = yield* Safetensors.decode(yield* source.read("params.safetensors"))
      return { params: ParamTree.unflatten(file.tensors), scale: Option.getOrElse(latentScale, () => output.scale) }
    })
  const convIn = new Map(ParamTree.flatten(params, HostTensor.isHostTensor)).get("decoder.conv_in.weight")
  if (convIn?.shape[1] !== latentChannels) {
    return yield* new SampleInput({ input: name, reason: `is not a decoder of ${latentChannels}-channel latents` })
  }
  return { params: params as HostTensor.HostTree, scale }
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
    latentScale: CheckedFlags.positive("latent-scale").pipe(Flag.withDescription("Scale factor the latents were multiplied by (for an autoencoder file)"), Flag.optional),
    out: Flag.String("out").pipe(Flag.withDescription("PNG to write"), Flag.withDefault("samples.png"))
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const compute = yield* Compute
      const model = yield* loadModel(o.model, { family: o.family, raw: o.raw })
      const decoder = Option.isSome(o.autoencoder) ? yield* loadDecoder(o.autoencoder.value, o.latentScale, model.config.inChannels) : undefined
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
              const images = device.decoder === undefined ? z : Autoencoder.decode(device.decoder, tf.div(z, decoder!.scale) as tf.Tensor4D)
              return pictures(yield* compute.read(images), images.shape)
            }))),
        (device) => Effect.sync(() => ParamTree.dispose([device.model, device.decoder ?? {}]))
      )
      const grid = Png.grid(tiles.flat(), o.perClass, { gap: 2, background: 255 })
      yield* writeAtomic(o.out, Png.encode(grid))
      yield* Console.log(
        `${o.out}: ${grid.width}×${grid.height}, classes ${classes.join(",")} × ${o.perClass}, ${model.family} ${Config.describe(model.config)} ` +
          `(${model.weights}), ${options.sampler} ${options.steps} steps, cfg ${options.cfgScale} (${options.guidedChannels}), seed ${o.seed}` +
          (decoder === undefined ? ", latents shown as channels" : `, decoded (scale ${decoder.scale})`)
      )
    }))
).pipe(Command.withDescription("A PNG grid of class-conditional samples from a checkpoint file or model artifact"))
