import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { Cell, grids, seedsOf } from "./grids.ts"
import * as Paper from "./paper.ts"

describe("grids", () => {
  const cells = grids.flatMap((g) => g.cells)
  const ids = cells.map((c) => c.id)

  it("cells are valid data with unique ids", () => {
    assert.strictEqual(new Set(ids).size, ids.length)
    for (const cell of cells) assert.deepStrictEqual(Schema.decodeUnknownSync(Cell)(cell), cell)
  })

  it("every paper row we reproduce has a cell, and every cell answers a paper row or figure (or is an added pruner's or the instrument check's)", () => {
    const rows = [Paper.table1, Paper.table2, Paper.table3, Paper.table4, Paper.table5, Paper.table7, Paper.table8].flat()
    const answered = new Set(rows.flatMap((r) => (r.cell === undefined ? [] : [r.cell])))
    for (const id of answered) assert.include(ids, id)
    for (const id of ids) assert.isTrue(answered.has(id) || id.startsWith("f4/") || id.startsWith("x/") || id.startsWith("i/"), `${id} answers no paper row`)
  })

  it("cells built on other cells refer to cells that exist", () => {
    for (const cell of cells) {
      for (const source of [cell.prune?.from, cell.recovery?.teacher]) {
        if (source !== undefined && source !== "teacher") assert.include(ids, source.cell, `${cell.id} → ${source.cell}`)
      }
    }
  })

  it("the key claims' grids (Tables 3, 4, 5) declare three recovery seeds, the others one", () => {
    for (const g of grids) assert.strictEqual(g.seeds ?? 1, ["3", "4", "5"].includes(g.table) ? 3 : 1, g.table)
    assert.deepStrictEqual(["t3/learnable", "t4/7:14-frozen", "t5/repkd", "t1/tinydit-d14", "nowhere"].map(seedsOf), [3, 3, 3, 1, 1])
  })
})
