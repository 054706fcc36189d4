/**
 * The `mar-pretrain` stage: a MAR trained from scratch on a latents artifact
 * (MAR.forward's loss, MarTraining) on the shared loop (Trainer), from the
 * reference initialisation, written as a MarArtifact (raw and EMA weights in
 * the reference keys) with its loss curve. The reproduction's MAR-L teacher
 * and its MAR-B baseline trained from scratch at the same budget.
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { MarArtifact, MarStateDict, MarConfig } from "@tinyfusion/models"
import * as DiffLoss from "./DiffLoss.ts"
import * as MarTraining from "./MarTraining.ts"
import * as Trainer from "./Trainer.ts"

export const MarPretrainConfig = Schema.Struct({
  model: MarConfig.MarConfig,
  /** The loop; its seed also seeds the initialisation. */
  training: Trainer.Settings
})
export type MarPretrainConfig = typeof MarPretrainConfig.Type

export const MarPretrainOutput = Schema.Struct({
  ...MarArtifact.Fields,
  steps: Schema.Int,
  finalLoss: Schema.NullOr(Schema.Finite),
  skipped: Schema.Array(Schema.Int)
})

/**
 * MAR's pre-training recipe (main_mar.py, util/misc.py, util/lr_sched.py, and
 * the README's MAR-L run): AdamW with betas (0.9, 0.95) and weight decay 0.02
 * off every 1-D tensor, bias and the DiffLoss head (add_weight_decay), the
 * absolute lr blr · batch / 256 from blr 1e-4, a per-iteration linear warm-up
 * over 100 of the 400 epochs then a constant rate (lr_schedule "constant"),
 * gradient clip 3, EMA 0.9999.
 */
export const recipe = {
  blr: 1e-4,
  betas: [0.9, 0.95],
  weightDecay: 0.02,
  noDecay: ["diffloss"],
  epochs: 400,
  warmupEpochs: 100,
  maxGradNorm: 3,
  emaDecay: 0.9999
} as const

/** main_mar.py's absolute learning rate: blr · effective batch / 256. */
export const scaledLr = (blr: number, batchSize: number): number => (blr * batchSize) / 256

/**
 * The loop of a run of `steps` steps of `batchSize` that stands for MAR's 400
 * epochs, at MAR's recipe: the warm-up epochs become the same share of the
 * steps (100 of 400 epochs: the first quarter), the rate is scaled by the
 * batch. Seeds, checkpoints and the curve are the caller's.
 */
export const recipeTraining = (steps: number, batchSize: number) => ({
  steps,
  batchSize,
  lr: scaledLr(recipe.blr, batchSize),
  warmup: Math.round((steps * recipe.warmupEpochs) / recipe.epochs),
  betas: recipe.betas,
  weightDecay: recipe.weightDecay,
  noDecay: recipe.noDecay,
  maxGradNorm: recipe.maxGradNorm,
  emaDecay: recipe.emaDecay
}) satisfies Partial<Trainer.Settings>

/**
 * The mini MAR-L: 16 + 16 blocks of width 128 on the Fashion-MNIST latents,
 * 5,000 steps of 256 for MAR's 400 epochs at its recipe (lr 1e-4 at batch
 * 256, the first 1,250 steps warming up), with EMA 0.999: 0.9999 would still
 * lean on the initial weights after 5,000 steps (as Pretrain.mini).
 */
export const mini: MarPretrainConfig = {
  model: MarConfig.presets.mini,
  training: {
    ...recipeTraining(5000, 256),
    seed: 0,
    emaDecay: 0.999,
    checkpointEvery: 500,
    curveEvery: 50,
    nonFinite: "skip"
  }
}

export const MarPretrainStage = Stage.make({
  name: "mar-pretrain",
  module: import.meta.url,
  config: MarPretrainConfig,
  output: MarPretrainOutput,
  inputs: { latents: Stages.LatentsOutput },
  run: (config, { latents }, ctx) =>
    Effect.gen(function*() {
      const diffloss = yield* DiffLoss.make(config.model.numSamplingSteps)
      const task = MarTraining.task(diffloss, config.model, MarStateDict.init(config.model, config.training.seed))
      const outcome = yield* Trainer.run(ctx, config.training, task).pipe(Effect.provide(Stages.latentDataset(latents)))
      yield* ctx.metric("resumedFrom", outcome.resumedFrom)
      if (outcome._tag === "Diverged") {
        return yield* new Trainer.Diverged({ stage: ctx.stage, step: outcome.step, loss: outcome.loss })
      }
      yield* Trainer.writeCurve(ctx, outcome.curve, `mar-pretrain: ${MarConfig.describe(config.model)}`)
      const model = yield* MarArtifact.write(ctx, { config: config.model, params: outcome.params, ema: outcome.ema })
      const finalLoss = Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null
      yield* ctx.metric("finalLoss", outcome.lastLoss)
      yield* ctx.metric("steps", config.training.steps)
      if (outcome.stepsRun > 0) {
        yield* ctx.metric("samplesPerSecond", (outcome.stepsRun * config.training.batchSize) / outcome.seconds)
        yield* ctx.metric("msPerStep", (1000 * outcome.seconds) / outcome.stepsRun)
      }
      return { ...model, steps: config.training.steps, finalLoss, skipped: outcome.skipped }
    })
})
