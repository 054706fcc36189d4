/**
 * The data stages of the pipeline, on the artifact store (packages/core):
 *
 *   autoencoder   trains the KL autoencoder (checkpointed loop), measures
 *                 PSNR on the test split, computes the latent scale factor,
 *                 writes params.safetensors and reconstructions.png
 *   latents       encodes every training image and its mirror into shards;
 *                 each finished shard is committed as a checkpoint of the
 *                 stage, so a killed extraction resumes where it stopped
 *   feature-net   trains the evaluation classifier (checkpointed loop) and
 *                 measures test accuracy (the reference statistics of the
 *                 test split are packages/eval's `reference` stage)
 *
 * Each stage reads the images from the `Dataset` service and checks that it
 * is the dataset its config names (the store key covers the config, not the
 * files on disk).
 */
import { Effect, Layer, Schema } from "effect"
import { Checkpoint, CorruptArtifact, Stage } from "@tinyfusion/core"
import { SdVae } from "@tinyfusion/models"
import { AdamW, Compute, HostTensor, ParamTree, tf, WeightsFile } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"
import { Dataset, DatasetError } from "./Dataset.ts"
import * as Batches from "./Batches.ts"
import * as Codec from "./Codec.ts"
import { extract, FeatureExtractor, inception, topOneAccuracy } from "./FeatureExtractor.ts"
import * as Inception from "./Inception.ts"
import * as FeatureNet from "./FeatureNet.ts"
import * as Images from "./Images.ts"
import { LatentDataset } from "./LatentDataset.ts"
import * as LatentShards from "./LatentShards.ts"
import * as Png from "./Png.ts"

/** The Dataset service, if it is the dataset a stage config names (the store key covers the name, not the files). */
export const checkDataset = (expected: string) =>
  Effect.gen(function*() {
    const data = yield* Dataset
    if (data.name !== expected) {
      return yield* new DatasetError({
        dataset: data.name,
        path: "(the Dataset layer)",
        reason: `the stage config names the dataset ${expected}`,
        hint: "Provide the dataset the config names, or change the config's dataset"
      })
    }
    return data
  })

/** A published file a stage reads by path, if it is the file its config names by sha256 (a moved file keeps its key). */
const checkFile = (dataset: string, path: string, expected: string) =>
  Effect.gen(function*() {
    const found = yield* WeightsFile.fileSha256(path)
    if (found !== expected) {
      return yield* new DatasetError({ dataset, path, reason: `sha256 ${found}, the stage config names ${expected}`, hint: "Pass the file the run was started with" })
    }
  })

const AdamData = Schema.Struct({ adamStep: Schema.Int })

/** A net's training state: its parameters (of its own tree type P) and AdamW's. */
interface NetState<P extends ParamTree.ParamTree> {
  readonly step: number
  readonly params: P
  readonly optimiser: AdamW.State
}

type NetTensors<P extends ParamTree.ParamTree> = { readonly params: P; readonly m: ParamTree.ParamTree; readonly v: ParamTree.ParamTree }

/** A training state as the checkpointed loop holds it, and back. */
const toLoop = <P extends ParamTree.ParamTree>(state: NetState<P>): Checkpoint.State<{ readonly adamStep: number }, NetTensors<P>> => ({
  tensors: { params: state.params, m: state.optimiser.m, v: state.optimiser.v },
  data: { adamStep: state.optimiser.step }
})
const fromLoop = <P extends ParamTree.ParamTree>(state: Checkpoint.State<{ readonly adamStep: number }, NetTensors<P>>, step: number): NetState<P> => {
  const { params, m, v } = state.tensors
  return { step, params, optimiser: { step: state.data.adamStep, m, v } }
}

/**
 * A net trained by `step` (one AdamW step on batch `state.step`) on the
 * checkpointed loop, from `init`. `step` returns the next state and its loss
 * tensors, the first the loss logged; they are read and disposed here.
 */
const train = <P extends ParamTree.ParamTree>(ctx: Stage.Context, options: {
  readonly steps: number
  readonly every: number
  readonly init: () => NetState<P>
  readonly step: (state: NetState<P>) => { readonly state: NetState<P>; readonly losses: readonly [tf.Scalar, ...Array<tf.Scalar>] }
}) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const done = yield* Checkpoint.loop(ctx, {
      steps: options.steps,
      every: options.every,
      data: AdamData,
      init: Effect.sync(() => toLoop(options.init())),
      step: (state, step) =>
        Effect.gen(function*() {
          const next = options.step(fromLoop(state, step))
          const loss = (yield* compute.read(next.losses[0]))[0]!
          tf.dispose([...next.losses])
          return { state: toLoop(next.state), loss }
        }),
      nonFinite: "skip"
    })
    return { ...done, params: done.state.tensors.params }
  })

// ---------------------------------------------------------------- autoencoder

export const AutoencoderConfig = Schema.Struct({
  dataset: Schema.String,
  model: Autoencoder.Config,
  training: Autoencoder.TrainConfig,
  checkpointEvery: Schema.Int,
  /** Training images the scale factor is measured on. */
  scaleImages: Schema.Int,
  /** Test images PSNR is measured on (all of them when larger than the split). */
  evalImages: Schema.Int
})
export type AutoencoderConfig = typeof AutoencoderConfig.Type

export const AutoencoderOutput = Schema.Struct({
  model: Codec.Model,
  /** 1/std of latents: multiply encoder samples by it. */
  scale: Schema.Number,
  /** Mean per-image PSNR (dB) over the centre crop of the test images. */
  psnr: Schema.Number,
  psnrImages: Schema.Int,
  psnrCrop: Schema.Int
})

export const miniAutoencoder: AutoencoderConfig = {
  dataset: "fashion-mnist",
  model: Autoencoder.mini,
  training: Autoencoder.miniTraining,
  checkpointEvery: 250,
  scaleImages: 10000,
  evalImages: 10000
}

/** Originals and reconstructions in alternating rows of `columns`. */
const comparison = (originals: Float32Array, reconstructions: Float32Array, set: Images.Shape, count: number, columns: number) => {
  const per = set.height * set.width * set.channels
  const tile = (from: Float32Array, i: number) =>
    Png.raster(set.width, set.height, set.channels === 1 ? 1 : 3, Images.toBytes(from.subarray(i * per, (i + 1) * per)))
  const tiles: Array<Png.Raster> = []
  for (let row = 0; row * columns < count; row++) {
    for (let c = 0; c < columns; c++) tiles.push(tile(originals, row * columns + c))
    for (let c = 0; c < columns; c++) tiles.push(tile(reconstructions, row * columns + c))
  }
  return Png.grid(tiles, columns, { gap: 2, background: 128 })
}

export const AutoencoderStage = Stage.make({
  name: "autoencoder",
  module: import.meta.url,
  config: AutoencoderConfig,
  output: AutoencoderOutput,
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const data = yield* checkDataset(config.dataset)
      // Training draws batches at random: both splits in memory (a folder's are read once).
      const trainSet = yield* Images.load(data.train)
      const testSet = yield* Images.load(data.test)
      const done = yield* train(ctx, {
        steps: config.training.steps,
        every: config.checkpointEvery,
        init: () => Autoencoder.initialState(config.model, config.training),
        step: (state) => {
          const next = Autoencoder.step(config.model, config.training, state, trainSet)
          return { state: next.state, losses: [next.losses.total, next.losses.mse, next.losses.kl] }
        }
      })
      const params = done.params
      yield* ctx.writeTensors("params.safetensors", yield* HostTensor.treeFromTensors(params))
      const evalCount = Math.min(config.evalImages, testSet.count)
      const { originals, reconstructions } = yield* Autoencoder.reconstruct(params, testSet, evalCount, 250)
      const crop = data.name === "fashion-mnist" ? 28 : testSet.height
      const psnrs = Autoencoder.psnr(originals, reconstructions, [evalCount, testSet.height, testSet.width, testSet.channels], crop)
      const psnr = psnrs.reduce((a, b) => a + b, 0) / evalCount
      const scale = yield* Autoencoder.scaleFactor(config.model, params, trainSet, config.scaleImages, 250, config.training.seed)
      yield* ctx.writeBytes("reconstructions.png", Png.encode(comparison(originals, reconstructions, testSet, Math.min(32, evalCount), 8)))
      yield* ctx.metric("psnr", psnr)
      yield* ctx.metric("scale", scale)
      yield* ctx.metric("finalLoss", done.lastLoss)
      ParamTree.dispose(done.state.tensors)
      return { model: config.model, scale, psnr, psnrImages: evalCount, psnrCrop: crop }
    })
})

/** An autoencoder artifact's weights on the device as its codec, with its scale factor (trained or imported alike). */
export const loadAutoencoder = (artifact: Stage.Artifact<typeof AutoencoderOutput.Type>) =>
  Effect.map(artifact.tensors("params.safetensors"), (host) => {
    const params = HostTensor.treeToTensors(host)
    return { model: artifact.output.model, codec: Codec.make(artifact.output.model, params), scale: artifact.output.scale, params }
  })

/**
 * The test-split reconstructions of a codec: PSNR (mean dB over `crop`²
 * centres) and the comparison grid of the first few, the split read a batch
 * at a time.
 */
const measure = (codec: Codec.Codec, source: Images.Source, count: number, crop: number, batchSize: number) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const per = Images.imageSize(source)
    // Whole rows of up to 8 pairs.
    const columns = Math.min(8, count)
    const shown = columns * Math.floor(Math.min(32, count) / columns)
    const originals = new Float32Array(shown * per)
    const reconstructions = new Float32Array(shown * per)
    let total = 0
    for (let start = 0; start < count; start += batchSize) {
      const n = Math.min(batchSize, count - start)
      const batch = Batches.range(yield* source.read(start, n), 0, n)
      const out = yield* compute.scoped(Effect.gen(function*() {
        const x = tf.tensor4d(batch.images, [...batch.shape])
        return yield* compute.read(tf.clipByValue(codec.decode(codec.encode(x).mean), -1, 1))
      }))
      // Summed image by image, in order (the mean of every image's PSNR).
      for (const p of Autoencoder.psnr(batch.images, out, batch.shape, crop)) total += p
      const keep = Math.max(0, Math.min(n, shown - start))
      originals.set(batch.images.subarray(0, keep * per), start * per)
      reconstructions.set(out.subarray(0, keep * per), start * per)
    }
    return { psnr: total / count, png: Png.encode(comparison(originals, reconstructions, source, shown, columns)) }
  })

// ---------------------------------------------------------------- imported autoencoder (SD-VAE)

export const ImportedAutoencoderConfig = Schema.Struct({
  dataset: Schema.String,
  /** The file's sha256 and key layout (the key covers the contents, not the path). */
  sha256: Schema.String,
  layout: SdVae.Layout,
  model: Codec.SdVaeModel,
  /** Test images PSNR is measured on. */
  evalImages: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
})
export type ImportedAutoencoderConfig = typeof ImportedAutoencoderConfig.Type

/**
 * A published SD-VAE file: its layout, config and hash, every key and shape
 * checked, no tensor data read; for images of side `size.image`, or for the
 * latents of side `size.latent` (images of that times the VAE's factor).
 */
export const inspectSdVae = Effect.fn("Stages.inspectSdVae")(function*(path: string, size: { readonly image: number } | { readonly latent: number }) {
  const listing = yield* WeightsFile.inspect(path)
  const layout = SdVae.detectLayout(listing.shapes.keys())
  if (layout === undefined) {
    return yield* new DatasetError({
      dataset: "SD-VAE",
      path,
      reason: `no VAE keys (encoder.down_blocks.… or encoder.down.…) in ${listing.source}`,
      hint: "Pass diffusers' diffusion_pytorch_model.safetensors of stabilityai/sd-vae-ft-ema (or -mse), or latent-diffusion's kl-f8 checkpoint"
    })
  }
  const mapped = SdVae.fromLayout(layout, listing.shapes, (t) => ({ ...t, shape: t.shape.slice(0, 2) }))
  const config = SdVae.inferConfig(mapped.tensors) ?? SdVae.klF8
  yield* SdVae.check(config, mapped.tensors)
  const imageSize = "image" in size ? size.image : size.latent * SdVae.factor(config)
  if (imageSize % SdVae.factor(config) !== 0) {
    return yield* new DatasetError({ dataset: "SD-VAE", path, reason: `images of side ${imageSize} are not a multiple of ${SdVae.factor(config)}`, hint: "Use 256 × 256 images" })
  }
  return { layout, model: { kind: "sd-vae" as const, config, imageSize }, sha256: yield* WeightsFile.fileSha256(path), ignored: mapped.ignored }
})

/** An inspected SD-VAE file's weights in diffusers' keys, every key and shape checked. */
export const readSdVae = Effect.fn("Stages.readSdVae")(function*(path: string, inspected: { readonly layout: SdVae.Layout; readonly model: Codec.SdVaeModel }) {
  const weights = yield* WeightsFile.read(path)
  const { tensors } = SdVae.fromLayout(inspected.layout, weights.tensors, SdVae.squeezeHost)
  yield* SdVae.check(inspected.model.config, tensors)
  return tensors
})

/**
 * The `autoencoder` stage for a published SD-VAE file at `path`: the same
 * role and output as the trained one (downstream stages take either), its
 * weights from the file in diffusers' keys, its scale kl-f8's 0.18215, and
 * the PSNR of its test-split reconstructions as a check.
 */
export const importedAutoencoder = (path: string) =>
  Stage.make({
    name: "autoencoder",
    module: import.meta.url,
    config: ImportedAutoencoderConfig,
    output: AutoencoderOutput,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        const data = yield* checkDataset(config.dataset)
        yield* checkFile("SD-VAE", path, config.sha256)
        const tensors = yield* readSdVae(path, config)
        yield* ctx.writeTensors("params.safetensors", tensors)
        const params = HostTensor.treeToTensors(ParamTree.unflatten([...tensors]))
        const count = Math.min(config.evalImages, data.test.count)
        const measured = yield* measure(Codec.make(config.model, params), data.test, count, data.test.height, 8).pipe(
          Effect.ensuring(Effect.sync(() => ParamTree.dispose(params)))
        )
        yield* ctx.writeBytes("reconstructions.png", measured.png)
        yield* ctx.metric("psnr", measured.psnr)
        return { model: config.model, scale: config.model.config.scale, psnr: measured.psnr, psnrImages: count, psnrCrop: data.test.height }
      })
  })

// ---------------------------------------------------------------- latents

export const LatentsConfig = Schema.Struct({
  dataset: Schema.String,
  seed: Schema.Int,
  shardSize: Schema.Int,
  batchSize: Schema.Int
})
export type LatentsConfig = typeof LatentsConfig.Type

export const LatentsOutput = Schema.Struct({
  count: Schema.Int,
  classes: Schema.Int,
  shards: Schema.Int,
  latentShape: Schema.Tuple([Schema.Int, Schema.Int, Schema.Int]),
  scale: Schema.Number
})

export const miniLatents: LatentsConfig = { dataset: "fashion-mnist", seed: 0, shardSize: 5000, batchSize: 250 }

export const LatentsStage = Stage.make({
  name: "latents",
  module: import.meta.url,
  config: LatentsConfig,
  output: LatentsOutput,
  inputs: { autoencoder: AutoencoderOutput },
  run: (config, { autoencoder }, ctx) =>
    Effect.gen(function*() {
      const data = yield* checkDataset(config.dataset)
      const ae = yield* loadAutoencoder(autoencoder)
      // Finished shards are checkpoints of the stage.
      const shards = yield* Checkpoint.parts(ctx, LatentShards.shardFile)
      const manifest = yield* LatentShards.extract({
        set: data.train,
        classes: data.classes,
        shardSize: config.shardSize,
        batchSize: config.batchSize,
        seed: config.seed,
        scale: ae.scale,
        latentShape: ae.codec.latentShape,
        fingerprint: autoencoder.key,
        encode: ae.codec.encode,
        onShard: (index, encoded) => Effect.logInfo(`shard ${index} ${encoded ? "encoded" : "kept from an earlier run"}`)
      }, shards).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(ae.params))))
      for (const [index, shard] of manifest.shards.entries()) {
        const bytes = yield* shards.read(index)
        if (bytes === undefined) return yield* Effect.die(new Error(`shard ${index} vanished after it was committed`))
        yield* ctx.writeBytes(shard.file, bytes)
      }
      yield* ctx.writeJson(LatentShards.manifestFile, manifest)
      return {
        count: manifest.count,
        classes: manifest.classes,
        shards: manifest.shards.length,
        latentShape: manifest.latentShape,
        scale: manifest.scale
      }
    })
})

/** The latents of a latents artifact as the LatentDataset service. */
export const latentDataset = (artifact: Stage.Artifact<typeof LatentsOutput.Type>): Layer.Layer<LatentDataset, LatentShards.LatentShardsError> =>
  LatentDataset.fromDirectory(artifact.dir)

/** The latents of a latents artifact, loaded (what pruning's LatentSource takes); unreadable shards are the artifact's corruption. */
export const readLatents = (artifact: Stage.Artifact<typeof LatentsOutput.Type>): Effect.Effect<LatentDataset["Service"], CorruptArtifact> =>
  Effect.provide(
    Effect.gen(function*() {
      return yield* LatentDataset
    }),
    latentDataset(artifact)
  ).pipe(Effect.mapError((e) => new CorruptArtifact({ key: artifact.key, path: artifact.dir, reason: e.message })))

// ---------------------------------------------------------------- feature network

export const FeatureNetConfig = Schema.Struct({
  dataset: Schema.String,
  model: FeatureNet.Config,
  training: FeatureNet.TrainConfig,
  checkpointEvery: Schema.Int
})
export type FeatureNetConfig = typeof FeatureNetConfig.Type

/** A feature network trained here, or the FID Inception-V3 taking images of `imageSize`. */
export const InceptionModel = Schema.Struct({ kind: Schema.Literal("inception"), config: Inception.Config, imageSize: Schema.Int })
export type InceptionModel = typeof InceptionModel.Type

export const FeatureNetOutput = Schema.Struct({
  model: Schema.Union([FeatureNet.Config, InceptionModel]),
  /** Test-split accuracy. */
  accuracy: Schema.Number,
  testImages: Schema.Int,
  poolDim: Schema.Int,
  spatialDim: Schema.Int
})

export const miniFeatureNet: FeatureNetConfig = {
  dataset: "fashion-mnist",
  model: FeatureNet.mini,
  training: FeatureNet.miniTraining,
  checkpointEvery: 250
}

export const FeatureNetStage = Stage.make({
  name: "feature-net",
  module: import.meta.url,
  config: FeatureNetConfig,
  output: FeatureNetOutput,
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const data = yield* checkDataset(config.dataset)
      const trainSet = yield* Images.load(data.train)
      const testSet = yield* Images.load(data.test)
      const done = yield* train(ctx, {
        steps: config.training.steps,
        every: config.checkpointEvery,
        init: () => FeatureNet.initialState(config.model, config.training),
        step: (state) => {
          const next = FeatureNet.step(config.model, config.training, state, trainSet)
          return { state: next.state, losses: [next.loss] }
        }
      })
      const host = yield* HostTensor.treeFromTensors(done.params)
      ParamTree.dispose(done.state.tensors)
      yield* ctx.writeTensors("params.safetensors", host)
      const test = Batches.range(testSet, 0, testSet.count)
      const features = yield* extract(test.images, testSet.count, 500).pipe(Effect.provide(FeatureExtractor.featureNet(config.model, host)))
      const accuracy = topOneAccuracy(features.probs, testSet.labels, config.model.classes)
      yield* ctx.metric("accuracy", accuracy)
      yield* ctx.metric("finalLoss", done.lastLoss)
      return {
        model: config.model,
        accuracy,
        testImages: testSet.count,
        poolDim: FeatureNet.poolDim(config.model),
        spatialDim: FeatureNet.spatialDim(config.model)
      }
    })
})

/** The FeatureExtractor service of a feature-net artifact (trained, or the imported Inception). */
export const featureExtractor = (artifact: Stage.Artifact<typeof FeatureNetOutput.Type>) =>
  Layer.unwrap(Effect.map(artifact.tensors("params.safetensors"), (host) => {
    const model = artifact.output.model
    return "kind" in model
      ? inception(model.config, host, [model.imageSize, model.imageSize, 3])
      : FeatureExtractor.featureNet(model, host)
  }))

export const ImportedFeatureNetConfig = Schema.Struct({
  sha256: Schema.String,
  model: InceptionModel
})
export type ImportedFeatureNetConfig = typeof ImportedFeatureNetConfig.Type

/** pytorch-fid's Inception weights file: its hash, every key and shape checked against `config`, no tensor data read. */
export const inspectInception = Effect.fn("Stages.inspectInception")(function*(path: string, config: Inception.Config, imageSize: number) {
  const listing = yield* WeightsFile.inspect(path)
  yield* Inception.fromStateDict(config, listing.shapes)
  return { model: { kind: "inception" as const, config, imageSize }, sha256: yield* WeightsFile.fileSha256(path) }
})

/**
 * The `feature-net` stage for pytorch-fid's FID Inception weights at `path`
 * (pt_inception-2015-12-05-6726825d.pth): the same role and output as the
 * trained feature network, so the reference and evaluation stages take it.
 */
export const importedFeatureNet = (path: string) =>
  Stage.make({
    name: "feature-net",
    module: import.meta.url,
    config: ImportedFeatureNetConfig,
    output: FeatureNetOutput,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        yield* checkFile("Inception", path, config.sha256)
        const weights = yield* Inception.fromStateDict(config.model.config, (yield* WeightsFile.read(path)).tensors)
        yield* ctx.writeTensors("params.safetensors", weights)
        return {
          model: config.model,
          accuracy: 0,
          testImages: 0,
          poolDim: Inception.poolDim(config.model.config),
          spatialDim: Inception.spatialDim(config.model.config)
        }
      })
  })
