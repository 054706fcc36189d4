/**
 * Recovery of a pruned MAR (TinyMAR-D16: paper §4.2, supplementary Table 6),
 * on the shared loop with the DiT recovery's losses and settings
 * (Recovery.Loss, Recovery.paperTraining):
 *
 *   GT    MAR's training loss (masked rows of DiffLoss)
 *   KD    MSE between the student's and the teacher's head outputs (ε, v)
 *         on the masked rows — the rows whose tokens the model predicts
 *   Rep   hidden-state MSE (masked: within kσ) between each student block
 *         and its aligned teacher block, which must sit in the same half
 *         (encoder blocks see the unmasked tokens, decoder blocks every
 *         position)
 *
 * Teacher and student see the same draws: orders, masked count, rows'
 * timesteps and noise, dropped labels, and dropout masks of the same modules.
 *
 * The `mar-recovery` stage reads a teacher and a student MarArtifact (a MAR
 * pretrain, a mar-prune-export) and writes the student as a MarArtifact.
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { DiffLoss, MarTraining, Trainer } from "@tinyfusion/diffusion"
import { Mar, MarArtifact, MarConfig } from "@tinyfusion/models"
import { HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import type * as Alignment from "./Alignment.ts"
import * as Distill from "./Distill.ts"
import * as Recovery from "./Recovery.ts"
import { IncompatibleModels, RecoveryConfig } from "./RecoveryStage.ts"

type Config = MarConfig.MarConfig

export interface Models {
  readonly teacher: { readonly config: Config; readonly params: ParamTree.ParamTree }
  readonly student: { readonly config: Config; readonly init: HostTensor.HostTree }
  readonly pairs: ReadonlyArray<Alignment.Pair>
}

/** Which half of its stack a block is in. */
const half = (config: Config, block: number) => (block < config.encoderDepth ? "encoder" : "decoder")

/** Fails unless every aligned pair joins blocks of the same half. */
export const checkPairs = (models: Pick<Models, "pairs"> & { readonly teacher: { readonly config: Config }; readonly student: { readonly config: Config } }) =>
  Effect.forEach(models.pairs, (p) =>
    half(models.student.config, p.student) === half(models.teacher.config, p.teacher)
      ? Effect.void
      : Effect.fail(new Recovery.InvalidAlignment({
        reason: `student block ${p.student} (${half(models.student.config, p.student)}) is aligned with teacher block ${p.teacher} (${half(models.teacher.config, p.teacher)})`
      })), { discard: true })

/** Σ over masked rows of the mean squared difference of two row outputs, / masked rows. */
const maskedKd = (student: tf.Tensor2D, teacher: tf.Tensor2D, mask: tf.Tensor1D): tf.Scalar =>
  DiffLoss.maskedMean(tf.mean(tf.squaredDifference(student, teacher), 1) as tf.Tensor1D, mask)

/** The recovery task of `steps` steps (terms gt, kd, rep as the strategy has them). */
export const task = (diffloss: DiffLoss.DiffLoss, loss: Recovery.Loss, steps: number, models: Models): Trainer.Task => {
  const { teacher, student } = models
  const betaAt = Recovery.beta(loss, steps)
  return {
    data: student.config,
    init: student.init,
    draws: (labels, at) => MarTraining.draws(student.config, labels, at),
    loss: (batch) => {
      const d = MarTraining.marDraws(batch.draws)
      const options: Mar.Options = { dropout: MarTraining.dropout(d.at) }
      if (loss.strategy === "finetune") {
        return (params) => {
          const gt = MarTraining.loss(diffloss, student.config, params, batch.x, d, options).loss
          return { loss: gt, terms: { gt } }
        }
      }
      const target = MarTraining.loss(diffloss, teacher.config, teacher.params, batch.x, d, options)
      const weight = betaAt(batch.step)
      return (params) => {
        const own = MarTraining.loss(diffloss, student.config, params, batch.x, d, options)
        const gt = own.loss
        const kd = maskedKd(own.output, target.output, own.mask)
        const logits = tf.add(tf.mul(kd, loss.alphaKd), tf.mul(gt, loss.alphaGt)) as tf.Scalar
        if (!Recovery.usesRep(loss.strategy)) return { loss: logits, terms: { gt, kd } }
        const rep = Distill.repLoss(
          models.pairs.map((p) => [own.hidden.blocks[p.student]!.output, target.hidden.blocks[p.teacher]!.output] as const),
          loss.strategy === "masked-kd" ? loss.k : undefined
        )
        return { loss: tf.add(logits, tf.mul(rep, weight)) as tf.Scalar, terms: { gt, kd, rep } }
      }
    }
  }
}

/** A stage input read as a MAR (the EMA weights where it has them). */
export const readModel = (artifact: Stage.Artifact<unknown>, role: string) =>
  Schema.decodeUnknownEffect(MarArtifact.Identity)(artifact.output).pipe(
    Effect.mapError(() => new IncompatibleModels({ reason: `the ${role} (${artifact.manifest.stage} ${artifact.key}) holds no MAR` })),
    Effect.flatMap((output) => MarArtifact.read({ ...artifact, output }, { ema: true }))
  )

/** Teacher and student must differ in their block counts only. */
const compatible = (teacher: Config, student: Config) => {
  const differ = (Object.keys(teacher) as Array<keyof Config>)
    .filter((k) => k !== "encoderDepth" && k !== "decoderDepth" && teacher[k] !== student[k])
  return differ.length === 0
    ? Effect.void
    : Effect.fail(new IncompatibleModels({ reason: `student ${MarConfig.describe(student)} and teacher ${MarConfig.describe(teacher)} differ in ${differ.join(", ")}` }))
}

export const Output = Schema.Struct({
  ...MarArtifact.Fields,
  strategy: Recovery.Strategy,
  steps: Schema.Int,
  initialDistillLoss: Schema.NullOr(Schema.Finite),
  finalLoss: Schema.NullOr(Schema.Finite),
  skipped: Schema.Array(Schema.Int),
  diverged: Schema.optional(Schema.Struct({ step: Schema.Int, loss: Schema.String }))
})
export type Output = typeof Output.Type

/** The mar-recovery stage reading its teacher from `teacher` and its student from `student`. */
export function make<T extends Stage.Any, S extends Stage.Any>(wiring: { readonly teacher: T; readonly student: S }) {
  return Stage.make({
    name: "mar-recovery",
    version: 1,
    config: RecoveryConfig,
    output: Output,
    inputs: { teacher: wiring.teacher, student: wiring.student, latents: Stages.LatentsStage } as {
      readonly teacher: T
      readonly student: S
      readonly latents: typeof Stages.LatentsStage
    },
    run: (config, inputs, ctx) =>
      Effect.gen(function*() {
        const teacher = yield* readModel(inputs.teacher as Stage.Artifact<unknown>, "teacher")
        const student = yield* readModel(inputs.student as Stage.Artifact<unknown>, "student")
        yield* compatible(teacher.config, student.config)
        const { loss, training } = config
        const depth = MarConfig.depth
        const pairs = Recovery.usesRep(loss.strategy) ? yield* Recovery.pairs(loss.alignment, depth(student.config), depth(teacher.config)) : []
        const diffloss = yield* DiffLoss.make(student.config.numSamplingSteps)
        const outcome = yield* Effect.acquireUseRelease(
          Effect.sync(() => (loss.strategy === "finetune" ? {} : HostTensor.treeToTensors(teacher.params))),
          (params) =>
            Effect.gen(function*() {
              const models = { teacher: { config: teacher.config, params }, student: { config: student.config, init: student.params }, pairs }
              yield* checkPairs(models)
              return yield* Trainer.run(ctx, training, task(diffloss, loss, training.steps, models))
            }),
          (params) => Effect.sync(() => ParamTree.dispose(params))
        ).pipe(Effect.provide(Stages.latentDataset(inputs.latents)))
        yield* ctx.metric("resumed_from", outcome.resumedFrom)
        if (outcome.stepsRun > 0) yield* ctx.metric("ms_per_step", (1000 * outcome.seconds) / outcome.stepsRun)
        const initial = Recovery.initialDistillLoss(loss.strategy, outcome.curve)
        yield* Trainer.writeCurve(ctx, outcome.curve, `${loss.strategy}: ${MarConfig.describe(student.config)}`)
        const common = { strategy: loss.strategy, steps: training.steps, initialDistillLoss: initial ?? null }
        if (outcome._tag === "Diverged") {
          const diverged: Output = {
            family: "mar",
            config: student.config,
            parameters: 0,
            ...common,
            finalLoss: Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null,
            skipped: [],
            diverged: { step: outcome.step, loss: String(outcome.loss) }
          }
          return diverged
        }
        const model = yield* MarArtifact.write(ctx, { config: student.config, params: outcome.params, ema: outcome.ema })
        yield* ctx.metric("final_loss", outcome.lastLoss)
        const finished: Output = { ...model, ...common, finalLoss: Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null, skipped: outcome.skipped }
        return finished
      })
  })
}
