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
 * The mini MAR-L: 16 + 16 blocks of width 128 on the Fashion-MNIST latents,
 * on the DiT teacher's loop (5,000 steps of 256, AdamW 1e-4, EMA 0.999), with
 * MAR's gradient clip of 3. (The reference's AdamW betas (0.9, 0.95), weight
 * decay 0.02 off biases, norms and the head, and 100 warm-up epochs are not
 * in the loop's settings; the mini runs DiT's optimiser.)
 */
export const mini: MarPretrainConfig = {
  model: MarConfig.presets.mini,
  training: {
    steps: 5000,
    batchSize: 256,
    seed: 0,
    lr: 1e-4,
    weightDecay: 0,
    maxGradNorm: 3,
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
