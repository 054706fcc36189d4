import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Logger, References } from "effect"
import { TestClock } from "effect/testing"
import { Progress } from "@tinyfusion/core"
import * as View from "./View.ts"

describe("View", () => {
  it.effect("counts cells and nodes; each running node with its worker, step and ETA; lines carry the figures as data", () =>
    Effect.gen(function*() {
      const lines: Array<{ message: string; progress: unknown }> = []
      const logger = Logger.make(({ message, fiber }) => {
        const annotations = fiber.getRef(References.CurrentLogAnnotations)
        lines.push({ message: String(message), progress: annotations["progress"] })
      })
      yield* Effect.gen(function*() {
        const view = yield* View.make(3)
        yield* view.submitted("p", "prune", "x/a")
        yield* view.submitted("r", "recovery", "x/b")
        yield* view.submitted("e", "evaluation", "t1/teacher")
        yield* view.update("p", { _tag: "Started", worker: "worker 1" })
        yield* view.update("r", { _tag: "Started", worker: "worker 2" })
        yield* TestClock.adjust("6 seconds")
        // 10 of 40 steps in 5 s, resumed at 0: 2 it/s, 30 left → 15 s.
        yield* view.update("r", { _tag: "Progress", worker: "worker 2", figures: { label: "recovery", done: 10, total: 40, start: 0, elapsedMillis: 5000 } })
        yield* view.ended("p", true)
        yield* view.cellEnded(true)
        const s = yield* view.snapshot
        assert.deepStrictEqual(s.cells, { total: 3, done: 1, running: 2, failed: 0 })
        assert.deepStrictEqual(s.nodes, { done: 1, running: 1, queued: 1, failed: 0 })
        assert.deepStrictEqual(s.running, [
          { stage: "recovery", label: "x/b", worker: "worker 2", state: "running", done: 10, total: 40, etaSeconds: 15 },
          { stage: "evaluation", label: "t1/teacher", state: "queued" }
        ])
        assert.strictEqual(
          View.describe(s),
          "cells 1/3 done, 2 running, 0 failed; nodes 1 done, 1 running, 1 queued, 0 failed | worker 2: recovery of x/b 10/40 ETA 15s"
        )
        yield* view.ended("e", false)
        yield* view.ended("r", true)
        yield* view.cellEnded(false)
        yield* view.cellEnded(true)
        yield* view.finish
      }).pipe(
        Effect.provideService(Progress.Display, "lines"),
        Effect.provideService(Progress.Interval, Duration.seconds(5)),
        Effect.provide(Logger.layer([logger]))
      )
      // A line at the first change, at the first change 5 s later, and the final state.
      assert.deepStrictEqual(lines.map((l) => l.message), [
        "cells 0/3 done, 3 running, 0 failed; nodes 0 done, 0 running, 1 queued, 0 failed",
        "cells 0/3 done, 3 running, 0 failed; nodes 0 done, 2 running, 1 queued, 0 failed | worker 1: prune of x/a (running) | worker 2: recovery of x/b 10/40 ETA 15s",
        "cells 2/3 done, 0 running, 1 failed; nodes 2 done, 0 running, 0 queued, 1 failed"
      ])
      assert.deepStrictEqual(lines[2]!.progress, {
        cells: { total: 3, done: 2, running: 0, failed: 1 },
        nodes: { done: 2, running: 0, queued: 0, failed: 1 },
        running: []
      })
    }))

  it("a worker's view has no cells", () => {
    const s: View.Snapshot = {
      cells: { total: 0, done: 0, running: 0, failed: 0 },
      nodes: { done: 4, running: 1, queued: 0, failed: 0 },
      running: [{ stage: "pretrain", label: "shared", worker: "worker 1", state: "running" }]
    }
    assert.strictEqual(View.describe(s), "nodes 4 done, 1 running, 0 queued, 0 failed | worker 1: pretrain of shared (running)")
  })
})
