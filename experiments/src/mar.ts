/**
 * Table 2's MAR cells as stage runs: the MAR-L teacher (`mar-pretrain`),
 * evaluated as trained; the MAR-B trained from scratch on the same loop and
 * budget; TinyMAR-D16 — the teacher pruned by a pruner (`prune` on MAR's block
 * stack), exported (`mar-prune-export`), recovered (`mar-recovery`) and
 * evaluated (`evaluation` with the preset's MAR sampling).
 */
import { Effect } from "effect"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { MarPretrain } from "@tinyfusion/diffusion"
import { Evaluation, type Reference } from "@tinyfusion/eval"
import { type Decision, PruneStage } from "@tinyfusion/pruning"
import { MarRecovery, Recovery } from "@tinyfusion/recovery"
import type { Cell } from "./grids.ts"
import type * as Paper from "./paper.ts"
import type { Preset } from "./presets.ts"

const pruning = PruneStage.make({ teacher: MarPretrain.MarPretrainStage, data: Stages.LatentsStage, readTeacher: PruneStage.readMar, readData: Stages.readLatents })
const exported = PruneStage.marExport(pruning.prune, { teacher: MarPretrain.MarPretrainStage, readTeacher: PruneStage.readMar })
const recovery = MarRecovery.make({ teacher: MarPretrain.MarPretrainStage, student: exported })
const evaluatePretrained = Evaluation.make(MarPretrain.MarPretrainStage)
const evaluateRecovered = Evaluation.make(recovery)

type Artifact<O> = Stage.Artifact<O>

/** The shared upstream artifacts a MAR cell reads. */
export interface Shared<E, R> {
  readonly latents: Effect.Effect<Artifact<typeof Stages.LatentsOutput.Type>, E, R>
  readonly autoencoder: Effect.Effect<Artifact<typeof Stages.AutoencoderOutput.Type>, E, R>
  readonly reference: Effect.Effect<Artifact<Reference.ReferenceOutput>, E, R>
}

export interface MarRun {
  readonly metrics: Paper.Metrics
  readonly artifacts: ReadonlyArray<Artifact<unknown>>
  readonly decision?: Decision.PruneDecision
  readonly evaluation?: Artifact<Evaluation.EvaluationOutput>
}

/** The MAR cells of a preset: the two pre-trainings run once, whatever the cells that need them. */
export const cells = Effect.fn("Mar.cells")(function*<E, R>(preset: Preset, shared: Shared<E, R>) {
  const pretrained = (config: MarPretrain.MarPretrainConfig) =>
    Effect.flatMap(shared.latents, (latents) => Stage.run(MarPretrain.MarPretrainStage, config, { latents }))
  const large = yield* Effect.cached(pretrained(preset.mar.large))
  const base = yield* Effect.cached(pretrained(preset.mar.base))

  /** The protocol's evaluation with MAR's sampling, on the EMA weights. */
  const protocol = (cell: Cell): Evaluation.EvaluationConfig => ({ ...preset.evaluation[cell.protocol], weights: "ema", mar: preset.mar.sampling[cell.protocol] })
  const upstream = Effect.all({ autoencoder: shared.autoencoder, reference: shared.reference })

  // Sampling speed belongs to a shape timed in interleaved rounds (speed.ts), not to an evaluation's own sampling.
  const scores = (e: Artifact<Evaluation.EvaluationOutput>): Paper.Metrics => ({
    is: e.output.inceptionScore,
    fid: e.output.fid,
    sfid: e.output.sfid,
    precision: e.output.precision,
    recall: e.output.recall
  })

  return (cell: Cell) =>
    Effect.gen(function*() {
      if (cell.prune === undefined) {
        const model = yield* (cell.scratch === "mar-base" ? base : large)
        const evaluation = yield* Stage.run(evaluatePretrained, protocol(cell), { model, ...(yield* upstream) })
        const run: MarRun = { metrics: scores(evaluation), artifacts: [model, evaluation], evaluation }
        return run
      }
      if (cell.prune.from !== "teacher" || cell.recovery === undefined || cell.recovery.teacher !== undefined) {
        return yield* Effect.die(new Error(`MAR cells prune the MAR-L teacher and recover from it; ${cell.id} asks for more`))
      }
      const teacher = yield* large
      const data = yield* shared.latents
      const pruned = yield* Stage.run(pruning.prune, yield* Stage.decodeConfig(pruning.prune, PruneStage.configFor(cell.prune.method, {
        keep: cell.prune.keep,
        scheme: cell.prune.scheme,
        seed: preset.prune.seed,
        calibration: preset.prune.calibration,
        iterations: preset.prune.iterations,
        learnable: { ...preset.prune.learnable, update: cell.prune.update ?? "lora" },
        samples: preset.prune.randomSamples
      })), { teacher, data })
      const decision = yield* PruneStage.readDecision(pruned)
      const student = yield* Stage.run(exported, {}, { decision: pruned, teacher })
      const r = cell.recovery
      const training = Recovery.paperTraining(preset.recovery.steps[r.budget], preset.recovery.batchSize, preset.recovery.seed)
      const alignment = decision.groups === undefined ? { kept: decision.kept } : { kept: decision.kept, groups: decision.groups }
      const recovered = yield* Stage.run(recovery, {
        loss: Recovery.paper("mar", r.strategy, alignment, r.k),
        training: {
          ...training,
          emaDecay: preset.recovery.emaDecay,
          checkpointEvery: preset.recovery.checkpointEvery,
          curveEvery: preset.recovery.curveEvery
        }
      }, { teacher, student, latents: data })
      const pruneMetrics: Paper.Metrics = {
        ...(pruned.output.calibrationLoss === undefined ? {} : { calibrationLoss: pruned.output.calibrationLoss }),
        ...(pruned.output.confidence === undefined ? {} : { confidence: pruned.output.confidence }),
        ...(recovered.output.initialDistillLoss === null ? {} : { initDistillLoss: recovered.output.initialDistillLoss })
      }
      if (recovered.output.diverged !== undefined) {
        const run: MarRun = { metrics: { ...pruneMetrics, diverged: true }, artifacts: [pruned, student, recovered], decision }
        return run
      }
      const evaluation = yield* Stage.run(evaluateRecovered, protocol(cell), { model: recovered, ...(yield* upstream) })
      const run: MarRun = { metrics: { ...pruneMetrics, ...scores(evaluation) }, artifacts: [pruned, student, recovered, evaluation], decision, evaluation }
      return run
    })
})
