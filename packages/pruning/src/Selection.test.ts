import { assert, describe, it } from "@effect/vitest"
import { Rng } from "@tinyfusion/tensor"
import * as Scheme from "./Scheme.ts"
import * as Selection from "./Selection.ts"

describe("Selection", () => {
  it("targets: a keep count, a scheme (keep derived and checked), and the reasons for bad ones", () => {
    assert.deepStrictEqual(Selection.target(28, { keep: 14 }), { keep: 14 })
    assert.deepStrictEqual(Selection.target(28, { scheme: Scheme.parse("2:3") }), { keep: 19, scheme: { n: 2, m: 3 } })
    assert.deepStrictEqual(Selection.target(28, { scheme: Scheme.parse("7:14"), keep: 14 }), { keep: 14, scheme: { n: 7, m: 14 } })
    assert.throws(() => Selection.target(28, { scheme: Scheme.parse("1:2"), keep: 7 }), /scheme 1:2 keeps 14 blocks, not 7/)
    assert.throws(() => Selection.target(28, {}), /give the blocks to keep or an N:M scheme/)
    assert.throws(() => Selection.target(28, { keep: 29 }), /cannot keep 29 blocks \(1\.\.28\)/)
    assert.throws(() => Selection.target(6, { scheme: Scheme.parse("7:14") }), /a 6-layer model has no group of 14/)
  })

  it("top: the highest scores (ties to the earlier block), protected blocks kept, N per group with trailing layers", () => {
    const scores = [0.5, 0.1, 0.9, 0.1, 0.7, 0.0, 0.3]
    assert.deepStrictEqual(Selection.top(scores, { keep: 3 }), [0, 2, 4])
    assert.deepStrictEqual(Selection.top(scores, { keep: 3 }, [6]), [2, 4, 6])
    assert.deepStrictEqual(Selection.top([1, 1, 1, 1], { keep: 2 }), [0, 1])
    // 1:2 on 7 layers: groups (0,1), (2,3), (4,5) and the trailing 6.
    assert.deepStrictEqual(Selection.top(scores, { keep: 4, scheme: Scheme.parse("1:2") }), [0, 2, 4, 6])
    // 2:3 on 7: groups (0,1,2), (3,4,5), trailing 6.
    assert.deepStrictEqual(Selection.top(scores, { keep: 5, scheme: Scheme.parse("2:3") }), [0, 2, 3, 4, 6])
  })

  it("uniform (BK-SDM): first and last kept; 28 → 14 is the paper's Oracle", () => {
    assert.deepStrictEqual(Selection.uniform(28, 14), [0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27])
    assert.deepStrictEqual(Selection.uniform(28, 2), [0, 27])
    assert.deepStrictEqual(Selection.uniform(28, 28), Array.from({ length: 28 }, (_, i) => i))
    assert.deepStrictEqual(Selection.uniform(14, 7), [0, 2, 4, 7, 9, 11, 13])
    for (const keep of [3, 7, 19, 21]) {
      const kept = Selection.uniform(28, keep)
      assert.strictEqual(kept.length, keep)
      assert.strictEqual(kept[0], 0)
      assert.strictEqual(kept.at(-1), 27)
      kept.forEach((k, i) => i > 0 && assert.isAbove(k, kept[i - 1]!))
    }
    assert.throws(() => Selection.uniform(28, 1), /at least 2 blocks/)
  })

  it("random masks: distinct ascending blocks, the same for the same (stream, index), every block equally likely", () => {
    const stream = Rng.stream(0, "test/random")
    const counts = new Array(10).fill(0)
    for (let i = 0; i < 2000; i++) {
      const mask = Selection.random(stream, i, 10, { keep: 4 })
      assert.strictEqual(mask.length, 4)
      mask.forEach((k, j) => j > 0 && assert.isAbove(k, mask[j - 1]!))
      for (const k of mask) counts[k]++
    }
    for (const c of counts) assert.closeTo(c / 2000, 0.4, 0.05)
    assert.deepStrictEqual(Selection.random(stream, 5, 10, { keep: 4 }), Selection.random(stream, 5, 10, { keep: 4 }))
    const scheme = Scheme.parse("2:4")
    for (let i = 0; i < 50; i++) {
      const mask = Selection.random(stream, i, 10, { keep: 6, scheme })
      assert.strictEqual(mask.filter((k) => k < 4).length, 2)
      assert.strictEqual(mask.filter((k) => k >= 4 && k < 8).length, 2)
      assert.deepStrictEqual(mask.slice(-2), [8, 9])
    }
  })
})
