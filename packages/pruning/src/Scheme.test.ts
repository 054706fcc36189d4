import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import * as Scheme from "./Scheme.ts"

const binomial = (m: number, n: number): number => (n === 0 ? 1 : (binomial(m - 1, n - 1) * m) / n)

describe("Scheme", () => {
  it("candidate counts 2, 6, 3432, in lexicographic order, every row keeping N", () => {
    for (const [text, count] of [["1:2", 2], ["2:4", 6], ["7:14", 3432], ["2:3", 3]] as const) {
      const s = Scheme.parse(text)
      const rows = Scheme.candidates(s)
      assert.strictEqual(rows.length, count)
      assert.strictEqual(rows.length, binomial(s.m, s.n))
      for (const row of rows) assert.strictEqual(row.length, s.n)
      const keys = rows.map((r) => r.map((i) => String.fromCharCode(65 + i)).join(""))
      assert.deepStrictEqual(keys, [...keys].sort(), `${text} lexicographic`)
      assert.strictEqual(new Set(keys).size, keys.length)
      for (const row of Scheme.candidateMatrix(s)) assert.strictEqual(row.reduce((a: number, b) => a + b, 0), s.n)
    }
    assert.deepStrictEqual(Scheme.candidates(Scheme.parse("2:4")), [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    assert.deepStrictEqual(Scheme.candidateMatrix(Scheme.parse("2:3")), [[1, 1, 0], [1, 0, 1], [0, 1, 1]])
  })

  it("groups and kept layers, with trailing layers kept", () => {
    const s = Scheme.parse("2:3")
    assert.strictEqual(Scheme.keptDepth(s, 28), 19)
    assert.strictEqual(Scheme.keptDepth(Scheme.parse("1:2"), 28), 14)
    assert.strictEqual(Scheme.keptDepth(Scheme.parse("7:14"), 28), 14)
    assert.strictEqual(Scheme.keptDepth(Scheme.parse("1:4"), 28), 7)
    assert.deepStrictEqual(Scheme.groups(Scheme.parse("2:4"), 10), { groups: [[0, 1, 2, 3], [4, 5, 6, 7]], rest: [8, 9] })
    // 2:4 on 8 layers, choices (1,3) then (0,2): rows 4 and 1.
    assert.deepStrictEqual(Scheme.keptLayers(Scheme.parse("2:4"), 8, [4, 1]), [1, 3, 4, 6])
  })

  it("a scheme is decoded from its text once, at the boundary, and encoded back to it", () => {
    const decode = Schema.decodeUnknownSync(Scheme.Scheme)
    assert.deepStrictEqual(decode("2:4"), { n: 2, m: 4 })
    assert.strictEqual(Schema.encodeSync(Scheme.Scheme)({ n: 7, m: 14 }), "7:14")
    assert.throws(() => decode("3:2"), /pruning scheme "3:2": needs 1 ≤ N ≤ M/)
    assert.throws(() => decode("half"), /pruning scheme "half": expected N:M/)
    // Groups depend on M alone.
    assert.deepStrictEqual(Scheme.groups({ m: 2 }, 5), { groups: [[0, 1], [2, 3]], rest: [4] })
    assert.throws(() => Scheme.groups({ m: 3 }, 2), /"N:3": a 2-layer model has no group of 3/)
  })

  it("rejects malformed schemes with the reason", () => {
    assert.throws(() => Scheme.parse("3:2"), /needs 1 ≤ N ≤ M/)
    assert.throws(() => Scheme.parse("half"), /expected N:M/)
    assert.throws(() => Scheme.groups(Scheme.parse("7:14"), 7), /no group of 14/)
  })
})
