import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Graph } from "@tinyfusion/core"
import * as Cells from "./cells.ts"
import * as Methods from "./methods.ts"
import * as Presets from "./presets.ts"
import * as Suite from "./runner.ts"

describe("the suite's cells", () => {
  it.effect("a table brings the cells it starts from and the instrument check's; an unknown table is named", () =>
    Effect.gen(function*() {
      const t7 = (yield* Suite.selectCells(["7"])).map((c) => c.id)
      // Table 7 prunes and distils from Table 1's D14, which is not in Table 7 itself; every run checks its instrument.
      assert.deepStrictEqual(t7, [
        "t7/teacher-xl-from-xl",
        "t7/teacher-xl-from-d14",
        "t7/teacher-d14-from-xl",
        "t7/teacher-d14-from-d14",
        "t1/tinydit-d14-kd",
        "t1/teacher",
        "i/untrained",
        "i/unrecovered"
      ])
      // A cell listed by two selected tables appears once; all grids hold 57 cells.
      assert.strictEqual((yield* Suite.selectCells(["1", "7"])).length, 18)
      assert.strictEqual((yield* Suite.selectCells(Suite.tableIds)).length, 57)
      const unknown = yield* Effect.flip(Suite.selectCells(["1", "9"]))
      assert.strictEqual(unknown.message, "no table 9; the grids are 1, 2, 3, 4, 5, 7, 8, F4, X, I")
    }))
})

describe("the suite's graph", () => {
  it.effect("every node of every cell is rebuilt from its description by the stage registry under the same key; a second build gives the same keys", () =>
    Effect.gen(function*() {
      const options = { preset: Presets.quick("synthetic"), tables: Suite.tableIds }
      const first = yield* Suite.graph(options)
      const second = yield* Suite.graph(options)
      const runner = yield* Graph.runner
      const elsewhere = yield* Graph.runner
      let count = 0
      for (const cell of first.cells) {
        const nodes = Cells.nodes(first.graphs.get(cell.id)!)
        const again = Cells.nodes(second.graphs.get(cell.id)!)
        assert.isAbove(nodes.length, 0, cell.id)
        for (const [i, node] of nodes.entries()) {
          const key = yield* runner.key(node)
          assert.strictEqual(yield* elsewhere.key(again[i]!), key, `${cell.id} node ${i}`)
          // As another process gets it: JSON on the wire, the stage found by name.
          const wire = JSON.parse(JSON.stringify(yield* runner.describe(node)))
          const rebuilt = yield* Graph.fromDescription(Cells.stages, wire)
          assert.strictEqual(yield* elsewhere.key(rebuilt), key, `${cell.id} node ${i}`)
          count++
        }
      }
      assert.isAbove(count, 150)
    }).pipe(Effect.provide(Methods.layer)))
})

describe("the small preset", () => {
  it.effect("builds every cell of every grid, with three recovery runs for each cell of the key claims (Tables 3, 4, 5)", () =>
    Effect.gen(function*() {
      const { cells, graphs } = yield* Suite.graph({ preset: Presets.small, tables: Suite.tableIds })
      assert.strictEqual(cells.length, 57)
      const runner = yield* Graph.runner
      const recoveries = (id: string) =>
        Effect.map(
          Effect.forEach(Cells.nodes(graphs.get(id)!).filter((n) => n.stage.name === "recovery"), (n) => runner.key(n)),
          (keys) => new Set(keys).size
        )
      for (const cell of cells) {
        assert.isAbove(Cells.nodes(graphs.get(cell.id)!).length, 0, cell.id)
        const key = ["t3/", "t4/", "t5/"].some((t) => cell.id.startsWith(t))
        if (key) assert.strictEqual(yield* recoveries(cell.id), 3, cell.id)
      }
      // Table 1's cells run one seed: its D14 shares the first of Table 3's three.
      assert.strictEqual(yield* recoveries("t1/shortgpt-d14"), 1)
    }).pipe(Effect.provide(Methods.layer)))

  it.effect("workers take the DiT teacher before the MARs: most of the run waits on it", () =>
    Effect.gen(function*() {
      const { cells, shared, graphs } = yield* Suite.graph({ preset: Presets.small, tables: Suite.tableIds })
      const runner = yield* Graph.runner
      const waiting = yield* Graph.downstream(runner, cells.flatMap((c) => Cells.nodes(graphs.get(c.id)!)))
      const of = (node: Graph.Node<unknown, unknown, unknown>) => Effect.map(runner.key(node), (key) => waiting.get(key)!)
      const dit = yield* of(shared.teachers.dit)
      const mar = yield* of(shared.teachers.mar)
      const sit = yield* of(shared.teachers.sit)
      assert.isAbove(dit, 150)
      assert.isAbove(dit, 5 * Math.max(mar, sit))
      // Everything trained reads the latents.
      assert.isAbove(yield* of(shared.latents), dit)
    }).pipe(Effect.provide(Methods.layer)))
})
