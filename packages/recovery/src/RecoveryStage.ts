/**
 * The recovery stages (packages/core Stage):
 *
 *   recovery       fine-tunes or distils a student from its teacher on a
 *                  latents artifact with a strategy of the Strategies
 *                  registry, on the shared loop (Trainer); writes the
 *                  student (raw and EMA weights, the EMA for evaluation)
 *                  through ModelArtifact, the loss curve (loss.json,
 *                  loss.png) and the strategy's evidence (evidence.json; its
 *                  headline figures, e.g. Table 5's initial distillation
 *                  loss, in the output and the metrics). A run that a
 *                  non-finite loss stops (policy fail, or a rollback that
 *                  meets it again) is a result, not an error: its output
 *                  says `diverged` with the step, and holds no model.
 *   select-blocks  a student made of chosen teacher blocks, renumbered (the
 *                  teacher's EMA weights): a pruning decision given by hand.
 *
 * Teacher and student are ports: any model artifact of any family
 * (models Models.Any) — a pre-training, a pruning export (depth- or
 * width-pruned), another recovery (Table 7's distilled teachers), a MAR —
 * read as its EMA weights where it has them and bound to its family for the
 * strategies (Recovery.ditModels, MarRecovery.models). A strategy's options
 * are decoded by its own Schema before the key is taken, and its module
 * joins the key.
 */
import { Effect, Option, Schema } from "effect"
import { Method, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Trainer } from "@tinyfusion/diffusion"
import { Config, Models } from "@tinyfusion/models"
import { HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as MarRecovery from "./MarRecovery.ts"
import * as Recovery from "./Recovery.ts"
import * as Strategies from "./Strategies.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** What a pruned student may change: its depth (depth pruning) and its widths (width pruning). */
const prunable: ReadonlySet<keyof Config.Config> = new Set(["depth", "hiddenSize", "numHeads", "headDim", "mlpHidden"])

/** A DiT's teacher and student must be the same network but for depth and widths (a strategy may ask more: one width for hidden states). */
const compatible = (teacher: Config.Config, student: Config.Config) =>
  Effect.gen(function*() {
    const keys = new Set([...Object.keys(teacher), ...Object.keys(student)] as Array<keyof Config.Config>)
    const differ = [...keys].filter((k) => !prunable.has(k) && teacher[k] !== student[k])
    if (differ.length > 0) {
      return yield* new Recovery.IncompatibleModels({
        reason: `student ${Config.describe(student)} and teacher ${Config.describe(teacher)} differ in ${differ.join(", ")}`
      })
    }
  })

/** Teacher (its weights on the device) and student bound to their family for the strategies: both a DiT or SiT of one objective, or both a MAR. */
const bind = (
  teacher: { readonly key: string; readonly model: Models.Identity; readonly params: ParamTree.ParamTree },
  student: Models.Host & { readonly blocks: Models.Blocks | undefined }
) => {
  const { model, key, params } = teacher
  const other = new Recovery.IncompatibleModels({ reason: `a ${student.family} student of a ${model.family} teacher` })
  if (model.family === "mar") {
    return student.family === "mar"
      ? MarRecovery.models({ key, config: model.config, params }, { config: student.config, init: student.params, blocks: student.blocks })
      : Effect.fail(other)
  }
  if (student.family === "mar" || student.family !== model.family) return Effect.fail(other)
  const { family } = student
  return Effect.gen(function*() {
    yield* compatible(model.config, student.config)
    const objective = yield* Trainer.objective(family, student.config)
    return Recovery.ditModels(objective, { key, config: model.config, params }, { config: student.config, init: student.params, blocks: student.blocks })
  })
}

export const RecoveryConfig = Schema.Struct({
  /** A name in the Strategies registry. */
  strategy: Schema.String,
  /** The strategy's options (its `options` Schema; missing ones take their defaults). */
  options: Schema.Record(Schema.String, Schema.Json).pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  training: Trainer.Settings
})
export type RecoveryConfig = typeof RecoveryConfig.Type

export const Divergence = Schema.Struct({
  step: Schema.Int,
  /** The loss that stopped the run: "NaN", "Infinity" or "-Infinity". */
  loss: Schema.String
})

const RunFields = {
  strategy: Schema.String,
  steps: Schema.Int,
  /** The loss of the last step with a finite one (null: none). */
  finalLoss: Schema.NullOr(Schema.Finite),
  /** The evidence's headline figures (core Method.headline), e.g. initDistillLoss. */
  headline: Schema.Record(Schema.String, Schema.Finite)
}

/** A finished run: the student as a model (of its family). */
export const Recovered = Models.withFields({ ...RunFields, skipped: Schema.Array(Schema.Int) })

/** A run a non-finite loss stopped: no model (so no stage that needs one takes it), what it was, and where it stopped. */
export const Diverged = Schema.Struct({
  ...RunFields,
  student: Models.Identity,
  diverged: Divergence
})

export const RecoveryOutput = Schema.Union([Recovered, Diverged])
export type RecoveryOutput = typeof RecoveryOutput.Type

export const files = { evidence: "evidence.json" } as const

/** The recovery stage: a strategy of the Strategies registry, a teacher and a student (any models), latents. */
export const RecoveryStage = Stage.make({
  name: "recovery",
  module: import.meta.url,
  // The built-in strategies count only when a config chooses them (select).
  exclude: Strategies.registry.modules,
  config: RecoveryConfig,
  output: RecoveryOutput,
  inputs: { teacher: Models.Any, student: Models.Any, latents: Stages.LatentsOutput },
  select: Method.select(Strategies.registry, (config: RecoveryConfig) => config.strategy),
  run: (config, inputs, ctx) =>
    Effect.gen(function*() {
      const strategy = yield* Strategies.get(config.strategy)
      const options = yield* Recovery.options(strategy, config.options)
      const teacher = yield* Models.read(inputs.teacher, { ema: true })
      const student = yield* Models.read(inputs.student, { ema: true })
      // The port gives what every model has; a student cut from a teacher also records its blocks.
      const blocks = Option.getOrUndefined(Schema.decodeUnknownOption(Models.Blocks)(inputs.student.manifest.output))
      const { training } = config
      const outcome = yield* Effect.acquireUseRelease(
        // A strategy that does not distil never runs the teacher.
        Effect.sync(() => (strategy.distils ? HostTensor.treeToTensors(teacher.params) : {})),
        (params) =>
          Effect.gen(function*() {
            const models = yield* bind({ key: inputs.teacher.key, model: Models.identity(teacher), params }, { ...student, blocks })
            const task = yield* strategy.task({ steps: training.steps, options, models })
            return yield* Trainer.run(ctx, training, task)
          }),
        (params) => Effect.sync(() => ParamTree.dispose(params))
      ).pipe(Effect.provide(Stages.latentDataset(inputs.latents)))
      yield* ctx.metric("resumedFrom", outcome.resumedFrom)
      if (outcome.stepsRun > 0) {
        yield* ctx.metric("samplesPerSecond", (outcome.stepsRun * training.batchSize) / outcome.seconds)
        yield* ctx.metric("msPerStep", (1000 * outcome.seconds) / outcome.stepsRun)
      }
      const evidence = yield* Schema.encodeUnknownEffect(strategy.evidence)(strategy.report(options, outcome.curve)).pipe(Effect.orDie)
      yield* ctx.writeJson(files.evidence, evidence as Schema.Json)
      const headline = Method.headline(evidence)
      for (const [name, value] of Object.entries(headline)) yield* ctx.metric(name, value)
      yield* Trainer.writeCurve(ctx, outcome.curve, `${strategy.name}: ${Models.describe(student)}`)
      const run = {
        strategy: strategy.name,
        steps: training.steps,
        finalLoss: Number.isFinite(outcome.lastLoss) ? outcome.lastLoss : null,
        headline
      }
      if (outcome._tag === "Diverged") {
        yield* ctx.metric("divergedStep", outcome.step)
        return {
          ...run,
          student: Models.identity(student),
          diverged: { step: outcome.step, loss: String(outcome.loss) }
        } satisfies typeof Diverged.Type
      }
      const model = yield* Models.write(ctx, { ...Models.identity(student), params: outcome.params }, outcome.ema)
      yield* ctx.metric("finalLoss", outcome.lastLoss)
      return { ...model, ...run, skipped: outcome.skipped } satisfies typeof Recovered.Type
    })
})

/** The select-blocks stage: the teacher's blocks `kept` (its EMA weights), renumbered, with the N:M groups they were chosen in, if any. */
export const SelectStage = Stage.make({
  name: "select-blocks",
  module: import.meta.url,
  config: Schema.Struct({ kept: Schema.Array(Index), groups: Schema.optional(Schema.Array(Schema.Array(Index))) }),
  output: Models.withFields(Models.BlockFields),
  inputs: { teacher: Models.Any },
  run: (config, inputs, ctx) =>
    Effect.flatMap(Models.read(inputs.teacher, { ema: true }), (model) =>
      Models.writeBlocks(ctx, { ...model, key: inputs.teacher.key }, config))
})
