/**
 * The recovery stages (packages/core Stage):
 *
 *   recovery       fine-tunes or distils a pruned student from its teacher on
 *                  a latents artifact, on the shared loop (Trainer); writes
 *                  the student (raw and EMA weights, the EMA for evaluation)
 *                  through ModelArtifact, the loss curve (loss.json,
 *                  loss.png) and Table 5's initial distillation loss. A run
 *                  that a non-finite loss stops (policy fail, or a rollback
 *                  that meets it again) is a result, not an error: its output
 *                  says `diverged` with the step, and no weights are written.
 *   select-blocks  a student made of chosen teacher blocks, renumbered
 *                  (DiT.keepBlocks on the teacher's EMA weights): a pruning
 *                  decision given by hand.
 *
 * The upstream stages are parameters: any stage whose output names a model
 * (ModelArtifact.Identity: family and config, weights in model.safetensors and
 * optionally ema.safetensors) can be the teacher or the student — a pretrain,
 * a pruning export (depth- or width-pruned), another recovery (Table 7's
 * distilled teachers). Both are read as their EMA weights where they have them.
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Trainer } from "@tinyfusion/diffusion"
import { Config, DiT, ModelArtifact } from "@tinyfusion/models"
import { HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Recovery from "./Recovery.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** An input artifact that does not hold a model, or a teacher and student that do not match. */
export class IncompatibleModels extends Schema.TaggedError<IncompatibleModels>()("IncompatibleModels", {
  reason: Schema.String
}) {
  override get message(): string {
    return `models do not fit: ${this.reason}`
  }
}

/** Kept blocks that are not a subset of the teacher's. */
export class InvalidSelection extends Schema.TaggedError<InvalidSelection>()("InvalidSelection", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid block selection: ${this.reason}`
  }
}

/** The weights of a recovery run that diverged were asked for. */
export class RunDiverged extends Schema.TaggedError<RunDiverged>()("RunDiverged", {
  key: Schema.String,
  step: Schema.Int,
  loss: Schema.String
}) {
  override get message(): string {
    return `recovery ${this.key} diverged (loss ${this.loss} at step ${this.step}): it has no weights`
  }
}

/** A model artifact's family, config and weights (the EMA where it has one). */
export const readModel = (artifact: Stage.Artifact<unknown>, role: string) =>
  Schema.decodeUnknownEffect(ModelArtifact.Identity)(artifact.output).pipe(
    Effect.mapError(() => new IncompatibleModels({ reason: `the ${role} (${artifact.manifest.stage} ${artifact.key}) holds no model` })),
    Effect.flatMap((output) => ModelArtifact.read({ ...artifact, output }, { ema: true }))
  )

/** What a pruned student may change: its depth (depth pruning) and its widths (width pruning). */
const prunable: ReadonlySet<keyof Config.Config> = new Set(["depth", "hiddenSize", "numHeads", "headDim", "mlpHidden"])

/**
 * Teacher and student must be the same network but for depth and widths
 * (the widths compared as the shapes use them); distilling hidden states
 * needs them of one width.
 */
const compatible = (teacher: ModelArtifact.Identity, student: ModelArtifact.Identity, strategy: Recovery.Strategy) =>
  Effect.gen(function*() {
    if (teacher.family !== student.family) {
      return yield* new IncompatibleModels({ reason: `a ${student.family} student of a ${teacher.family} teacher` })
    }
    const keys = new Set([...Object.keys(teacher.config), ...Object.keys(student.config)] as Array<keyof Config.Config>)
    const differ = [...keys].filter((k) => !prunable.has(k) && teacher.config[k] !== student.config[k])
    if (differ.length > 0) {
      return yield* new IncompatibleModels({
        reason: `student ${Config.describe(student.config)} and teacher ${Config.describe(teacher.config)} differ in ${differ.join(", ")}`
      })
    }
    if (Recovery.usesRep(strategy) && student.config.hiddenSize !== teacher.config.hiddenSize) {
      return yield* new IncompatibleModels({
        reason: `${strategy} matches hidden states, but the student is ${student.config.hiddenSize} wide and the teacher ${teacher.config.hiddenSize}`
      })
    }
  })

export const RecoveryConfig = Schema.Struct({
  loss: Recovery.Loss,
  training: Trainer.Settings
})
export type RecoveryConfig = typeof RecoveryConfig.Type

export const Divergence = Schema.Struct({
  step: Schema.Int,
  /** The loss that stopped the run: "NaN", "Infinity" or "-Infinity". */
  loss: Schema.String
})

export const RecoveryOutput = Schema.Struct({
  ...ModelArtifact.Fields,
  strategy: Recovery.Strategy,
  steps: Schema.Int,
  /** Table 5's column (see Recovery.initialDistillLoss); null for fine-tuning. */
  initialDistillLoss: Schema.NullOr(Schema.Finite),
  /** The loss of the last step with a finite one (null: none). */
  finalLoss: Schema.NullOr(Schema.Finite),
  skipped: Schema.Array(Schema.Int),
  /** Present when a non-finite loss ended the run; then no weights were written. */
  diverged: Schema.optional(Divergence)
})
export type RecoveryOutput = typeof RecoveryOutput.Type

/** The recovery stage reading its teacher from `teacher` and its student from `student`. */
export function make<T extends Stage.Any, S extends Stage.Any>(wiring: { readonly teacher: T; readonly student: S }) {
  return Stage.make({
    name: "recovery",
    version: 1,
    config: RecoveryConfig,
    output: RecoveryOutput,
    inputs: { teacher: wiring.teacher, student: wiring.student, latents: Stages.LatentsStage } as {
      readonly teacher: T
      readonly student: S
      readonly latents: typeof Stages.LatentsStage
    },
    run: (config, inputs, ctx) =>
      Effect.gen(function*() {
        const teacher = yield* readModel(inputs.teacher as Stage.Artifact<unknown>, "teacher")
        const student = yield* readModel(inputs.student as Stage.Artifact<unknown>, "student")
        yield* compatible(teacher, student, config.loss.strategy)
        const { loss, training } = config
        const pairs = Recovery.usesRep(loss.strategy)
          ? yield* Recovery.pairs(loss.alignment, student.config.depth, teacher.config.depth)
          : []
        const objective = yield* Trainer.objective(student.family, student.config)
        const outcome = yield* Effect.acquireUseRelease(
          // The fine-tuning baseline never runs the teacher.
          Effect.sync(() => (loss.strategy === "finetune" ? {} : HostTensor.treeToTensors(teacher.params))),
          (params) =>
            Trainer.run(ctx, training, Recovery.task(objective, loss, training.steps, {
              teacher: { config: teacher.config, params },
              student: { config: student.config, init: student.params },
              pairs
            })),
          (params) => Effect.sync(() => ParamTree.dispose(params))
        ).pipe(Effect.provide(Stages.latentDataset(inputs.latents)))
        yield* ctx.metric("resumed_from", outcome.resumedFrom)
        if (outcome.stepsRun > 0) {
          yield* ctx.metric("samples_per_second", (outcome.stepsRun * training.batchSize) / outcome.seconds)
          yield* ctx.metric("ms_per_step", (1000 * outcome.seconds) / outcome.stepsRun)
        }
        const initial = Recovery.initialDistillLoss(loss.strategy, outcome.curve)
        yield* ctx.metric("initial_distill_loss", initial ?? Number.NaN)
        const title = `${loss.strategy}${loss.k === undefined ? "" : ` (${loss.k}σ)`}: ${Config.describe(student.config)}`
        yield* Trainer.writeCurve(ctx, outcome.curve, title)
        const identity = { family: student.family, config: student.config }
        const common = { strategy: loss.strategy, steps: training.steps, initialDistillLoss: initial ?? null }
        if (outcome._tag === "Diverged") {
          yield* ctx.metric("diverged_step", outcome.step)
          const diverged: RecoveryOutput = {
            ...identity,
            parameters: ParamTree.flatten(student.params, HostTensor.isHostTensor).reduce((n, [, t]) => n + t.data.length, 0),
            ...common,
            finalLoss: Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null,
            skipped: [],
            diverged: { step: outcome.step, loss: String(outcome.loss) }
          }
          return diverged
        }
        const model = yield* ModelArtifact.write(ctx, { ...identity, params: outcome.params, ema: outcome.ema })
        yield* ctx.metric("final_loss", outcome.lastLoss)
        const finished: RecoveryOutput = {
          ...model,
          ...common,
          finalLoss: Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null,
          skipped: outcome.skipped
        }
        return finished
      })
  })
}

/** A recovered student's weights (the EMA unless asked otherwise); a diverged run has none. */
export const readRecovered = Effect.fn("RecoveryStage.readRecovered")(function*(
  artifact: Stage.Artifact<RecoveryOutput>,
  options: { readonly ema: boolean }
) {
  const diverged = artifact.output.diverged
  if (diverged !== undefined) return yield* new RunDiverged({ key: artifact.key, step: diverged.step, loss: diverged.loss })
  return yield* ModelArtifact.read(artifact, options)
})

export const SelectOutput = Schema.Struct({
  ...ModelArtifact.Fields,
  teacherDepth: Schema.Int,
  kept: Schema.Array(Index)
})

/** The select-blocks stage over a teacher stage. */
export function selectBlocks<T extends Stage.Any>(teacher: T) {
  return Stage.make({
    name: "select-blocks",
    version: 1,
    config: Schema.Struct({ kept: Schema.Array(Index) }),
    output: SelectOutput,
    inputs: { teacher } as { readonly teacher: T },
    run: (config, inputs, ctx) =>
      Effect.gen(function*() {
        const model = yield* readModel(inputs.teacher as Stage.Artifact<unknown>, "teacher")
        const selected = yield* Effect.try({
          // keepBlocks restructures the tree and reads no tensor, so it serves host trees as well.
          try: () => DiT.keepBlocks(model.config, model.params as unknown as ParamTree.ParamTree, config.kept),
          catch: (e) => new InvalidSelection({ reason: (e as Error).message })
        })
        const written = yield* ModelArtifact.write(ctx, {
          family: model.family,
          config: selected.config,
          params: selected.params as unknown as HostTensor.HostTree
        })
        return { ...written, teacherDepth: model.config.depth, kept: config.kept }
      })
  })
}
