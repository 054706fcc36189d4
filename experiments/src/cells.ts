/**
 * A grid cell as a graph of stage nodes (packages/core Graph), built from
 * the cell and the preset before anything runs:
 *
 *   shared    autoencoder → latents, feature-net → reference, one
 *             teacher per family (pre-trained, or the paper preset's
 *             imported DiT; MAR-L for MAR) and the models trained from
 *             scratch at a teacher's budget (Table 2's MAR-B): nodes every
 *             cell reads
 *   a cell    prune (its source: the teacher or another cell's model) →
 *             prune-export → recovery (its teacher likewise) → evaluation;
 *             a teacher cell evaluates the teacher; a speed cell is one
 *             sampling-speed node, on the teacher's shape at a depth or
 *             width-pruned as Diff-Pruning would. A model of any family
 *             (DiT, SiT, MAR) flows through the same prune, export,
 *             recovery and evaluation stages (their ports take Models.Any)
 *
 * Nodes are values with keys, so cells that share a pruning decision (Table
 * 1's D14 and Table 5's strategies) share its node and artifact, a plan can
 * say what is stored before anything runs, and a cell — or any of its nodes
 * — can be run by id in another process on the same store. `run` turns a
 * cell's artifacts into its metrics under the report's names.
 */
import { Effect, type FileSystem, type Path, Schema } from "effect"
import { type ArtifactStore, Graph, Stage } from "@tinyfusion/core"
import { type Dataset, Stages } from "@tinyfusion/data"
import { MarPretrain, Pretrain } from "@tinyfusion/diffusion"
import { Evaluation, Metrics, Reference } from "@tinyfusion/eval"
import { type ModelArtifact, ModelFile, type Models } from "@tinyfusion/models"
import { type Decision, PruneStage, Width } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import type { Compute } from "@tinyfusion/tensor"
import type { Cell, Source } from "./grids.ts"
import type * as Paper from "./paper.ts"
import type * as Presets from "./presets.ts"
import type { Preset } from "./presets.ts"
import { SpeedStage } from "./speed.ts"

/** The services a cell's stages use. */
export type Needs = ArtifactStore | Compute | Dataset | FileSystem.FileSystem | Path.Path

type Node<O> = Graph.Node<O, unknown, Needs>

/**
 * Every stage a cell's graph holds, by name: the registry a worker rebuilds
 * a described node from (core Graph.fromDescription). The stages of the
 * paper preset's published files (model-file, the imported autoencoder,
 * feature network and reference batch) read their file by path, so they run
 * where the file is.
 */
export const stages = [
  Stages.AutoencoderStage,
  Stages.LatentsStage,
  Stages.FeatureNetStage,
  Reference.ReferenceStage,
  Pretrain.PretrainStage,
  MarPretrain.MarPretrainStage,
  PruneStage.PruneStage,
  PruneStage.ExportStage,
  RecoveryStage.RecoveryStage,
  Evaluation.EvaluationStage,
  SpeedStage
] as const

/** The nodes every cell reads. */
export interface Shared {
  readonly autoencoder: Node<typeof Stages.AutoencoderOutput.Type>
  readonly latents: Node<typeof Stages.LatentsOutput.Type>
  readonly reference: Node<Reference.ReferenceOutput>
  readonly teachers: { readonly [F in Cell["family"]]: Node<Models.Any> }
  /** Models trained from scratch at a teacher's budget, by name (Table 2's MAR-B). */
  readonly scratch: { readonly [S in NonNullable<Cell["scratch"]>]: Node<Models.Any> }
}

/**
 * The shared nodes of a preset; with the paper preset's published files
 * (`imported`, checked by Presets.checkPaperFiles), SD-VAE, the FID
 * Inception and ADM's reference batch stand in for the trained
 * autoencoder, feature network and dataset reference, and the teachers'
 * checkpoints for pre-training.
 */
export const shared = Effect.fn("Cells.shared")(function*(preset: Preset, imported?: Presets.Imported) {
  const autoencoder: Node<typeof Stages.AutoencoderOutput.Type> = imported === undefined
    ? Graph.node(Stages.AutoencoderStage, preset.autoencoder, {}, "shared")
    : Graph.node(Stages.importedAutoencoder(imported.autoencoder.path), imported.autoencoder.config, {}, "shared")
  const latents = Graph.node(Stages.LatentsStage, preset.latents, { autoencoder }, "shared")
  const reference: Node<Reference.ReferenceOutput> = imported === undefined
    ? Graph.node(Reference.ReferenceStage, preset.reference, { featureNet: Graph.node(Stages.FeatureNetStage, preset.featureNet, {}, "shared") }, "shared")
    : Graph.node(Reference.fromBatch(imported.reference.path), imported.reference.config, {
      featureNet: Graph.node(Stages.importedFeatureNet(imported.featureNet.path), imported.featureNet.config, {}, "shared")
    }, "shared")
  const teacher = (family: ModelArtifact.Family) =>
    Effect.gen(function*() {
      const file = imported?.teachers[family]
      if (file === undefined) return Graph.node(Pretrain.PretrainStage, preset.teacher[family], { latents }, "shared") as Node<Models.Any>
      const described = yield* ModelFile.inspect(file, { family })
      return Graph.node(ModelFile.stage(described), ModelFile.stageConfig(described), {}, "shared") as Node<Models.Any>
    })
  return {
    autoencoder,
    latents,
    reference,
    teachers: {
      dit: yield* teacher("dit"),
      sit: yield* teacher("sit"),
      mar: Graph.node(MarPretrain.MarPretrainStage, preset.mar.large, { latents }, "shared")
    },
    scratch: { "mar-base": Graph.node(MarPretrain.MarPretrainStage, preset.mar.base, { latents }, "shared") }
  } satisfies Shared
})

/** A cell's nodes; `model` is what a later cell starting from it reads. */
export interface CellGraph {
  readonly cell: Cell
  readonly prune?: Node<PruneStage.PruneSummary>
  readonly export?: Node<typeof PruneStage.ExportOutput.Type>
  readonly recovery?: Node<RecoveryStage.RecoveryOutput>
  readonly evaluation?: Node<Evaluation.EvaluationOutput>
  readonly speed?: Node<typeof SpeedStage.output.Type>
  readonly model?: Node<Models.Any> | Node<RecoveryStage.RecoveryOutput>
}

/** Every node of a cell, in the order it runs them. */
export const nodes = (g: CellGraph): ReadonlyArray<Node<unknown>> =>
  [g.speed, g.prune, g.export, g.recovery, g.evaluation].filter((n): n is Node<any> => n !== undefined)

/** The graphs of `cells` (each cell's sources among them), by id. */
export const graphs = Effect.fn("Cells.graphs")(function*(cells: ReadonlyArray<Cell>, preset: Preset, s: Shared) {
  const byId = new Map(cells.map((c) => [c.id, c]))
  const built = new Map<string, CellGraph>()

  const evaluation = (cell: Cell, model: Node<unknown>, ema: boolean) => {
    const protocol = preset.evaluation[cell.protocol]
    // SiT samples with its SDE (the paper's SiT protocol) on as many grid points as DiT has steps; MAR with its own sampler.
    const sampling = cell.family === "sit" ? { ...protocol.sampling, sampler: "sde" as const } : protocol.sampling
    const config = {
      ...protocol,
      sampling,
      weights: ema ? ("ema" as const) : ("raw" as const),
      ...(cell.family === "mar" ? { mar: preset.mar.sampling[cell.protocol] } : {})
    }
    return Graph.node(Evaluation.EvaluationStage, config, { model: model as Node<Models.Any>, autoencoder: s.autoencoder, reference: s.reference }, cell.id)
  }

  const build = (cell: Cell): Effect.Effect<CellGraph, Stage.InvalidConfig | CellFailed> =>
    Effect.gen(function*() {
      const known = built.get(cell.id)
      if (known !== undefined) return known
      const modelOf = (source: Source) =>
        source === "teacher"
          ? Effect.succeed<Node<unknown>>(s.teachers[cell.family])
          : Effect.map(build(byId.get(source.cell)!), (g) => g.model as Node<unknown>)
      let graph: CellGraph
      if (cell.speedDepth !== undefined || cell.speedWidth !== undefined) {
        if (cell.family === "mar") return yield* new CellFailed({ cell: cell.id, reason: "speed cells time a DiT or SiT shape" })
        const shape = preset.teacher[cell.family].model
        graph = {
          cell,
          speed: Graph.node(SpeedStage, {
            family: cell.family,
            // The teacher's shape at a depth, or width-pruned as Diff-Pruning would (Width.forRatio).
            model: cell.speedWidth === undefined ? { ...shape, depth: cell.speedDepth! } : Width.forRatio(shape, cell.speedWidth).config,
            sampling: preset.speed.sampling,
            batch: preset.speed.batch,
            repetitions: preset.speed.repetitions
          }, {}, cell.id)
        }
      } else if (cell.prune === undefined) {
        const teacher = cell.scratch === undefined ? s.teachers[cell.family] : s.scratch[cell.scratch]
        graph = { cell, evaluation: evaluation(cell, teacher, true), model: teacher }
      } else {
        const source = (yield* modelOf(cell.prune.from)) as Node<Models.Any>
        const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
          method: cell.prune.method,
          keep: cell.prune.keep,
          ...(cell.prune.scheme === undefined ? {} : { scheme: cell.prune.scheme }),
          seed: preset.prune.seed,
          calibration: preset.prune.calibration,
          options: { ...preset.prune.options[cell.prune.method], ...cell.prune.options }
        })
        const prune = Graph.node(PruneStage.PruneStage, config, { teacher: source, data: s.latents }, cell.id)
        const exported = Graph.node(PruneStage.ExportStage, {}, { decision: prune, teacher: source }, cell.id)
        const r = cell.recovery
        if (r === undefined) {
          graph = { cell, prune, export: exported, evaluation: evaluation(cell, exported, true), model: exported }
        } else {
          const paper = Recovery.paperTraining(preset.recovery.steps[r.budget], preset.recovery.batchSize, preset.recovery.seed)
          const lr = r.lr ?? paper.lr
          const recovery = Graph.node(RecoveryStage.RecoveryStage, {
            strategy: r.strategy,
            options: r.options ?? {},
            training: {
              ...paper,
              // A learning rate of Table 8 keeps the paper's ratio of floor to rate. (The DiT and SiT cells have
              // always scaled the floor, even at the paper's rate, where 1e-4·2e-4/2e-4 rounds to 0.99999…e-4;
              // the MAR cells take the paper's floor. Both are kept, so the stored numbers stay as they are.)
              lr,
              lrFloor: r.lr === undefined && cell.family === "mar" ? paper.lrFloor! : (paper.lrFloor! * lr) / paper.lr,
              emaDecay: preset.recovery.emaDecay,
              checkpointEvery: preset.recovery.checkpointEvery,
              curveEvery: preset.recovery.curveEvery
            }
          }, { teacher: (yield* modelOf(r.teacher ?? "teacher")) as Node<Models.Any>, student: exported, latents: s.latents }, cell.id)
          graph = { cell, prune, export: exported, recovery, evaluation: evaluation(cell, recovery, r.ema ?? true), model: recovery }
        }
      }
      built.set(cell.id, graph)
      return graph
    })

  for (const cell of cells) yield* build(cell)
  return built as ReadonlyMap<string, CellGraph>
})

/** A cell that could not produce its result. */
export class CellFailed extends Schema.TaggedError<CellFailed>()("CellFailed", {
  cell: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cell ${this.cell}: ${this.reason}`
  }
}

/** What a cell produced: its metrics, the artifacts behind them, and what the figures draw. */
export interface CellRun {
  readonly cell: Cell
  readonly metrics: Paper.Metrics
  readonly artifacts: ReadonlyArray<Stage.Artifact<unknown>>
  readonly decision?: Decision.PruneDecision
  readonly evaluation?: Stage.Artifact<Evaluation.EvaluationOutput>
}

/** The evaluation's scores under their names, and its sampling speed. */
const scores = (e: Stage.Artifact<Evaluation.EvaluationOutput>): Paper.Metrics => {
  const itPerS = e.manifest.metrics["itPerS"]
  return {
    ...Object.fromEntries(Object.keys(Metrics.Scores.fields).map((name) => [name, e.output[name as keyof Metrics.Results]])),
    ...(typeof itPerS === "number" ? { itPerS } : {})
  }
}

/** Runs a cell's nodes on a runner (shared keys run once) and reads its metrics from their outputs. */
export const run = (g: CellGraph, all: ReadonlyMap<string, CellGraph>, runner: Graph.Runner) =>
  Effect.gen(function*() {
    const { cell } = g
    // A cell starting from another's model needs that model: a diverged recovery has none.
    const requireModel = (source: Source | undefined, role: string) =>
      Effect.gen(function*() {
        if (source === undefined || source === "teacher") return
        const upstream = all.get(source.cell)?.recovery
        if (upstream === undefined) return
        if ("diverged" in (yield* runner.run(upstream)).output) {
          return yield* new CellFailed({ cell: source.cell, reason: `its recovery diverged, so it is no ${role}` })
        }
      })
    if (g.speed !== undefined) {
      const speed = yield* runner.run(g.speed)
      return { cell, metrics: { itPerS: speed.output.itPerS, parameters: speed.output.parameters }, artifacts: [speed] } satisfies CellRun
    }
    if (g.prune === undefined || g.export === undefined) {
      const teacher = yield* runner.run(g.model as Node<unknown>)
      const evaluation = yield* runner.run(g.evaluation!)
      return { cell, metrics: scores(evaluation), artifacts: [teacher, evaluation], evaluation } satisfies CellRun
    }
    yield* requireModel(cell.prune?.from, "model to prune")
    const pruned = yield* runner.run(g.prune)
    const exported = yield* runner.run(g.export)
    const decision = yield* PruneStage.readDecision(pruned)
    const pruneMetrics: Paper.Metrics = {
      ...(pruned.output.calibrationLoss === undefined ? {} : { calibrationLoss: pruned.output.calibrationLoss }),
      ...pruned.output.headline
    }
    if (g.recovery === undefined) {
      const evaluation = yield* runner.run(g.evaluation!)
      return { cell, decision, metrics: { ...pruneMetrics, ...scores(evaluation) }, artifacts: [pruned, exported, evaluation], evaluation } satisfies CellRun
    }
    yield* requireModel(cell.recovery?.teacher, "teacher")
    const recovered = yield* runner.run(g.recovery)
    const recoveryMetrics: Paper.Metrics = { ...pruneMetrics, ...recovered.output.headline }
    if ("diverged" in recovered.output) {
      return { cell, decision, metrics: { ...recoveryMetrics, diverged: true }, artifacts: [pruned, exported, recovered] } satisfies CellRun
    }
    const evaluation = yield* runner.run(g.evaluation!)
    return {
      cell,
      decision,
      metrics: { ...recoveryMetrics, ...scores(evaluation) },
      artifacts: [pruned, exported, recovered, evaluation],
      evaluation
    } satisfies CellRun
  })
