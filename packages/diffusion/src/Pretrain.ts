/**
 * The `pretrain` stage: a DiT (Gaussian diffusion, ε-MSE + vb) or SiT
 * (velocity) trained from scratch on a latents artifact — the teacher of the
 * mini reproduction — on the shared loop (Trainer): AdamW (DiT: lr 1e-4,
 * weight decay 0, no clipping, constant rate), EMA, checkpoints and resume.
 * The model is written through ModelArtifact (raw and EMA weights in the
 * reference keys), with the loss curve (loss.json, loss.png).
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Config, Init, ModelArtifact } from "@tinyfusion/models"
import * as Trainer from "./Trainer.ts"

export const PretrainConfig = Schema.Struct({
  family: ModelArtifact.Family,
  model: Config.Config,
  /** The loop; its seed also seeds the initialisation. */
  training: Trainer.Settings
})
export type PretrainConfig = typeof PretrainConfig.Type

export const PretrainOutput = Schema.Struct({
  ...ModelArtifact.Fields,
  steps: Schema.Int,
  /** The loss of the last step that had a finite one (null: no such step). */
  finalLoss: Schema.NullOr(Schema.Finite),
  /** Steps whose update was skipped for a non-finite loss. */
  skipped: Schema.Array(Schema.Int)
})
export type PretrainOutput = typeof PretrainOutput.Type

/**
 * The mini teacher: DiT 28 × 128 on the 8×8×4 Fashion-MNIST latents, 5000
 * steps of 256 (21 epochs of the 60,000 images). DiT's optimiser (AdamW lr
 * 1e-4, no weight decay, no clipping); EMA 0.999 rather than DiT's 0.9999,
 * which would still lean on early weights after a run this short.
 */
export const mini: PretrainConfig = {
  family: "dit",
  model: Config.presets.mini,
  training: {
    steps: 5000,
    batchSize: 256,
    seed: 0,
    lr: 1e-4,
    weightDecay: 0,
    emaDecay: 0.999,
    checkpointEvery: 500,
    curveEvery: 50,
    nonFinite: "skip"
  }
}

export const PretrainStage = Stage.make({
  name: "pretrain",
  module: import.meta.url,
  config: PretrainConfig,
  output: PretrainOutput,
  inputs: { latents: Stages.LatentsOutput },
  run: (config, { latents }, ctx) =>
    Effect.gen(function*() {
      const objective = yield* Trainer.objective(config.family, config.model)
      const task = Trainer.diffusionTask(objective, config.model, Init.host(config.model, config.training.seed))
      const outcome = yield* Trainer.run(ctx, config.training, task).pipe(Effect.provide(Stages.latentDataset(latents)))
      yield* ctx.metric("resumedFrom", outcome.resumedFrom)
      if (outcome._tag === "Diverged") {
        return yield* new Trainer.Diverged({ stage: ctx.stage, step: outcome.step, loss: outcome.loss })
      }
      yield* Trainer.writeCurve(ctx, outcome.curve, `pretrain ${config.family}: ${Config.describe(config.model)}`)
      const model = yield* ModelArtifact.write(ctx, { family: config.family, config: config.model, params: outcome.params, ema: outcome.ema })
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
