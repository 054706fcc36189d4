/**
 * The reproduction suite's runner: the cells of the selected grids become
 * stage runs on the artifact store, and their stored outputs become the
 * report.
 *
 *   shared    autoencoder → latents, feature-net → reference, and one
 *             teacher per family: run once, used by every cell; one
 *             sampling-speed run timing every distinct shape of the cells
 *             (a cell's it/s is its shape's)
 *   a cell    prune (its source: the teacher or another cell's recovered
 *             model) → prune-export → then per recovery seed of its grid:
 *             recovery (its teacher likewise) → evaluation; a teacher cell
 *             evaluates the teacher, the instrument check's cell the
 *             teacher's network untrained; a MAR cell runs mar.ts's stages;
 *             a speed cell (a depth, or a width as Diff-Pruning would cut it:
 *             Width.forRatio) only reads its shape's speed
 *
 * Every stage is keyed by its config and inputs, so cells that share a
 * pruning decision (Table 1's D14 and Table 5's strategies) share its
 * artifact, and rerunning after a kill turns every finished stage into a
 * cache hit. A cell that fails is reported and leaves the others running.
 * The report reads nothing but the stage outputs: the numbers beside the
 * paper's, and their intervals, come from the manifests and the stored
 * bootstrap replicates.
 */
import { Cause, Effect, Exit, FileSystem, Path, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { type Dataset, Stages } from "@tinyfusion/data"
import { Pretrain } from "@tinyfusion/diffusion"
import { Bootstrap, Evaluation, Reference } from "@tinyfusion/eval"
import { type Config, ModelArtifact, ModelFile } from "@tinyfusion/models"
import { type Decision, PruneStage, Width } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import { Compute } from "@tinyfusion/tensor"
import * as Claims from "./claims.ts"
import * as Estimates from "./estimates.ts"
import * as Figures from "./figures.ts"
import { type Cell, grids, instrument, seedsOf, type Source } from "./grids.ts"
import * as Mar from "./mar.ts"
import type * as Paper from "./paper.ts"
import type * as Presets from "./presets.ts"
import type { Preset } from "./presets.ts"
import * as WeightNorm from "./pruners/WeightNorm.ts"
import * as Report from "./report.ts"
import * as Speed from "./speed.ts"

export const tableIds: ReadonlyArray<string> = grids.map((g) => g.table)

export class UnknownTable extends Schema.TaggedError<UnknownTable>()("UnknownTable", {
  table: Schema.String
}) {
  override get message(): string {
    return `no table ${this.table}; the grids are ${tableIds.join(", ")}`
  }
}

/**
 * The cells of the selected tables, then every cell they start from that no
 * selected table lists, then the instrument check's (the teacher and the
 * untrained network: every run says whether its metrics are evidence).
 */
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
    for (const id of [Claims.instrumentCells.teacher, ...instrument.cells.map((c) => c.id)]) {
      const cell = byId.get(id)!
      if (!chosen.includes(cell)) chosen.push(cell)
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

/** What one run of a cell (one recovery seed) produced: its numbers, the artifacts behind them, the model. */
interface SeedRun {
  readonly run: Estimates.Run
  readonly artifacts: ReadonlyArray<Stage.Artifact<unknown>>
  /** The model a later cell can start from (absent for speed cells and diverged runs). */
  readonly model?: ModelSource
  readonly evaluation?: Stage.Artifact<Evaluation.EvaluationOutput>
}

/** What a cell produced: a run per seed (the first is what later cells start from), and what the figures draw. */
interface CellRun {
  readonly cell: Cell
  readonly runs: ReadonlyArray<SeedRun>
  readonly decision?: Decision.PruneDecision
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
  readonly results: Estimates.Results
  readonly failures: ReadonlyArray<CellFailed>
  readonly judged: ReadonlyArray<Claims.Judged>
  readonly instrument: Claims.Instrument
}

const reasonOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** Samples drawn in the report: the teachers, the paper's headline models and the untrained network. */
const shownSamples = ["t1/teacher", "t1/tinydit-d14-kd", "t1/tinydit-d7-kd", "t2/sit-teacher", "t2/tinysit-d14", "i/untrained"]

/**
 * The architecture a cell's model has: the teacher's at the cell's depth, or
 * at Diff-Pruning's uniform widths (Width.forRatio, what its export keeps). A
 * MAR is not timed.
 */
const shapeOf = (teachers: Readonly<Record<ModelArtifact.Family, Config.Config>>, cell: Cell): Speed.Shape | undefined => {
  if (cell.family === "mar") return undefined
  const teacher = teachers[cell.family]
  const ratio = cell.speedWidth ?? cell.prune?.ratio
  if (ratio !== undefined) return { family: cell.family, model: Width.forRatio(teacher, ratio).config }
  return { family: cell.family, model: { ...teacher, depth: cell.speedDepth ?? cell.prune?.keep ?? teacher.depth } }
}

/** The feature network as the instrument check sees it: trained here with its test accuracy, or the published FID Inception. */
const featureNetOf = (out: typeof Stages.FeatureNetOutput.Type): Claims.FeatureNet | Claims.PublishedFeatureNet =>
  "kind" in out.model
    ? { published: "the FID Inception-V3 (pytorch-fid's weights)" }
    : { accuracy: out.accuracy, testImages: out.testImages, classes: out.model.classes }

/** The recovery seeds a cell runs with: its grid's count, cut to the preset's most. */
const recoverySeeds = (preset: Preset, cell: Cell): ReadonlyArray<number> =>
  Array.from({ length: Math.min(seedsOf(cell.id), preset.maxSeeds) }, (_, i) => preset.recovery.seed + i)

/** A stored evaluation's bootstrap replicates, by metric. */
const replicatesOf = (e: Stage.Artifact<Evaluation.EvaluationOutput>) =>
  e.output.bootstrap === null
    ? Effect.succeed(undefined)
    : Effect.map(Effect.flatMap(e.bytes(Evaluation.files.bootstrap), Bootstrap.decode), (r) => ({
      is: r.inceptionScore,
      fid: r.fid,
      sfid: r.sfid,
      precision: r.precision,
      recall: r.recall
    }))

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
  // The feature network and the reference: trained here, or the paper preset's FID Inception and ADM batch.
  const featureNetRun: Effect.Effect<Stage.Artifact<typeof Stages.FeatureNetOutput.Type>, unknown, Needs> = imported === undefined
    ? Stage.run(Stages.FeatureNetStage, preset.featureNet, {})
    : Stage.run(Stages.importedFeatureNet(imported.featureNet.path), imported.featureNet.config, {})
  const featureNet = yield* Effect.cached(featureNetRun)
  const referenceOf = (f: Stage.Artifact<typeof Stages.FeatureNetOutput.Type>): Effect.Effect<Stage.Artifact<Reference.ReferenceOutput>, unknown, Needs> =>
    imported === undefined
      ? Stage.run(Reference.ReferenceStage, preset.reference, { featureNet: f })
      : Stage.run(Reference.fromBatch(imported.reference.path), imported.reference.config, { featureNet: f })
  const reference = yield* Effect.cached(Effect.flatMap(featureNet, referenceOf))
  const teacher = (family: ModelArtifact.Family): Effect.Effect<ModelSource, unknown, Needs> => {
    const file = imported?.teachers[family]
    return file === undefined
      ? Effect.flatMap(latents, (l) => Stage.run(Pretrain.PretrainStage, preset.teacher[family], { latents: l }))
      : Effect.map(ModelFile.store(file, { family }), (stored) => stored.artifact)
  }
  const teachers = { dit: yield* Effect.cached(teacher("dit")), sit: yield* Effect.cached(teacher("sit")) }
  // A teacher's architecture: the preset's, or an imported checkpoint's own.
  const architecture = (family: ModelArtifact.Family): Effect.Effect<Config.Config, unknown, Needs> =>
    imported?.teachers[family] === undefined ? Effect.succeed(preset.teacher[family].model) : Effect.map(teachers[family], (t) => t.output.config)
  // The DiT teacher's network as initialised: pre-training of no steps.
  const untrained = yield* Effect.cached(Effect.gen(function*() {
    const model = yield* architecture("dit")
    const training = { ...preset.teacher.dit.training, steps: 0 }
    return yield* Stage.run(Pretrain.PretrainStage, { ...preset.teacher.dit, model, training }, { latents: yield* latents })
  }))

  // Every distinct shape of the cells, timed together in interleaved rounds.
  const timed = yield* Effect.exit(Effect.gen(function*() {
    const architectures = { dit: yield* architecture("dit"), sit: yield* architecture("sit") }
    const shapes = Speed.roundOrder(cells.flatMap((c) => shapeOf(architectures, c) ?? []))
    const artifact = yield* Stage.run(Speed.SpeedStage, {
      shapes,
      sampling: preset.speed.sampling,
      batch: preset.speed.batch,
      warmup: preset.speed.warmup,
      rounds: preset.speed.rounds
    }, {})
    return { artifact, architectures }
  }))
  const speed = Exit.map(timed, (t) => t.artifact)
  const speedOf = (cell: Cell): Estimates.Speed | undefined => {
    if (Exit.isFailure(timed)) return undefined
    const mine = shapeOf(timed.value.architectures, cell)
    const shape = mine === undefined ? undefined : timed.value.artifact.output.shapes.find((s) => Speed.sameShape(s, mine))
    return shape === undefined ? undefined : { itPerS: shape.itPerS, parameters: shape.parameters }
  }

  const marCell = yield* Mar.cells(preset, { latents, autoencoder: ae, reference })

  const runs = new Map<string, Effect.Effect<CellRun, CellFailed, Needs>>()
  const resultOf = (id: string) => runs.get(id)!

  const modelOf = (source: Source, family: ModelArtifact.Family, role: string) =>
    source === "teacher"
      ? teachers[family]
      : Effect.flatMap(resultOf(source.cell), (r) =>
        r.runs[0]?.model === undefined
          ? Effect.fail(new CellFailed({ cell: source.cell, reason: `its recovery diverged, so it is no ${role}` }))
          : Effect.succeed(r.runs[0].model))

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
    recall: e.output.recall
  })

  /** A run whose model is evaluated: its scores and their bootstrap replicates. */
  const evaluated = (
    model: ModelSource,
    evaluation: Stage.Artifact<Evaluation.EvaluationOutput>,
    artifacts: ReadonlyArray<Stage.Artifact<unknown>>,
    seed: number | undefined,
    metrics: Paper.Metrics = {}
  ) =>
    Effect.map(replicatesOf(evaluation), (replicates): SeedRun => ({
      run: { ...(seed === undefined ? {} : { seed }), metrics: { ...metrics, ...scores(evaluation) }, ...(replicates === undefined ? {} : { replicates }) },
      artifacts: [...artifacts, evaluation],
      model,
      evaluation
    }))

  const runCell = (cell: Cell): Effect.Effect<CellRun, unknown, Needs> =>
    Effect.gen(function*() {
      if (cell.family === "mar") {
        const r = yield* marCell(cell)
        const replicates = r.evaluation === undefined ? undefined : yield* replicatesOf(r.evaluation)
        const run: SeedRun = { run: { metrics: r.metrics, ...(replicates === undefined ? {} : { replicates }) }, artifacts: r.artifacts }
        return { cell, runs: [r.evaluation === undefined ? run : { ...run, evaluation: r.evaluation }], ...(r.decision === undefined ? {} : { decision: r.decision }) }
      }
      if (cell.speedDepth !== undefined || cell.speedWidth !== undefined) {
        if (Exit.isFailure(speed)) return yield* Effect.failCause(speed.cause)
        return { cell, runs: [{ run: { metrics: {} }, artifacts: [speed.value] }] }
      }
      if (cell.untrained === true) {
        const model = yield* untrained
        return { cell, runs: [yield* evaluated(model, yield* evaluate(model, cell, true), [model], undefined)] }
      }
      if (cell.prune === undefined) {
        const teacher = yield* teachers[cell.family]
        return { cell, runs: [yield* evaluated(teacher, yield* evaluate(teacher, cell, true), [teacher], undefined)] }
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
      if (cell.recovery === undefined) {
        return { cell, decision, runs: [yield* evaluated(exported, yield* evaluate(exported, cell, true), [pruned, exported], undefined, pruneMetrics)] }
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
      const recoverWith = (seed: number) =>
        Effect.gen(function*() {
          const paperTraining = Recovery.paperTraining(preset.recovery.steps[r.budget], preset.recovery.batchSize, seed)
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
          const metrics: Paper.Metrics = {
            ...pruneMetrics,
            ...(recovered.output.initialDistillLoss === null ? {} : { initDistillLoss: recovered.output.initialDistillLoss })
          }
          if (recovered.output.diverged !== undefined) {
            return { run: { seed, metrics: { ...metrics, diverged: true } }, artifacts: [pruned, exported, recovered] } satisfies SeedRun
          }
          // Every seed samples with the same noise (the protocol's): seeds differ by recovery alone.
          return yield* evaluated(recovered, yield* evaluate(recovered, cell, r.ema ?? true), [pruned, exported, recovered], seed, metrics)
        })
      const runs: Array<SeedRun> = []
      for (const seed of recoverySeeds(preset, cell)) runs.push(yield* recoverWith(seed))
      return { cell, decision, runs }
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

  if (Exit.isFailure(speed)) failures.push(new CellFailed({ cell: "sampling-speed", reason: reasonOf(speed.cause) }))

  const results: Estimates.Results = new Map(done.map((r) => {
    const s = speedOf(r.cell)
    return [r.cell.id, { runs: r.runs.map((x) => x.run), ...(s === undefined ? {} : { speed: s }) }] as const
  }))
  const artifacts = new Map(done.flatMap((r) => r.runs.flatMap((x) => x.artifacts.map((a) => [a.key, a] as const))))
  if (Exit.isSuccess(speed)) artifacts.set(speed.value.key, speed.value)
  const featureNetOutput = yield* Effect.exit(featureNet)
  const net = Exit.isSuccess(featureNetOutput) ? featureNetOf(featureNetOutput.value.output) : undefined
  return yield* writeReport(options, { done, failures, results, artifacts, featureNet: net, backend: `${compute.backend} (${compute.device})` })
}, Effect.provide(addedPruners))

const writeReport = Effect.fn("Suite.writeReport")(function*(
  options: Options,
  run: {
    readonly done: ReadonlyArray<CellRun>
    readonly failures: ReadonlyArray<CellFailed>
    readonly results: Estimates.Results
    readonly artifacts: ReadonlyMap<string, Stage.Artifact<unknown>>
    readonly featureNet: Claims.FeatureNet | Claims.PublishedFeatureNet | undefined
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

  const speedups = run.done.flatMap((r): Array<Figures.SpeedPoint> => {
    if (r.cell.speedDepth === undefined && r.cell.speedWidth === undefined) return []
    try {
      const parameters = run.results.get(r.cell.id)?.speed?.parameters
      if (parameters === undefined) return []
      const speedup = Estimates.speedup(run.results, r.cell.id, "f4/depth-28")
      return [{ pruning: r.cell.speedWidth === undefined ? "depth" : "width", parameters, speedup }]
    } catch (e) {
      if (e instanceof Estimates.Missing) return []
      throw e
    }
  })
  if (speedups.length > 0) yield* addFigure(Figures.speedup(speedups))
  const random = run.done.find((r) => r.decision?.samples !== undefined)
  if (random !== undefined) {
    const marks = run.done.flatMap((r) => {
      const loss = r.runs[0]?.run.metrics.calibrationLoss
      return r.cell.id.startsWith("t3/") && loss !== undefined ? [{ label: r.cell.id.slice(3), loss }] : []
    })
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
    const evaluation = run.done.find((r) => r.cell.id === id)?.runs[0]?.evaluation
    if (evaluation === undefined) continue
    const file = `samples/${id.replace("/", "-")}.png`
    yield* write(file, yield* evaluation.bytes(Evaluation.files.grid))
    samples.push({ cell: id, file })
  }

  const computeSeconds = [...run.artifacts.values()].reduce((s, a) => s + a.manifest.timings.seconds, 0)
  const preset = options.preset
  const manySeeds = grids.flatMap((g) => {
    const seeds = Math.min(g.seeds ?? 1, preset.maxSeeds)
    return seeds > 1 && g.cells.some((c) => run.results.has(c.id)) ? [{ table: g.table, seeds }] : []
  })
  const blocks = Report.document({
    preset: preset.name,
    evidence: preset.evidence,
    // The project's committed reproduction (experiments/results/), as a link from the report.
    committedResults: path.relative(options.out, path.join(import.meta.dirname, "..", "results")) + "/",
    dataset: options.dataset,
    backend: run.backend,
    results: run.results,
    ...(run.featureNet === undefined ? {} : { featureNet: run.featureNet }),
    method: { ...preset.evaluation.full.bootstrap, seeds: manySeeds },
    figures,
    samples,
    computeSeconds,
    failures: run.failures.map((f) => ({ cell: f.cell, reason: f.reason }))
  })
  const markdown = Report.markdown(blocks)
  const html = Report.html(blocks, (file) => files.get(file)!)
  const keys = [...run.artifacts.keys()].sort()
  const instrument = Claims.instrument(run.results, run.featureNet)
  const judged = Claims.judgeAll(run.results, instrument)
  const estimated = (cell: string) =>
    Object.fromEntries(Estimates.summary(run.results, cell).map(([metric, e]) => [metric, { value: e.value, lo: e.lo, hi: e.hi }]))
  const resultsJson = {
    preset: preset.name,
    dataset: options.dataset,
    cells: Object.fromEntries(run.done.map((r) => [r.cell.id, {
      estimates: estimated(r.cell.id),
      runs: r.runs.map((x) => ({ ...(x.run.seed === undefined ? {} : { seed: x.run.seed }), metrics: x.run.metrics, artifacts: x.artifacts.map((a) => a.key) })),
      ...(run.results.get(r.cell.id)?.speed === undefined ? {} : { itPerSRounds: run.results.get(r.cell.id)!.speed!.itPerS })
    }])),
    instrument,
    claims: judged.map(({ claim, judgement }) => ({ id: claim.id, ...judgement })),
    failures: run.failures.map((f) => ({ cell: f.cell, reason: f.reason }))
  }
  yield* write("results.json", text(JSON.stringify(resultsJson, null, 2) + "\n"))
  yield* write("report.md", text(markdown))
  yield* write("report.html", text(html))
  yield* store.keep(`repro-${preset.name}`, keys)
  yield* Effect.logInfo(`report: ${path.join(options.out, "report.md")} and report.html (${run.done.length} cells, ${run.failures.length} failed)`)
  return { results: run.results, failures: run.failures, judged, instrument } satisfies Summary
})
