import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
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
        "i/untrained"
      ])
      // A cell listed by two selected tables appears once; all grids hold 56 cells.
      assert.strictEqual((yield* Suite.selectCells(["1", "7"])).length, 17)
      assert.strictEqual((yield* Suite.selectCells(Suite.tableIds)).length, 56)
      const unknown = yield* Effect.flip(Suite.selectCells(["1", "9"]))
      assert.strictEqual(unknown.message, "no table 9; the grids are 1, 2, 3, 4, 5, 7, 8, F4, X, I")
    }))
})
