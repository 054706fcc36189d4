/**
 * `tinyfusion pretrain`: the teacher of the mini reproduction in one
 * command — the autoencoder and the latents of the Fashion-MNIST training
 * split (cache hits after `tinyfusion data latents` with the same flags),
 * then the pretrain stage on the store (`--store`). A killed run resumes
 * from its newest checkpoint; a finished one is a cache hit that prints its
 * figures again.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { Pretrain, Trainer } from "@tinyfusion/diffusion"
import { Config } from "@tinyfusion/models"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as Table from "../Table.ts"
import { dataStages, latentFlags, latentsNode, runNode } from "./data.ts"

const defaults = Pretrain.mini.training

const trainingFlags = {
  steps: CheckedFlags.count("steps").pipe(Flag.withDescription("Training steps"), Flag.withDefault(defaults.steps)),
  batchSize: CheckedFlags.count("batch-size").pipe(Flag.withDescription("Latents per batch"), Flag.withDefault(defaults.batchSize)),
  lr: CheckedFlags.positive("lr").pipe(Flag.withDescription("AdamW learning rate"), Flag.withDefault(defaults.lr)),
  emaDecay: CheckedFlags.fraction("ema-decay").pipe(Flag.withDescription("EMA decay (DiT: 0.9999; short runs want less)"), Flag.withDefault(defaults.emaDecay)),
  clip: CheckedFlags.positive("clip").pipe(Flag.withDescription("Global gradient-norm clip (default: none, as DiT)"), Flag.optional),
  checkpointEvery: CheckedFlags.natural("checkpoint-every").pipe(Flag.withDescription("Steps between checkpoints (0: none)"), Flag.withDefault(defaults.checkpointEvery)),
  curveEvery: CheckedFlags.count("curve-every").pipe(Flag.withDescription("Steps between loss-curve points"), Flag.withDefault(defaults.curveEvery)),
  nonFinite: Flag.Literals("non-finite", ["skip", "rollback", "fail"]).pipe(
    Flag.withDescription("A non-finite loss: skip the step, roll back to the last checkpoint, or stop"),
    Flag.withDefault(defaults.nonFinite)
  )
}

const int = (name: string, description: string) => CheckedFlags.count(name).pipe(Flag.withDescription(description), Flag.optional)

/** The pretrain stage's config from the flags. */
const configOf = (o: {
  readonly family: "dit" | "sit"
  readonly seed: number
  readonly depth: Option.Option<number>
  readonly hidden: Option.Option<number>
  readonly heads: Option.Option<number>
  readonly steps: number
  readonly batchSize: number
  readonly lr: number
  readonly emaDecay: number
  readonly clip: Option.Option<number>
  readonly checkpointEvery: number
  readonly curveEvery: number
  readonly nonFinite: Trainer.NonFinitePolicy
}) =>
  Effect.gen(function*() {
    const model = yield* Config.make("mini", {
      ...Option.match(o.depth, { onNone: () => ({}), onSome: (depth) => ({ depth }) }),
      ...Option.match(o.hidden, { onNone: () => ({}), onSome: (hiddenSize) => ({ hiddenSize }) }),
      ...Option.match(o.heads, { onNone: () => ({}), onSome: (numHeads) => ({ numHeads }) })
    })
    return yield* Stage.decodeConfig(Pretrain.PretrainStage, {
      family: o.family,
      model,
      training: {
        ...defaults,
        steps: o.steps,
        batchSize: o.batchSize,
        seed: o.seed,
        lr: o.lr,
        emaDecay: o.emaDecay,
        ...Option.match(o.clip, { onNone: () => ({}), onSome: (maxGradNorm) => ({ maxGradNorm }) }),
        checkpointEvery: o.checkpointEvery,
        curveEvery: o.curveEvery,
        nonFinite: o.nonFinite
      }
    })
  })

/** The data flags under their own keys: the autoencoder's --ae-steps and --ae-batch-size are not the training's. */
const dataFlags = {
  data: latentFlags.data,
  seed: latentFlags.seed,
  aeSteps: latentFlags.steps,
  aeBatchSize: latentFlags.batchSize,
  shardSize: latentFlags.shardSize
}

/** The latents node the data flags name (the data stages read --data only if they must run). */
const latentsOf = (o: { readonly data: string; readonly seed: number; readonly aeSteps: number; readonly aeBatchSize: number; readonly shardSize: number }) =>
  Effect.flatMap(dataStages(o.data), (stages) => latentsNode(stages, { seed: o.seed, steps: o.aeSteps, batchSize: o.aeBatchSize, shardSize: o.shardSize }))

export const pretrain = Command.make(
  "pretrain",
  {
    ...dataFlags,
    family: Flag.Literals("family", ["dit", "sit"]).pipe(Flag.withDescription("DiT (Gaussian diffusion) or SiT (velocity)"), Flag.withDefault("dit" as const)),
    depth: int("depth", "Blocks (mini: 28)"),
    hidden: int("hidden", "Hidden width (mini: 128)"),
    heads: int("heads", "Attention heads (mini: 4)"),
    ...trainingFlags
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const config = yield* configOf(o)
      const latents = yield* latentsOf(o)
      const trained = yield* runNode(Graph.node(Pretrain.PretrainStage, config, { latents }))
      const out = trained.output
      const metric = Table.metric(trained.manifest)
      yield* Console.log(Table.render(
        ["stage", "key", "model", "parameters", "steps", "final loss", "samples/s", "ms/step", "loss curve"],
        [[
          "pretrain",
          trained.key,
          `${out.family} ${Config.describe(out.config)}`,
          out.parameters.toLocaleString("en-US"),
          `${out.steps}${out.skipped.length > 0 ? ` (${out.skipped.length} skipped)` : ""}`,
          out.finalLoss === null ? "-" : Table.fixed(out.finalLoss, 4),
          metric("samplesPerSecond", 1),
          metric("msPerStep", 1),
          trained.path(Trainer.files.plot)
        ]]
      ))
    }))
).pipe(Command.withDescription("Train the teacher DiT/SiT from scratch on the Fashion-MNIST latents (the mini reproduction's teacher)"))
