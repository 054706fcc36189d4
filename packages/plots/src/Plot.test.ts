import { assert, describe, it } from "@effect/vitest"
import * as Plot from "./Plot.ts"

describe("Plot", () => {
  it("renders a line plot to SVG and PNG, dropping non-finite points", async () => {
    const fig = await Plot.lines("loss", "Loss", [
      { step: 0, value: 1, series: "train" },
      { step: 10, value: 0.5, series: "train" },
      { step: 20, value: NaN, series: "train" },
      { step: 0, value: 2, series: "kd" }
    ], { x: "step", y: "loss" })
    assert.match(fig.svg, /^<svg/)
    assert.include(fig.svg, ">kd<")
    assert.include(fig.svg, ">Loss<")
    assert.deepStrictEqual([...fig.png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  })
})
