/**
 * A grid cell as a graph of stage nodes (packages/core Graph), built from
 * the cell and the preset before anything runs:
 *
 *   shared    autoencoder → latents, feature-net → reference, one
 *             teacher per family (pre-trained, or the paper preset's
 *             imported DiT; MAR-L for MAR), the models trained from
 *             scratch at a teacher's budget (Table 2's MAR-B), the DiT
 *             teacher's network untrained (the instrument check), and one
 *             sampling-speed node timing every distinct shape of the
 *             selected cells in interleaved rounds: nodes every cell reads
 *   a cell    prune (its source: the teacher or another cell's model) →
 *             prune-export → per recovery seed of its grid: recovery (its
 *             teacher likewise) → evaluation; a teacher cell evaluates the
 *             teacher; a speed cell reads its shape's figure. A model of
 *             any family (DiT, SiT, MAR) flows through the same prune,
 *             export, recovery and evaluation stages (their ports take
 *             Models.Any)
 *
 * Nodes are values with keys, so cells that share a pruning decision (Table
 * 1's D14 and Table 5's strategies) share its node and artifact, a plan can
 * say what is stored before anything runs, and a cell — or any of its nodes
 * — can be run by id in another process on the same store. `run` turns a
 * cell's artifacts into its metrics under the report's names.
 */
import { Effect, Exit, type FileSystem, type Path, Schema } from "effect"
import { type ArtifactStore, Graph, Stage } from "@tinyfusion/core"
import { type Dataset, Stages } from "@tinyfusion/data"
import { MarPretrain, Pretrain } from "@tinyfusion/diffusion"
import { Bootstrap, Evaluation, Metrics, Reference } from "@tinyfusion/eval"
import { type Config, type ModelArtifact, ModelFile, type Models } from "@tinyfusion/models"
import { type Decision, PruneStage, Width } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import type { Compute } from "@tinyfusion/tensor"
import type * as Estimates from "./estimates.ts"
import { type Cell, seedsOf, type Source } from "./grids.ts"
import type * as Paper from "./paper.ts"
import type * as Presets from "./presets.ts"
import type { Preset } from "./presets.ts"
import * as Speed from "./speed.ts"

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
  Speed.SpeedStage
] as const

/** The nodes every cell reads. */
export interface Shared {
  readonly autoencoder: Node<typeof Stages.AutoencoderOutput.Type>
  readonly latents: Node<typeof Stages.LatentsOutput.Type>
  readonly featureNet: Node<typeof Stages.FeatureNetOutput.Type>
  readonly reference: Node<Reference.ReferenceOutput>
  readonly teachers: { readonly [F in Cell["family"]]: Node<Models.Any> }
  /** The teachers' architectures: the preset's, or an imported checkpoint's own. */
  readonly architectures: { readonly [F in ModelArtifact.Family]: Config.Config }
  /** Models trained from scratch at a teacher's budget, by name (Table 2's MAR-B). */
  readonly scratch: { readonly [S in NonNullable<Cell["scratch"]>]: Node<Models.Any> }
  /** The DiT teacher's network as initialised: pre-training of no steps (the instrument check's bad model). */
  readonly untrained: Node<Models.Any>
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
  const featureNet: Node<typeof Stages.FeatureNetOutput.Type> = imported === undefined
    ? Graph.node(Stages.FeatureNetStage, preset.featureNet, {}, "shared")
    : Graph.node(Stages.importedFeatureNet(imported.featureNet.path), imported.featureNet.config, {}, "shared")
  const reference: Node<Reference.ReferenceOutput> = imported === undefined
    ? Graph.node(Reference.ReferenceStage, preset.reference, { featureNet }, "shared")
    : Graph.node(Reference.fromBatch(imported.reference.path), imported.reference.config, { featureNet }, "shared")
  const teacher = (family: ModelArtifact.Family) =>
    Effect.gen(function*() {
      const file = imported?.teachers[family]
      if (file === undefined) {
        const node: Node<Models.Any> = Graph.node(Pretrain.PretrainStage, preset.teacher[family], { latents }, "shared")
        return { node, architecture: preset.teacher[family].model }
      }
      const described = yield* ModelFile.inspect(file, { family })
      const node: Node<Models.Any> = Graph.node(ModelFile.stage(described), ModelFile.stageConfig(described), {}, "shared")
      return { node, architecture: described.config }
    })
  const dit = yield* teacher("dit")
  const sit = yield* teacher("sit")
  const untrained = { ...preset.teacher.dit, model: dit.architecture, training: { ...preset.teacher.dit.training, steps: 0 } }
  return {
    autoencoder,
    latents,
    featureNet,
    reference,
    teachers: { dit: dit.node, sit: sit.node, mar: Graph.node(MarPretrain.MarPretrainStage, preset.mar.large, { latents }, "shared") },
    architectures: { dit: dit.architecture, sit: sit.architecture },
    scratch: { "mar-base": Graph.node(MarPretrain.MarPretrainStage, preset.mar.base, { latents }, "shared") },
    untrained: Graph.node(Pretrain.PretrainStage, untrained, { latents }, "shared")
  } satisfies Shared
})

/** A recovery seed's nodes, or the one evaluation of a cell that recovers nothing. */
export interface SeedNodes {
  readonly seed?: number
  readonly recovery?: Node<RecoveryStage.RecoveryOutput>
  readonly evaluation: Node<Evaluation.EvaluationOutput>
}

/** A cell's nodes; `model` is what a later cell starting from it reads (its first seed's). */
export interface CellGraph {
  readonly cell: Cell
  readonly prune?: Node<PruneStage.PruneSummary>
  readonly export?: Node<typeof PruneStage.ExportOutput.Type>
  /** One per recovery seed (none for a speed cell). */
  readonly seeds: ReadonlyArray<SeedNodes>
  readonly model?: Node<Models.Any> | Node<RecoveryStage.RecoveryOutput>
  /** The run's one sampling-speed node, and the shape of this cell's model in it (none for a MAR). */
  readonly speed?: { readonly node: Node<typeof Speed.SpeedOutput.Type>; readonly shape: Speed.Shape }
}

/** Every node of a cell, in the order it runs them. */
export const nodes = (g: CellGraph): ReadonlyArray<Node<unknown>> =>
  [g.speed?.node, g.prune, g.export, ...g.seeds.flatMap((s) => [s.recovery, s.evaluation])].filter((n): n is Node<any> => n !== undefined)

/** A width-pruning cell's share of parameters removed (its pruner's `ratio` option). */
const ratioOf = (cell: Cell): number | undefined => {
  const ratio = cell.prune?.options?.["ratio"]
  return typeof ratio === "number" ? ratio : undefined
}

/**
 * The architecture a cell's model has: the teacher's at the cell's depth, or
 * at Diff-Pruning's uniform widths (Width.forRatio, what its export keeps). A
 * MAR is not timed.
 */
export const shapeOf = (architectures: Shared["architectures"], cell: Cell): Speed.Shape | undefined => {
  if (cell.family === "mar") return undefined
  const teacher = architectures[cell.family]
  const ratio = cell.speedWidth ?? ratioOf(cell)
  if (ratio !== undefined) return { family: cell.family, model: Width.forRatio(teacher, ratio).config }
  return { family: cell.family, model: { ...teacher, depth: cell.speedDepth ?? cell.prune?.keep ?? teacher.depth } }
}

/** The recovery seeds a cell runs with: its grid's count, cut to the preset's most. */
export const recoverySeeds = (preset: Preset, cell: Cell): ReadonlyArray<number> =>
  Array.from({ length: Math.min(seedsOf(cell.id), preset.maxSeeds) }, (_, i) => preset.recovery.seed + i)

/** The graphs of `cells` (each cell's sources among them), by id. */
export const graphs = Effect.fn("Cells.graphs")(function*(cells: ReadonlyArray<Cell>, preset: Preset, s: Shared) {
  const byId = new Map(cells.map((c) => [c.id, c]))
  const built = new Map<string, CellGraph>()

  // Every distinct shape of the cells, timed together in interleaved rounds (speed belongs to a shape, not a cell).
  const shapes = Speed.roundOrder(cells.flatMap((c) => shapeOf(s.architectures, c) ?? []))
  const speedNode: Node<typeof Speed.SpeedOutput.Type> | undefined = shapes.length === 0 ? undefined : Graph.node(Speed.SpeedStage, {
    shapes,
    sampling: preset.speed.sampling,
    batch: preset.speed.batch,
    warmup: preset.speed.warmup,
    rounds: preset.speed.rounds
  }, {}, "shared")
  const speedOf = (cell: Cell) => {
    const shape = shapeOf(s.architectures, cell)
    return shape === undefined || speedNode === undefined ? {} : { speed: { node: speedNode, shape } }
  }

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
        graph = { cell, seeds: [], ...speedOf(cell) }
      } else if (cell.untrained === true) {
        graph = { cell, seeds: [{ evaluation: evaluation(cell, s.untrained, true) }], model: s.untrained, ...speedOf(cell) }
      } else if (cell.prune === undefined) {
        const teacher = cell.scratch === undefined ? s.teachers[cell.family] : s.scratch[cell.scratch]
        graph = { cell, seeds: [{ evaluation: evaluation(cell, teacher, true) }], model: teacher, ...speedOf(cell) }
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
          graph = { cell, prune, export: exported, seeds: [{ evaluation: evaluation(cell, exported, true) }], model: exported, ...speedOf(cell) }
        } else {
          const teacher = (yield* modelOf(r.teacher ?? "teacher")) as Node<Models.Any>
          // Every seed samples with the same noise (the protocol's): seeds differ by recovery alone.
          const seeds = recoverySeeds(preset, cell).map((seed): SeedNodes => {
            const paper = Recovery.paperTraining(preset.recovery.steps[r.budget], preset.recovery.batchSize, seed)
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
            }, { teacher, student: exported, latents: s.latents }, cell.id)
            return { seed, recovery, evaluation: evaluation(cell, recovery, r.ema ?? true) }
          })
          graph = { cell, prune, export: exported, seeds, model: seeds[0]!.recovery!, ...speedOf(cell) }
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

/** What one run of a cell (one recovery seed) produced: its numbers, the artifacts behind them. */
export interface SeedRun {
  readonly run: Estimates.Run
  readonly artifacts: ReadonlyArray<Stage.Artifact<unknown>>
  readonly evaluation?: Stage.Artifact<Evaluation.EvaluationOutput>
}

/** What a cell produced: a run per seed, its shape's speed, and what the figures draw. */
export interface CellRun {
  readonly cell: Cell
  readonly runs: ReadonlyArray<SeedRun>
  readonly speed?: Estimates.Speed
  readonly decision?: Decision.PruneDecision
}

/** The evaluation's scores under their names (eval Metrics.Scores). */
const scores = (e: Stage.Artifact<Evaluation.EvaluationOutput>): Paper.Metrics =>
  Object.fromEntries(Object.keys(Metrics.Scores.fields).map((name) => [name, e.output[name as keyof Metrics.Results]]))

/** A stored evaluation's bootstrap replicates, under the scores' names. */
const replicatesOf = (e: Stage.Artifact<Evaluation.EvaluationOutput>) =>
  e.output.bootstrap === null ? Effect.succeed(undefined) : Effect.flatMap(e.bytes(Evaluation.files.bootstrap), Bootstrap.decode)

/** A run whose model is evaluated: its metrics with the scores, and their bootstrap replicates. */
const evaluated = (
  evaluation: Stage.Artifact<Evaluation.EvaluationOutput>,
  artifacts: ReadonlyArray<Stage.Artifact<unknown>>,
  seed: number | undefined,
  metrics: Paper.Metrics
) =>
  Effect.map(replicatesOf(evaluation), (replicates): SeedRun => ({
    run: { ...(seed === undefined ? {} : { seed }), metrics: { ...metrics, ...scores(evaluation) }, ...(replicates === undefined ? {} : { replicates }) },
    artifacts: [...artifacts, evaluation],
    evaluation
  }))

/** The it/s of a cell's shape in the run's speed measurement (none when it was not measured). */
const speedOf = (g: CellGraph, runner: Graph.Runner) =>
  Effect.gen(function*() {
    if (g.speed === undefined) return { artifact: undefined, speed: undefined }
    const timed = yield* Effect.exit(runner.run(g.speed.node))
    if (Exit.isFailure(timed)) {
      // A speed cell is nothing but its figure; another cell goes on without it.
      if (g.seeds.length === 0) return yield* Effect.failCause(timed.cause)
      return { artifact: undefined, speed: undefined }
    }
    const shape = timed.value.output.shapes.find((x) => Speed.sameShape(x, g.speed!.shape))
    const speed: Estimates.Speed | undefined = shape === undefined ? undefined : { itPerS: shape.itPerS, parameters: shape.parameters }
    return { artifact: timed.value, speed }
  })

/** Runs a cell's nodes on a runner (shared keys run once) and reads its runs from their outputs. */
export const run = (g: CellGraph, all: ReadonlyMap<string, CellGraph>, runner: Graph.Runner) =>
  Effect.gen(function*() {
    const { cell } = g
    // A cell starting from another's model needs that model (its first seed's): a diverged recovery has none.
    const requireModel = (source: Source | undefined, role: string) =>
      Effect.gen(function*() {
        if (source === undefined || source === "teacher") return
        const upstream = all.get(source.cell)?.seeds[0]?.recovery
        if (upstream === undefined) return
        if ("diverged" in (yield* runner.run(upstream)).output) {
          return yield* new CellFailed({ cell: source.cell, reason: `its recovery diverged, so it is no ${role}` })
        }
      })
    const timed = yield* speedOf(g, runner)
    const speed = timed.speed === undefined ? {} : { speed: timed.speed }
    if (g.seeds.length === 0) {
      return { cell, runs: [{ run: { metrics: {} }, artifacts: timed.artifact === undefined ? [] : [timed.artifact] }], ...speed } satisfies CellRun
    }
    if (g.prune === undefined || g.export === undefined) {
      const model = yield* runner.run(g.model as Node<unknown>)
      const only = yield* evaluated(yield* runner.run(g.seeds[0]!.evaluation), [model], undefined, {})
      return { cell, runs: [only], ...speed } satisfies CellRun
    }
    yield* requireModel(cell.prune?.from, "model to prune")
    const pruned = yield* runner.run(g.prune)
    const exported = yield* runner.run(g.export)
    const decision = yield* PruneStage.readDecision(pruned)
    const pruneMetrics: Paper.Metrics = {
      ...(pruned.output.calibrationLoss === undefined ? {} : { calibrationLoss: pruned.output.calibrationLoss }),
      ...pruned.output.headline
    }
    yield* requireModel(cell.recovery?.teacher, "teacher")
    const runs: Array<SeedRun> = []
    for (const s of g.seeds) {
      if (s.recovery === undefined) {
        runs.push(yield* evaluated(yield* runner.run(s.evaluation), [pruned, exported], undefined, pruneMetrics))
        continue
      }
      const recovered = yield* runner.run(s.recovery)
      const metrics: Paper.Metrics = { ...pruneMetrics, ...recovered.output.headline }
      if ("diverged" in recovered.output) {
        runs.push({ run: { ...(s.seed === undefined ? {} : { seed: s.seed }), metrics: { ...metrics, diverged: true } }, artifacts: [pruned, exported, recovered] })
        continue
      }
      runs.push(yield* evaluated(yield* runner.run(s.evaluation), [pruned, exported, recovered], s.seed, metrics))
    }
    return { cell, decision, runs, ...speed } satisfies CellRun
  })
