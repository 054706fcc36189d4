/**
 * Where a suite's nodes compute. One service, three layers:
 *
 *   in-process   every node in this process (the default of `Suite.run`;
 *                for tests and debugging)
 *   local        N child processes on this machine (`Local.layer`), one
 *                per core by default: tfjs's wasm backend is
 *                single-threaded, so one process uses one core
 *   postgres     durable jobs in pg-boss on PostgreSQL (`Postgres.layer`),
 *                taken by `tinyfusion worker` processes on any machine
 *                that shares the store directory
 *
 * This process keeps the graph: a node is submitted once its inputs are
 * committed and the store lacks it, with the number of nodes that wait on
 * it as its priority, the cells' fibers wait for what they
 * read, the workers' progress is shown in one view (View.ts), and the
 * report is written here from the stored outputs. A node
 * whose stage no worker can rebuild — the paper preset's published files,
 * read by path from this machine (`Cells.stages` lists the others) — runs
 * here.
 */
import { Context, Effect, Layer } from "effect"
import { ArtifactStore, Graph, Stage, StoreError } from "@tinyfusion/core"
import * as Cells from "../cells.ts"
import type { JobFailed } from "./Job.ts"
import type * as View from "./View.ts"

/** What a worker is asked to run: a node's key, description and label (the executor adds the data source). */
export interface Request {
  readonly key: string
  readonly node: Graph.Description
  readonly label: string
  /** How many nodes of the run wait on this one (`Graph.downstream`): a free worker takes the job with the most. */
  readonly priority: number
  /** Told what becomes of the node while it runs (taken by a worker, its progress). */
  readonly report: (update: View.Update) => Effect.Effect<void>
}

export interface Service {
  /** In words, for the log. */
  readonly name: string
  /** Has the node computed elsewhere, committed to the store; absent: every node runs in this process. */
  readonly submit?: (request: Request) => Effect.Effect<void, JobFailed | StoreError>
}

export const Executor = Context.Reference<Service>("@tinyfusion/experiments/Executor", {
  defaultValue: () => ({ name: "in-process" })
})

export const inProcess: Layer.Layer<never> = Layer.succeed(Executor, { name: "in-process" })

const known = new Set<unknown>(Cells.stages)

/**
 * A runner on the executor: each node whose inputs are committed is sent to
 * a worker unless the store holds it, then opened here (a cache hit); `view`
 * shows them. Of the nodes waiting for a worker, the one most of `roots`
 * waits on goes first, so that a teacher is not queued behind the cells'
 * side branches.
 */
export const runner = Effect.fn("Executor.runner")(function*(view: View.View, roots: ReadonlyArray<Graph.Node<unknown, unknown, unknown>>) {
  const executor = yield* Executor
  const submit = executor.submit
  if (submit === undefined) return yield* Graph.runner
  const store = yield* ArtifactStore
  let running = 0
  let done = 0
  let waiting: ReadonlyMap<string, number> = new Map()
  const runner = yield* Graph.runnerWith((node, { key, description, inputs }, here) =>
    Effect.gen(function*() {
      if (!known.has(node.stage)) return yield* here
      // What fits the ports is checked here, as an in-process run would, before a worker is asked.
      for (const [name, port] of Object.entries(node.stage.inputs)) {
        yield* Stage.as(port as Stage.Ports[string], inputs[name]!, { stage: node.stage.name, input: name })
      }
      const stored = yield* store.inspect(key, { hash: false })
      if (stored._tag === "Valid" && stored.manifest.checkpoint === undefined) return yield* here
      const label = node.label ?? "shared"
      const started = Date.now()
      running++
      yield* Effect.logInfo(`${node.stage.name} of ${label} submitted (${running} running, ${done} done)`)
      yield* view.submitted(key, node.stage.name, label)
      yield* submit({ key, node: description, label, priority: waiting.get(key) ?? 0, report: (update) => view.update(key, update) }).pipe(
        Effect.onExit((exit) => Effect.andThen(Effect.sync(() => running--), view.ended(key, exit._tag === "Success")))
      )
      done++
      yield* Effect.logInfo(`${node.stage.name} of ${label} done in ${((Date.now() - started) / 1000).toFixed(1)} s (${running} running, ${done} done)`)
      const after = yield* store.inspect(key, { hash: false })
      if (after._tag !== "Valid") {
        return yield* new StoreError({
          operation: `read ${node.stage.name} ${key}`,
          path: store.root,
          reason: "a worker finished it but this store does not hold it: do the workers run on this store (a directory they share)?",
          transient: false
        })
      }
      return yield* here
    })
  )
  waiting = yield* Graph.downstream(runner, roots)
  return runner
})

/**
 * With workers, starts every node `roots` reach in the background, so that
 * each is submitted as soon as its own inputs are committed, whichever cell
 * reads it; the cells' runs of the same nodes (on the same runner) wait for
 * those. In-process, nothing: the cells run their nodes in turn.
 */
export const start = Effect.fn("Executor.start")(function*<R>(runner: Graph.Runner, roots: ReadonlyArray<Graph.Node<unknown, unknown, R>>) {
  if ((yield* Executor).submit === undefined) return
  // Every node the roots reach, so that a node waits for its own inputs only (not for the inputs listed before
  // them); failures are the cells' to report: each reads the nodes it needs again.
  const reached = new Set<Graph.Node<unknown, unknown, R>>()
  const reach = (input: Graph.Input<unknown, unknown, unknown>) => {
    if (input._tag === "Existing" || reached.has(input as Graph.Node<unknown, unknown, R>)) return
    reached.add(input as Graph.Node<unknown, unknown, R>)
    Object.values(input.inputs).forEach(reach)
  }
  roots.forEach(reach)
  yield* Effect.forkChild(Effect.forEach(reached, (node) => Effect.exit(runner.run(node)), { concurrency: "unbounded", discard: true }))
})
