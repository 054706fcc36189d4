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
import { AdamW, Compute, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"
import { Dataset, DatasetError } from "./Dataset.ts"
import * as Batches from "./Batches.ts"
import { extract, FeatureExtractor, topOneAccuracy } from "./FeatureExtractor.ts"
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
  model: Autoencoder.Config,
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
const comparison = (originals: Float32Array, reconstructions: Float32Array, set: Images.ImageSet, count: number, columns: number) => {
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
      const done = yield* train(ctx, {
        steps: config.training.steps,
        every: config.checkpointEvery,
        init: () => Autoencoder.initialState(config.model, config.training),
        step: (state) => {
          const next = Autoencoder.step(config.model, config.training, state, data.train)
          return { state: next.state, losses: [next.losses.total, next.losses.mse, next.losses.kl] }
        }
      })
      const params = done.params
      yield* ctx.writeTensors("params.safetensors", yield* HostTensor.treeFromTensors(params))
      const evalCount = Math.min(config.evalImages, data.test.count)
      const { originals, reconstructions } = yield* Autoencoder.reconstruct(params, data.test, evalCount, 250)
      const crop = data.name === "fashion-mnist" ? 28 : data.test.height
      const psnrs = Autoencoder.psnr(originals, reconstructions, [evalCount, data.test.height, data.test.width, data.test.channels], crop)
      const psnr = psnrs.reduce((a, b) => a + b, 0) / evalCount
      const scale = yield* Autoencoder.scaleFactor(config.model, params, data.train, config.scaleImages, 250, config.training.seed)
      yield* ctx.writeBytes("reconstructions.png", Png.encode(comparison(originals, reconstructions, data.test, Math.min(32, evalCount), 8)))
      yield* ctx.metric("psnr", psnr)
      yield* ctx.metric("scale", scale)
      yield* ctx.metric("finalLoss", done.lastLoss)
      ParamTree.dispose(done.state.tensors)
      return { model: config.model, scale, psnr, psnrImages: evalCount, psnrCrop: crop }
    })
})

/** The trained autoencoder's weights on the device, with its config and scale factor. */
export const loadAutoencoder = (artifact: Stage.Artifact<typeof AutoencoderOutput.Type>) =>
  Effect.map(artifact.tensors("params.safetensors"), (host) => ({
    config: artifact.output.model,
    scale: artifact.output.scale,
    params: HostTensor.treeToTensors(host)
  }))

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
        latentShape: Autoencoder.latentShape(ae.config),
        fingerprint: autoencoder.key,
        encode: (x) => Autoencoder.encode(ae.params, x),
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

export const FeatureNetOutput = Schema.Struct({
  model: FeatureNet.Config,
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
      const done = yield* train(ctx, {
        steps: config.training.steps,
        every: config.checkpointEvery,
        init: () => FeatureNet.initialState(config.model, config.training),
        step: (state) => {
          const next = FeatureNet.step(config.model, config.training, state, data.train)
          return { state: next.state, losses: [next.loss] }
        }
      })
      const host = yield* HostTensor.treeFromTensors(done.params)
      ParamTree.dispose(done.state.tensors)
      yield* ctx.writeTensors("params.safetensors", host)
      const test = Batches.range(data.test, 0, data.test.count)
      const features = yield* extract(test.images, data.test.count, 500).pipe(Effect.provide(FeatureExtractor.featureNet(config.model, host)))
      const accuracy = topOneAccuracy(features.probs, data.test.labels, config.model.classes)
      yield* ctx.metric("accuracy", accuracy)
      yield* ctx.metric("finalLoss", done.lastLoss)
      return {
        model: config.model,
        accuracy,
        testImages: data.test.count,
        poolDim: FeatureNet.poolDim(config.model),
        spatialDim: FeatureNet.spatialDim(config.model)
      }
    })
})

/** The FeatureExtractor service of a trained feature-net artifact. */
export const featureExtractor = (artifact: Stage.Artifact<typeof FeatureNetOutput.Type>) =>
  Layer.unwrap(Effect.map(artifact.tensors("params.safetensors"), (host) => FeatureExtractor.featureNet(artifact.output.model, host)))
