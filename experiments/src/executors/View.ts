/**
 * One progress view over all workers, shown by the process that waits for
 * them (`repro`, a `tinyfusion worker`): how many cells are done, running
 * and failed, how many nodes, and for each node being computed its worker,
 * stage, cell, step of total and ETA, from the Progress figures its compute
 * process forwards (`Progress.Sink`). It is drawn as Progress draws one bar:
 * redrawn in place on a terminal (`bar`), a log line every `Progress.Interval`
 * elsewhere (`lines`), whose `progress` annotation holds the same figures as
 * data for `--log-format json`.
 */
import { Clock, Duration, Effect } from "effect"
import { Progress } from "@tinyfusion/core"

/** What an executor says of a node it was given, while the node runs. */
export type Update =
  /** Waiting on a queue: its state there ("created", "retry"). */
  | { readonly _tag: "Queued"; readonly state: string }
  /** A worker took it. */
  | { readonly _tag: "Started"; readonly worker: string }
  /** The latest figures of the node's progress report. */
  | { readonly _tag: "Progress"; readonly worker: string; readonly figures: Progress.Figures }

/** A node being computed, as shown. */
export interface Node {
  readonly stage: string
  readonly label: string
  /** Absent while it waits for a worker. */
  readonly worker?: string
  readonly state: string
  readonly done?: number
  readonly total?: number
  readonly etaSeconds?: number
}

export interface Snapshot {
  readonly cells: { readonly total: number; readonly done: number; readonly running: number; readonly failed: number }
  readonly nodes: { readonly done: number; readonly running: number; readonly queued: number; readonly failed: number }
  readonly running: ReadonlyArray<Node>
}

export interface View {
  readonly submitted: (key: string, stage: string, label: string) => Effect.Effect<void>
  readonly update: (key: string, update: Update) => Effect.Effect<void>
  readonly ended: (key: string, ok: boolean) => Effect.Effect<void>
  readonly cellEnded: (ok: boolean) => Effect.Effect<void>
  readonly snapshot: Effect.Effect<Snapshot>
  /** Shows the last state (and ends the bar's line). */
  readonly finish: Effect.Effect<void>
}

/** "cells 3/12 done, 9 running, 0 failed; nodes 7 done, 2 running, 1 queued, 0 failed | worker 1: recovery of x/a 120/400 ETA 1m13s". */
export const describe = (s: Snapshot): string => {
  const nodes = `nodes ${s.nodes.done} done, ${s.nodes.running} running, ${s.nodes.queued} queued, ${s.nodes.failed} failed`
  // A worker's view has no cells, only the nodes it was given.
  const head = s.cells.total === 0 ? nodes : `cells ${s.cells.done}/${s.cells.total} done, ${s.cells.running} running, ${s.cells.failed} failed; ${nodes}`
  const running = s.running.filter((n) => n.worker !== undefined).map((n) =>
    `${n.worker}: ${n.stage} of ${n.label}` +
    (n.total === undefined ? ` (${n.state})` : ` ${n.done}/${n.total} ETA ${n.etaSeconds === undefined ? "-" : Progress.formatDuration(n.etaSeconds)}`)
  )
  return [head, ...running].join(" | ")
}

const redrawMillis = 100

/** A view of `cells` cells (0: nodes only, as a worker shows them). */
export const make = Effect.fnUntraced(function*(cells: number) {
  const display = yield* Progress.Display
  const interval = Duration.toMillis(yield* Progress.Interval)
  const nodes = new Map<string, { stage: string; label: string; worker?: string; state: string; figures?: Progress.Figures }>()
  const count = { cellsDone: 0, cellsFailed: 0, done: 0, failed: 0 }
  let lastShown = Number.NEGATIVE_INFINITY
  let changed = false

  const snapshot = Effect.sync((): Snapshot => {
    const running = [...nodes.values()].map((n): Node => {
      const f = n.figures
      const eta = f === undefined ? undefined : Progress.eta(f)
      return {
        stage: n.stage,
        label: n.label,
        ...(n.worker === undefined ? {} : { worker: n.worker }),
        state: n.state,
        ...(f === undefined ? {} : { done: f.done, total: f.total }),
        ...(eta === undefined ? {} : { etaSeconds: Math.round(eta) })
      }
    })
    const started = running.filter((n) => n.worker !== undefined).length
    return {
      cells: { total: cells, done: count.cellsDone, running: cells - count.cellsDone - count.cellsFailed, failed: count.cellsFailed },
      nodes: { done: count.done, running: started, queued: running.length - started, failed: count.failed },
      running
    }
  })

  const show = Effect.gen(function*() {
    changed = false
    const s = yield* snapshot
    if (display === "bar") {
      const columns = process.stderr.columns ?? 160
      yield* Effect.sync(() => process.stderr.write(`\r${describe(s).slice(0, Math.max(columns - 1, 20))}\x1b[K`))
    } else if (display === "lines") yield* Effect.logInfo(describe(s)).pipe(Effect.annotateLogs({ progress: s }))
  })

  const changes = Effect.gen(function*() {
    changed = true
    const now = yield* Clock.currentTimeMillis
    if (display === "none" || now - lastShown < (display === "bar" ? redrawMillis : interval)) return
    lastShown = now
    yield* show
  })

  return {
    submitted: (key, stage, label) => Effect.suspend(() => (nodes.set(key, { stage, label, state: "queued" }), changes)),
    update: (key, update) =>
      Effect.suspend(() => {
        const node = nodes.get(key)
        if (node === undefined) return Effect.void
        if (update._tag === "Queued") {
          node.state = update.state
          delete node.worker
        } else {
          node.state = "running"
          node.worker = update.worker
          if (update._tag === "Progress") node.figures = update.figures
        }
        return changes
      }),
    ended: (key, ok) =>
      Effect.suspend(() => {
        if (!nodes.delete(key)) return Effect.void
        if (ok) count.done++
        else count.failed++
        return changes
      }),
    cellEnded: (ok) =>
      Effect.suspend(() => {
        if (ok) count.cellsDone++
        else count.cellsFailed++
        return changes
      }),
    snapshot,
    finish: Effect.gen(function*() {
      if (display === "none") return
      if (changed || display === "bar") yield* show
      if (display === "bar") yield* Effect.sync(() => process.stderr.write("\n"))
    })
  } satisfies View
})
