/**
 * The reproduction suite's runner: the cells of the selected grids become
 * stage runs on the artifact store, and their stored outputs become the
 * report.
 *
 *   shared    autoencoder → latents, feature-net → reference, and one
 *             teacher per family: run once, used by every cell
 *   a cell    prune (its source: the teacher or another cell's recovered
 *             model) → prune-export → recovery (its teacher likewise) →
 *             evaluation; a teacher cell evaluates the teacher; a speed cell
 *             runs sampling-speed on the teacher's shape at a depth, or
 *             width-pruned as Diff-Pruning would (Width.forRatio)
 *
 * Every stage is keyed by its config and inputs, so cells that share a
 * pruning decision (Table 1's D14 and Table 5's strategies) share its
 * artifact, and rerunning after a kill turns every finished stage into a
 * cache hit. A cell that fails is reported and leaves the others running.
 * The report reads nothing but the stage outputs: the numbers beside the
 * paper's are the ones in the manifests.
 */
import { Cause, Effect, Exit, FileSystem, Path, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { type Dataset, Stages } from "@tinyfusion/data"
import { Pretrain } from "@tinyfusion/diffusion"
import { Evaluation, Reference } from "@tinyfusion/eval"
import { ModelArtifact, ModelFile } from "@tinyfusion/models"
import { type Decision, PruneStage, Width } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import { Compute } from "@tinyfusion/tensor"
import type { Results } from "./claims.ts"
import * as Figures from "./figures.ts"
import { type Cell, grids, type Source } from "./grids.ts"
import * as Mar from "./mar.ts"
import type * as Paper from "./paper.ts"
import type * as Presets from "./presets.ts"
import type { Preset } from "./presets.ts"
import * as WeightNorm from "./pruners/WeightNorm.ts"
import * as Report from "./report.ts"
import { SpeedStage } from "./speed.ts"

export const tableIds: ReadonlyArray<string> = grids.map((g) => g.table)

export class UnknownTable extends Schema.TaggedError<UnknownTable>()("UnknownTable", {
  table: Schema.String
}) {
  override get message(): string {
    return `no table ${this.table}; the grids are ${tableIds.join(", ")}`
  }
}

/** The cells of the selected tables, then every cell they start from that no selected table lists. */
export const selectCells = (tables: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<Cell>, UnknownTable> =>
  Effect.gen(function*() {
    const byId = new Map(grids.flatMap((g) => g.cells.map((c) => [c.id, c] as const)))
    const chosen: Array<Cell> = []
    for (const table of tables) {
      const grid = grids.find((g) => g.table === table)
      if (grid === undefined) return yield* new UnknownTable({ table })
      for (const cell of grid.cells) if (!chosen.includes(cell)) chosen.push(cell)
    }
    const sources = (c: Cell): Array<Source> => [c.prune?.from, c.recovery?.teacher].filter((s): s is Source => s !== undefined)
    for (let i = 0; i < chosen.length; i++) {
      for (const source of sources(chosen[i]!)) {
        if (source === "teacher") continue
        const needed = byId.get(source.cell)!
        if (!chosen.includes(needed)) chosen.push(needed)
      }
    }
    return chosen
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

type ModelSource = Stage.Artifact<ModelArtifact.Output>

/** The services a cell's stages use. */
type Needs = ArtifactStore | Compute | Dataset | FileSystem.FileSystem | Path.Path

/** What a cell produced: its metrics, the artifacts behind them, and what the figures draw. */
interface CellRun {
  readonly cell: Cell
  readonly metrics: Paper.Metrics
  readonly artifacts: ReadonlyArray<Stage.Artifact<unknown>>
  /** The model a later cell can start from (absent for speed cells and diverged runs). */
  readonly model?: ModelSource
  readonly decision?: Decision.PruneDecision
  readonly evaluation?: Stage.Artifact<Evaluation.EvaluationOutput>
}

export interface Options {
  readonly preset: Preset
  readonly tables: ReadonlyArray<string>
  /** Where report.md, report.html, results.json and the figures go. */
  readonly out: string
  /** What the data is, for the report ("Fashion-MNIST", "the synthetic fixture"). */
  readonly dataset: string
  readonly concurrency: number
  /**
   * The paper preset's published files, checked (Presets.checkPaperFiles): SD-VAE, FID Inception and ADM's
   * reference batch in place of the trained autoencoder, feature network and dataset reference; the
   * teachers' checkpoints in place of pre-training.
   */
  readonly imported?: Presets.Imported
}

export interface Summary {
  readonly results: Results
  readonly failures: ReadonlyArray<CellFailed>
}

const reasonOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** Samples drawn in the report: the teachers and the paper's headline models. */
const shownSamples = ["t1/teacher", "t1/tinydit-d14-kd", "t1/tinydit-d7-kd", "t2/sit-teacher", "t2/tinysit-d14"]

/** Pruners added outside the packages, which the extras grid uses (stack more with Layer.provide). */
export const addedPruners = WeightNorm.layer

/** The selected grids on the store: stages run or reused, then the report written to `options.out`. */
export const run = Effect.fn("Suite.run")(function*(options: Options) {
  const { preset } = options
  const cells = yield* selectCells(options.tables)
  const compute = yield* Compute
  yield* Effect.logInfo(`preset ${preset.name}: ${cells.length} cells of tables ${options.tables.join(", ")} on ${options.dataset}, ${compute.backend}`)

  const imported = options.imported
  const autoencoder: Effect.Effect<Stage.Artifact<typeof Stages.AutoencoderOutput.Type>, unknown, Needs> = imported === undefined
    ? Stage.run(Stages.AutoencoderStage, preset.autoencoder, {})
    : Stage.run(Stages.importedAutoencoder(imported.autoencoder.path), imported.autoencoder.config, {})
  const ae = yield* Effect.cached(autoencoder)
  const latents = yield* Effect.cached(Effect.flatMap(ae, (autoencoder) => Stage.run(Stages.LatentsStage, preset.latents, { autoencoder })))
  const reference = yield* Effect.cached(Effect.gen(function*() {
    if (imported !== undefined) {
      const featureNet = yield* Stage.run(Stages.importedFeatureNet(imported.featureNet.path), imported.featureNet.config, {})
      return yield* Stage.run(Reference.fromBatch(imported.reference.path), imported.reference.config, { featureNet })
    }
    const featureNet = yield* Stage.run(Stages.FeatureNetStage, preset.featureNet, {})
    return yield* Stage.run(Reference.ReferenceStage, preset.reference, { featureNet })
  }))
  const teacher = (family: ModelArtifact.Family): Effect.Effect<ModelSource, unknown, Needs> => {
    const file = imported?.teachers[family]
    return file === undefined
      ? Effect.flatMap(latents, (l) => Stage.run(Pretrain.PretrainStage, preset.teacher[family], { latents: l }))
      : Effect.map(ModelFile.store(file, { family }), (stored) => stored.artifact)
  }
  const teachers = { dit: yield* Effect.cached(teacher("dit")), sit: yield* Effect.cached(teacher("sit")) }

  const marCell = yield* Mar.cells(preset, { latents, autoencoder: ae, reference })

  const runs = new Map<string, Effect.Effect<CellRun, CellFailed, Needs>>()
  const resultOf = (id: string) => runs.get(id)!

  const modelOf = (source: Source, family: ModelArtifact.Family, role: string) =>
    source === "teacher"
      ? teachers[family]
      : Effect.flatMap(resultOf(source.cell), (r) =>
        r.model === undefined
          ? Effect.fail(new CellFailed({ cell: source.cell, reason: `its recovery diverged, so it is no ${role}` }))
          : Effect.succeed(r.model))

  const evaluate = (model: ModelSource, cell: Cell, ema: boolean) =>
    Effect.gen(function*() {
      const stage = Evaluation.make(ModelArtifact.producer(model.manifest))
      const protocol = preset.evaluation[cell.protocol]
      // SiT samples with its SDE (the paper's SiT protocol) on as many grid points as DiT has steps.
      const sampling = cell.family === "sit" ? { ...protocol.sampling, sampler: "sde" as const } : protocol.sampling
      const config = { ...protocol, sampling, weights: ema ? ("ema" as const) : ("raw" as const) }
      return yield* Stage.run(stage, config, { model, autoencoder: yield* ae, reference: yield* reference })
    })

  const scores = (e: Stage.Artifact<Evaluation.EvaluationOutput>): Paper.Metrics => ({
    is: e.output.inceptionScore,
    fid: e.output.fid,
    sfid: e.output.sfid,
    precision: e.output.precision,
    recall: e.output.recall,
    ...(typeof e.manifest.metrics["sampling_it_per_s"] === "number" ? { itPerS: e.manifest.metrics["sampling_it_per_s"] } : {})
  })

  const runCell = (cell: Cell): Effect.Effect<CellRun, unknown, Needs> =>
    Effect.gen(function*() {
      if (cell.family === "mar") return { cell, ...(yield* marCell(cell)) }
      if (cell.speedDepth !== undefined || cell.speedWidth !== undefined) {
        const shape = preset.teacher[cell.family].model
        const speed = yield* Stage.run(SpeedStage, {
          family: cell.family,
          model: cell.speedWidth === undefined ? { ...shape, depth: cell.speedDepth! } : Width.forRatio(shape, cell.speedWidth).config,
          sampling: preset.speed.sampling,
          batch: preset.speed.batch,
          repetitions: preset.speed.repetitions
        }, {})
        return { cell, metrics: { itPerS: speed.output.iterationsPerSecond, parameters: speed.output.parameters }, artifacts: [speed] }
      }
      if (cell.prune === undefined) {
        const teacher = yield* teachers[cell.family]
        const evaluation = yield* evaluate(teacher, cell, true)
        return { cell, metrics: scores(evaluation), artifacts: [teacher, evaluation], model: teacher, evaluation }
      }
      const source = yield* modelOf(cell.prune.from, cell.family, "model to prune")
      const data = yield* latents
      const pruning = PruneStage.make({
        teacher: ModelArtifact.producer(source.manifest),
        data: Stages.LatentsStage,
        readTeacher: PruneStage.readModel,
        readData: Stages.readLatents
      })
      const pruned = yield* Stage.run(pruning.prune, yield* Stage.decodeConfig(pruning.prune, PruneStage.configFor(cell.prune.method, {
        keep: cell.prune.keep,
        scheme: cell.prune.scheme,
        seed: preset.prune.seed,
        calibration: preset.prune.calibration,
        iterations: preset.prune.iterations,
        learnable: { ...preset.prune.learnable, update: cell.prune.update ?? "lora" },
        samples: preset.prune.randomSamples,
        diffPruning: { ...preset.prune.diffPruning, ...(cell.prune.ratio === undefined ? {} : { ratio: cell.prune.ratio }) }
      })), { teacher: source, data })
      const exported = yield* Stage.run(pruning.export, {}, { decision: pruned, teacher: source })
      const decision = yield* PruneStage.readDecision(pruned)
      const pruneMetrics: Paper.Metrics = {
        ...(pruned.output.calibrationLoss === undefined ? {} : { calibrationLoss: pruned.output.calibrationLoss }),
        ...(pruned.output.confidence === undefined ? {} : { confidence: pruned.output.confidence })
      }
      const common = { cell, decision }
      if (cell.recovery === undefined) {
        const evaluation = yield* evaluate(exported, cell, true)
        return { ...common, metrics: { ...pruneMetrics, ...scores(evaluation) }, artifacts: [pruned, exported, evaluation], model: exported, evaluation }
      }
      const r = cell.recovery
      const teacher = yield* modelOf(r.teacher ?? "teacher", cell.family, "teacher")
      const recovery = RecoveryStage.make({ teacher: ModelArtifact.producer(teacher.manifest), student: ModelArtifact.producer(exported.manifest) })
      // The decision aligns student layers with the blocks of the model it pruned; a student distilled from
      // another teacher (Table 7) takes the reference's fixed mapping.
      const alignment = teacher.key !== source.key
        ? ("fixed" as const)
        : decision.groups === undefined
        ? { kept: decision.kept }
        : { kept: decision.kept, groups: decision.groups }
      const paperTraining = Recovery.paperTraining(preset.recovery.steps[r.budget], preset.recovery.batchSize, preset.recovery.seed)
      const lr = r.lr ?? paperTraining.lr
      const recovered = yield* Stage.run(recovery, {
        loss: Recovery.paper(cell.family, r.strategy, alignment, r.k),
        training: {
          ...paperTraining,
          // A learning rate of Table 8 keeps the paper's ratio of floor to rate.
          lr,
          lrFloor: (paperTraining.lrFloor! * lr) / paperTraining.lr,
          emaDecay: preset.recovery.emaDecay,
          checkpointEvery: preset.recovery.checkpointEvery,
          curveEvery: preset.recovery.curveEvery
        }
      }, { teacher, student: exported, latents: data })
      const recoveryMetrics: Paper.Metrics = {
        ...pruneMetrics,
        ...(recovered.output.initialDistillLoss === null ? {} : { initDistillLoss: recovered.output.initialDistillLoss })
      }
      if (recovered.output.diverged !== undefined) {
        return { ...common, metrics: { ...recoveryMetrics, diverged: true }, artifacts: [pruned, exported, recovered] }
      }
      const evaluation = yield* evaluate(recovered, cell, r.ema ?? true)
      return {
        ...common,
        metrics: { ...recoveryMetrics, ...scores(evaluation) },
        artifacts: [pruned, exported, recovered, evaluation],
        model: recovered,
        evaluation
      }
    })

  for (const cell of cells) {
    const once = runCell(cell).pipe(
      Effect.annotateLogs({ cell: cell.id }),
      Effect.catchCause((cause) =>
        Effect.fail(
          Cause.hasInterruptsOnly(cause)
            ? new CellFailed({ cell: cell.id, reason: "interrupted" })
            : new CellFailed({ cell: cell.id, reason: reasonOf(cause) })
        )
      )
    )
    runs.set(cell.id, yield* Effect.cached(once))
  }

  const exits = yield* Effect.forEach(cells, (cell) => Effect.exit(resultOf(cell.id)), { concurrency: options.concurrency })
  const done: Array<CellRun> = []
  const failures: Array<CellFailed> = []
  exits.forEach((exit, i) => {
    if (Exit.isSuccess(exit)) done.push(exit.value)
    else {
      const cell = cells[i]!.id
      const error = Cause.squash(exit.cause)
      failures.push(error instanceof CellFailed ? error : new CellFailed({ cell, reason: reasonOf(exit.cause) }))
    }
  })
  for (const f of failures) yield* Effect.logWarning(f.message)

  const results: Results = new Map(done.map((r) => [r.cell.id, r.metrics]))
  const artifacts = new Map(done.flatMap((r) => r.artifacts.map((a) => [a.key, a] as const)))
  return yield* writeReport(options, { done, failures, results, artifacts, backend: `${compute.backend} (${compute.device})` })
}, Effect.provide(addedPruners))

const writeReport = Effect.fn("Suite.writeReport")(function*(
  options: Options,
  run: {
    readonly done: ReadonlyArray<CellRun>
    readonly failures: ReadonlyArray<CellFailed>
    readonly results: Results
    readonly artifacts: ReadonlyMap<string, Stage.Artifact<unknown>>
    readonly backend: string
  }
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const store = yield* ArtifactStore
  yield* fs.makeDirectory(path.join(options.out, "figures"), { recursive: true })
  yield* fs.makeDirectory(path.join(options.out, "samples"), { recursive: true })
  const files = new Map<string, Uint8Array>()
  const write = (name: string, bytes: Uint8Array) =>
    Effect.gen(function*() {
      // Temp file and rename: a kill leaves the old file or the new one.
      const target = path.join(options.out, name)
      yield* fs.writeFile(`${target}.tmp-${process.pid}`, bytes)
      yield* fs.rename(`${target}.tmp-${process.pid}`, target)
      files.set(name, bytes)
    })
  const text = (s: string) => new TextEncoder().encode(s)

  const figures: Array<{ title: string; file: string }> = []
  const addFigure = (made: Promise<{ readonly name: string; readonly title: string; readonly svg: string; readonly png: Uint8Array }>) =>
    Effect.gen(function*() {
      const figure = yield* Effect.promise(() => made)
      yield* write(`figures/${figure.name}.png`, figure.png)
      yield* write(`figures/${figure.name}.svg`, text(figure.svg))
      figures.push({ title: figure.title, file: `figures/${figure.name}.png` })
    })

  const speed = run.done.flatMap((r): Array<Figures.SpeedPoint> =>
    (r.cell.speedDepth !== undefined || r.cell.speedWidth !== undefined) && r.metrics.itPerS !== undefined && r.metrics.parameters !== undefined
      ? [{ pruning: r.cell.speedWidth === undefined ? "depth" : "width", parameters: r.metrics.parameters, itPerS: r.metrics.itPerS }]
      : []
  )
  if (speed.length > 0) yield* addFigure(Figures.speedup(speed))
  const random = run.done.find((r) => r.decision?.samples !== undefined)
  if (random !== undefined) {
    const marks = run.done.flatMap((r) =>
      r.cell.id.startsWith("t3/") && r.metrics.calibrationLoss !== undefined ? [{ label: r.cell.id.slice(3), loss: r.metrics.calibrationLoss }] : []
    )
    yield* addFigure(Figures.calibrationHistogram(random.decision!.samples!.losses, marks))
  }
  const learned = new Map<string, Decision.PruneDecision>()
  for (const r of run.done) {
    const d = r.decision
    if (d?.history !== undefined && d.scheme !== undefined && d.teacherDepth === 28 && !learned.has(d.scheme)) learned.set(d.scheme, d)
  }
  for (const [scheme, d] of [...learned].sort(([a], [b]) => a.localeCompare(b))) {
    yield* addFigure(Figures.decisions(d.history!.map((s) => ({ iteration: s.step, kept: s.kept, confidence: s.probability })), scheme))
  }

  const samples: Array<{ cell: string; file: string }> = []
  for (const id of shownSamples) {
    const evaluation = run.done.find((r) => r.cell.id === id)?.evaluation
    if (evaluation === undefined) continue
    const file = `samples/${id.replace("/", "-")}.png`
    yield* write(file, yield* evaluation.bytes(Evaluation.files.grid))
    samples.push({ cell: id, file })
  }

  const computeSeconds = [...run.artifacts.values()].reduce((s, a) => s + a.manifest.timings.seconds, 0)
  const blocks = Report.document({
    preset: options.preset.name,
    dataset: options.dataset,
    backend: run.backend,
    results: run.results,
    figures,
    samples,
    computeSeconds,
    failures: run.failures.map((f) => ({ cell: f.cell, reason: f.reason }))
  })
  const markdown = Report.markdown(blocks)
  const html = Report.html(blocks, (file) => files.get(file)!)
  const keys = [...run.artifacts.keys()].sort()
  const resultsJson = {
    preset: options.preset.name,
    dataset: options.dataset,
    cells: Object.fromEntries(run.done.map((r) => [r.cell.id, { metrics: r.metrics, artifacts: r.artifacts.map((a) => a.key) }])),
    failures: run.failures.map((f) => ({ cell: f.cell, reason: f.reason }))
  }
  yield* write("results.json", text(JSON.stringify(resultsJson, null, 2) + "\n"))
  yield* write("report.md", text(markdown))
  yield* write("report.html", text(html))
  yield* store.keep(`repro-${options.preset.name}`, keys)
  yield* Effect.logInfo(`report: ${path.join(options.out, "report.md")} and report.html (${run.done.length} cells, ${run.failures.length} failed)`)
  return { results: run.results, failures: run.failures } satisfies Summary
})
