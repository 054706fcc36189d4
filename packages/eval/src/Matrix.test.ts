import { assert, describe, it } from "@effect/vitest"
import * as Matrix from "./Matrix.ts"

describe("Matrix", () => {
  it("spatial keeps the first channels of every pixel, in (row, column, channel) order", () => {
    // Two images of 1×2 pixels with 8 channels holding 0..31: pixel p has channels 8p..8p+7.
    const map = Float32Array.from({ length: 32 }, (_, i) => i)
    const s = Matrix.spatial(map, [2, 1, 2, 8])
    assert.strictEqual(s.rows, 2)
    assert.strictEqual(s.cols, 14)
    assert.deepStrictEqual([...s.data.subarray(0, 14)], [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14])
    assert.deepStrictEqual([...s.data.subarray(14)], [16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30])
    assert.deepStrictEqual([...Matrix.spatial(map, [2, 1, 2, 8], 1).data], [0, 8, 16, 24])
    assert.throws(() => Matrix.spatial(map, [2, 1, 2, 8], 9), /first 9 channels of a map with 8/)
  })

  it("slice views rows and concat joins them back", () => {
    const m = Matrix.make(3, 2, Float64Array.from([1, 2, 3, 4, 5, 6]))
    const parts = [Matrix.slice(m, 0, 1), Matrix.slice(m, 1, 3)]
    assert.deepStrictEqual([...parts[1]!.data], [3, 4, 5, 6])
    const joined = Matrix.concat(parts, 2)
    assert.strictEqual(joined.rows, 3)
    assert.deepStrictEqual([...joined.data], [1, 2, 3, 4, 5, 6])
    assert.throws(() => Matrix.make(2, 2, new Float32Array(3)), /needs 4 values, got 3/)
  })
})
