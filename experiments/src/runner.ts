/**
 * The reproduction suite's runner: the cells of the selected grids as graphs
 * of stage nodes (cells.ts), run on the artifact store, and their stored
 * outputs as the report.
 *
 * Every node is keyed by its stage's code, config and inputs, so cells that
 * share a node share its artifact, `plan` says what is stored before
 * anything runs, and rerunning after a kill turns every finished stage into
 * a cache hit. The run's one sampling-speed node runs first (every shape
 * timed together, before the cells load the machine); then the cells, each
 * with a run per recovery seed of its grid. A cell that fails is reported
 * and leaves the others running. The report reads nothing but the stage
 * outputs: the numbers beside the paper's, and their intervals, come from
 * the manifests and the stored bootstrap replicates.
 */
import { Cause, Effect, Exit, FileSystem, identity, Path, Schema } from "effect"
import { ArtifactStore, Graph, Progress, type Stage } from "@tinyfusion/core"
import type { Stages } from "@tinyfusion/data"
import { Evaluation } from "@tinyfusion/eval"
import { type Decision, Learnable, RandomSearch, Scheme } from "@tinyfusion/pruning"
import { Compute } from "@tinyfusion/tensor"
import * as Cells from "./cells.ts"
import * as Claims from "./claims.ts"
import * as Estimates from "./estimates.ts"
import * as Executor from "./executors/Executor.ts"
import * as View from "./executors/View.ts"
import * as Figures from "./figures.ts"
import { type Cell, grids, instrument, type Source } from "./grids.ts"
import * as Methods from "./methods.ts"
import type * as Presets from "./presets.ts"
import type { Preset } from "./presets.ts"
import * as Report from "./report.ts"

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
 * selected table lists, then the instrument check's (the teacher, the
 * untrained network and the unrecovered ShortGPT D14: every run says whether
 * its metrics are evidence).
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

export const CellFailed = Cells.CellFailed

export interface Options {
  readonly preset: Preset
  readonly tables: ReadonlyArray<string>
  /**
   * The paper preset's published files, checked (Presets.checkPaperFiles): SD-VAE, FID Inception and ADM's
   * reference batch in place of the trained autoencoder, feature network and dataset reference; the
   * teachers' checkpoints in place of pre-training.
   */
  readonly imported?: Presets.Imported | undefined
}

export interface RunOptions extends Options {
  /** Where report.md, report.html, results.json and the figures go. */
  readonly out: string
  /** What the data is, for the report ("Fashion-MNIST", "the synthetic fixture"). */
  readonly dataset: string
  /** Cells in flight at once: with workers, every cell, so that each node is submitted as soon as its inputs are committed. */
  readonly concurrency: number | "unbounded"
}

export interface Summary {
  readonly results: Estimates.Results
  readonly failures: ReadonlyArray<Cells.CellFailed>
  readonly judged: ReadonlyArray<Claims.Judged>
  readonly instrument: Claims.Instrument
}

/** The selected cells as graphs, and the shared nodes: what runs, plans and jobs read. */
export const graph = Effect.fn("Suite.graph")(function*(options: Options) {
  const cells = yield* selectCells(options.tables)
  const shared = yield* Cells.shared(options.preset, options.imported)
  return { cells, shared, graphs: yield* Cells.graphs(cells, options.preset, shared) }
})

/** Every node of the selected cells, inputs first, with its key and whether the store holds it. */
export const plan = Effect.fn("Suite.plan")(function*(options: Options) {
  const { cells, graphs } = yield* graph(options)
  const runner = yield* Graph.runner
  return yield* runner.plan(cells.flatMap((c) => Cells.nodes(graphs.get(c.id)!)))
})

const reasonOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** Samples drawn in the report: the teachers, the paper's headline models and the instrument check's bad models. */
const shownSamples = ["t1/teacher", "t1/tinydit-d14-kd", "t1/tinydit-d7-kd", "t2/sit-teacher", "t2/tinysit-d14", "i/untrained", "i/unrecovered"]

/** The feature network as the instrument check sees it: trained here with its test accuracy, or the published FID Inception. */
const featureNetOf = (out: typeof Stages.FeatureNetOutput.Type): Claims.FeatureNet | Claims.PublishedFeatureNet =>
  "kind" in out.model
    ? { published: "the FID Inception-V3 (pytorch-fid's weights)" }
    : { accuracy: out.accuracy, testImages: out.testImages, classes: out.model.classes }

/** The selected grids on the store: stages run or reused, then the report written to `options.out`. */
export const run = Effect.fn("Suite.run")(function*(options: RunOptions) {
  const { preset } = options
  const { cells, shared, graphs } = yield* graph(options)
  const compute = yield* Compute
  const executor = yield* Executor.Executor
  yield* Effect.logInfo(`preset ${preset.name}: ${cells.length} cells of tables ${options.tables.join(", ")} on ${options.dataset}, ${compute.backend}, ${executor.name}`)
  // In-process, each stage's own progress bar is the view.
  const view = yield* View.make(cells.length).pipe(executor.submit === undefined ? Effect.provideService(Progress.Display, "none") : identity)
  const nodes = cells.flatMap((c) => Cells.nodes(graphs.get(c.id)!))
  const runner = yield* Executor.runner(view, nodes)
  // The speed measurement first, on a machine the cells do not load yet; its failure fails the speed cells only.
  const speed = [...graphs.values()].find((g) => g.speed !== undefined)?.speed?.node
  const timed = speed === undefined ? undefined : yield* Effect.exit(runner.run(speed))
  yield* Executor.start(runner, nodes)
  const exits = yield* Effect.forEach(
    cells,
    (cell) =>
      Cells.run(graphs.get(cell.id)!, graphs, runner).pipe(
        Effect.annotateLogs({ cell: cell.id }),
        Effect.catchCause((cause) => {
          const error = Cause.squash(cause)
          return Effect.fail(
            error instanceof Cells.CellFailed
              ? error
              : new Cells.CellFailed({ cell: cell.id, reason: Cause.hasInterruptsOnly(cause) ? "interrupted" : reasonOf(cause) })
          )
        }),
        Effect.exit,
        Effect.tap((exit) => view.cellEnded(Exit.isSuccess(exit)))
      ),
    { concurrency: options.concurrency }
  )
  yield* view.finish
  const done: Array<Cells.CellRun> = []
  const failures: Array<Cells.CellFailed> = []
  exits.forEach((exit, i) => {
    if (Exit.isSuccess(exit)) done.push(exit.value)
    else {
      const error = Cause.squash(exit.cause)
      failures.push(error instanceof Cells.CellFailed ? error : new Cells.CellFailed({ cell: cells[i]!.id, reason: reasonOf(exit.cause) }))
    }
  })
  for (const f of failures) yield* Effect.logWarning(f.message)
  if (timed !== undefined && Exit.isFailure(timed)) failures.push(new Cells.CellFailed({ cell: "sampling-speed", reason: reasonOf(timed.cause) }))

  const results: Estimates.Results = new Map(done.map((r) => [r.cell.id, { runs: r.runs.map((x) => x.run), ...(r.speed === undefined ? {} : { speed: r.speed }) }] as const))
  const artifacts = new Map(done.flatMap((r) => r.runs.flatMap((x) => x.artifacts.map((a) => [a.key, a] as const))))
  if (timed !== undefined && Exit.isSuccess(timed)) artifacts.set(timed.value.key, timed.value)
  const featureNet = yield* Effect.exit(runner.run(shared.featureNet))
  const net = Exit.isSuccess(featureNet) ? featureNetOf(featureNet.value.output) : undefined
  return yield* writeReport(options, { done, failures, results, artifacts, featureNet: net, backend: `${compute.backend} (${compute.device})` })
}, Effect.provide(Methods.layer))

const writeReport = Effect.fn("Suite.writeReport")(function*(
  options: RunOptions,
  run: {
    readonly done: ReadonlyArray<Cells.CellRun>
    readonly failures: ReadonlyArray<Cells.CellFailed>
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
  // The figures read the evidence of the methods that report it, decoded with their Schemas.
  const evidence = <V>(d: Decision.PruneDecision | undefined, method: string, schema: Schema.Codec<V, any>) =>
    d?.method === method ? Schema.decodeUnknownEffect(schema)(d.evidence).pipe(Effect.orDie) : Effect.succeed(undefined)
  const random = run.done.find((r) => r.decision?.method === RandomSearch.method.name)
  const search = yield* evidence(random?.decision, RandomSearch.method.name, RandomSearch.Evidence)
  if (search !== undefined) {
    const marks = run.done.flatMap((r) => {
      const loss = r.runs[0]?.run.metrics.calibrationLoss
      return r.cell.id.startsWith("t3/") && loss !== undefined ? [{ label: r.cell.id.slice(3), loss }] : []
    })
    yield* addFigure(Figures.calibrationHistogram(search.losses, marks))
  }
  const learned = new Map<string, Learnable.Evidence>()
  for (const r of run.done) {
    const d = r.decision
    const history = yield* evidence(d, Learnable.method.name, Learnable.Evidence)
    if (history === undefined || d?.scheme === undefined || d.teacherDepth !== 28) continue
    if (!learned.has(Scheme.format(d.scheme))) learned.set(Scheme.format(d.scheme), history)
  }
  for (const [scheme, e] of [...learned].sort(([a], [b]) => a.localeCompare(b))) {
    yield* addFigure(Figures.decisions(e.history.map((s) => ({ iteration: s.step, kept: s.kept, confidence: s.probability })), scheme))
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
  const instrumentCheck = Claims.instrument(run.results, run.featureNet)
  const judged = Claims.judgeAll(run.results, instrumentCheck)
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
    instrument: instrumentCheck,
    claims: judged.map(({ claim, judgement }) => ({ id: claim.id, ...judgement })),
    failures: run.failures.map((f) => ({ cell: f.cell, reason: f.reason }))
  }
  yield* write("results.json", text(JSON.stringify(resultsJson, null, 2) + "\n"))
  yield* write("report.md", text(markdown))
  yield* write("report.html", text(html))
  yield* store.keep(`repro-${preset.name}`, keys)
  yield* Effect.logInfo(`report: ${path.join(options.out, "report.md")} and report.html (${run.done.length} cells, ${run.failures.length} failed)`)
  return { results: run.results, failures: run.failures, judged, instrument: instrumentCheck } satisfies Summary
})
