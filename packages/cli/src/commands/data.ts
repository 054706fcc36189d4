/**
 * `tinyfusion data …`: the data stages of the mini preset on the artifact
 * store (`--store`), each printing its figures.
 *   autoencoder  trains the KL autoencoder; PSNR on the test split, scale factor, reconstructions.png
 *   latents      the autoencoder, then latent extraction of the training split (resumes after a kill)
 *   features     trains the feature network; test accuracy, and the reference
 *                statistics of the test split (eval's `reference` stage)
 * Each command is a graph of the data stages (packages/core Graph) built from
 * its flags; a finished stage is a cache hit: rerunning prints its figures
 * again. Other commands build the same nodes from the same flags, so their
 * keys are the ones these commands stored. The data stages read the dataset
 * of --data only when one of them must compute (`dataStages`).
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { Dataset, defaultFashionMnistDir, Stages } from "@tinyfusion/data"
import { Reference } from "@tinyfusion/eval"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as Table from "../Table.ts"

export const dataFlag = Flag.String("data").pipe(
  Flag.withDescription("Folder with the four Fashion-MNIST IDX .gz files (read only when a data stage has to run)"),
  Flag.withDefault(defaultFashionMnistDir)
)
export const seedFlag = CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of initialisation, batches and noise"), Flag.withDefault(0))

export const autoencoderFlags = {
  data: dataFlag,
  seed: seedFlag,
  steps: CheckedFlags.count("ae-steps").pipe(Flag.withDescription("Autoencoder training steps"), Flag.withDefault(Stages.miniAutoencoder.training.steps)),
  batchSize: CheckedFlags.count("ae-batch-size").pipe(Flag.withDescription("Autoencoder batch size"), Flag.withDefault(Stages.miniAutoencoder.training.batchSize))
}

const autoencoderConfig = (o: { readonly seed: number; readonly steps: number; readonly batchSize: number }): Stages.AutoencoderConfig => ({
  ...Stages.miniAutoencoder,
  training: { ...Stages.miniAutoencoder.training, seed: o.seed, steps: o.steps, batchSize: o.batchSize }
})

/**
 * The stages that read the dataset, reading the Fashion-MNIST of `dir`: it
 * is opened once, and only when one of them must compute, so a store whose
 * data stages are cached needs no dataset on disk.
 */
export const dataStages = Effect.fn("data.dataStages")(function*(dir: string) {
  const dataset = yield* Effect.cached(Effect.provide(Effect.service(Dataset), Dataset.fashionMnist({ dir })))
  return {
    autoencoder: Stage.provideWhenComputing(Stages.AutoencoderStage, Dataset, dataset),
    latents: Stage.provideWhenComputing(Stages.LatentsStage, Dataset, dataset),
    featureNet: Stage.provideWhenComputing(Stages.FeatureNetStage, Dataset, dataset),
    reference: Stage.provideWhenComputing(Reference.ReferenceStage, Dataset, dataset)
  }
})
export type DataStages = Effect.Success<ReturnType<typeof dataStages>>

/** The autoencoder node the flags name. */
export const autoencoderNode = (stages: DataStages, o: { readonly seed: number; readonly steps: number; readonly batchSize: number }) =>
  Effect.map(Stage.decodeConfig(Stages.AutoencoderStage, autoencoderConfig(o)), (config) => Graph.node(stages.autoencoder, config, {}))

/** Runs a node on a fresh runner (its inputs first). */
export const runNode = <O, E, R>(node: Graph.Node<O, E, R>) => Effect.flatMap(Graph.runner, (runner) => runner.run(node))

const autoencoder = Command.make("autoencoder", autoencoderFlags, (o) =>
  GlobalFlags.withCompute(Effect.gen(function*() {
    const ae = yield* runNode(yield* autoencoderNode(yield* dataStages(o.data), o))
    yield* Console.log(Table.render(["stage", "key", "PSNR (dB)", "images", "scale factor", "reconstructions"], [[
      "autoencoder",
      ae.key,
      Table.fixed(ae.output.psnr, 2),
      `${ae.output.psnrImages} test (centre ${ae.output.psnrCrop}²)`,
      Table.fixed(ae.output.scale, 4),
      ae.path("reconstructions.png")
    ]]))
  }))
).pipe(Command.withDescription("Train the KL autoencoder (32×32×1 → 8×8×4) and report PSNR on the test split"))

export const latentFlags = {
  ...autoencoderFlags,
  shardSize: CheckedFlags.count("shard-size").pipe(Flag.withDescription("Images per latent shard"), Flag.withDefault(Stages.miniLatents.shardSize))
}

/** The latents node of the training split the flags name (over their autoencoder node). */
export const latentsNode = (
  stages: DataStages,
  o: { readonly seed: number; readonly steps: number; readonly batchSize: number; readonly shardSize: number }
) =>
  Effect.gen(function*() {
    const autoencoder = yield* autoencoderNode(stages, o)
    const config = yield* Stage.decodeConfig(Stages.LatentsStage, { ...Stages.miniLatents, seed: o.seed, shardSize: o.shardSize })
    return Graph.node(stages.latents, config, { autoencoder })
  })

/** The latents the `data latents` defaults name: what pruning and recovery read unless given --latents. */
export const defaultLatents = (stages: DataStages) =>
  latentsNode(stages, {
    seed: 0,
    steps: Stages.miniAutoencoder.training.steps,
    batchSize: Stages.miniAutoencoder.training.batchSize,
    shardSize: Stages.miniLatents.shardSize
  })

/** --latents KEY: the latents artifact a command reads (default: `data latents` at its defaults). */
export const latentsFlag = Flag.String("latents").pipe(
  Flag.withDescription("Key of a latents artifact (default: the one `tinyfusion data latents` makes at its defaults)"),
  Flag.optional
)

/** The latents input a --latents flag names (the data stages read --data only if they must run). */
export const latentsInput = Effect.fnUntraced(function*(key: Option.Option<string>, dir: string) {
  return Option.isSome(key) ? Graph.existing(key.value) : yield* defaultLatents(yield* dataStages(dir))
})

const latents = Command.make("latents", latentFlags, (o) =>
  GlobalFlags.withCompute(Effect.gen(function*() {
    const extracted = yield* runNode(yield* latentsNode(yield* dataStages(o.data), o))
    yield* Console.log(Table.render(["stage", "key", "images", "latents each", "shards", "scale factor", "folder"], [[
      "latents",
      extracted.key,
      String(extracted.output.count),
      `2 × ${extracted.output.latentShape.join("×")}`,
      String(extracted.output.shards),
      Table.fixed(extracted.output.scale, 4),
      extracted.dir
    ]]))
  }))
).pipe(Command.withDescription("Encode every training image and its mirror into latent shards"))

const features = Command.make("features", {
  data: dataFlag,
  seed: seedFlag,
  steps: CheckedFlags.count("steps").pipe(Flag.withDescription("Training steps"), Flag.withDefault(Stages.miniFeatureNet.training.steps)),
  batchSize: CheckedFlags.count("batch-size").pipe(Flag.withDescription("Batch size"), Flag.withDefault(Stages.miniFeatureNet.training.batchSize))
}, (o) =>
  GlobalFlags.withCompute(Effect.gen(function*() {
    const config = yield* Stage.decodeConfig(Stages.FeatureNetStage, {
      ...Stages.miniFeatureNet,
      training: { ...Stages.miniFeatureNet.training, seed: o.seed, steps: o.steps, batchSize: o.batchSize }
    })
    const stages = yield* dataStages(o.data)
    const featureNet = Graph.node(stages.featureNet, config, {})
    const runner = yield* Graph.runner
    const net = yield* runner.run(featureNet)
    const reference = yield* runner.run(Graph.node(stages.reference, Reference.miniReference, { featureNet }))
    yield* Console.log(Table.render(["stage", "key", "figures"], [
      ["feature-net", net.key, `test accuracy ${Table.fixed(100 * net.output.accuracy, 2)}% on ${net.output.testImages} images; pool / spatial dims ${net.output.poolDim} / ${net.output.spatialDim}`],
      ["reference", reference.key, `${reference.output.count} test images; their IS ${Table.fixed(reference.output.is, 3)}; statistics in ${reference.dir}`]
    ]))
  }))
).pipe(Command.withDescription("Train the evaluation feature network; test accuracy, and the reference statistics of the test split"))

export const data = Command.make("data").pipe(
  Command.withDescription("Data stages: autoencoder, latent extraction, feature network"),
  Command.withSubcommands([autoencoder, latents, features])
)

