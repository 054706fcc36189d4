import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import * as Rng from "./Rng.ts"

const moments = (xs: Float32Array) => {
  let mean = 0
  for (const x of xs) mean += x
  mean /= xs.length
  let variance = 0
  for (const x of xs) variance += (x - mean) ** 2
  return { mean, variance: variance / (xs.length - 1) }
}

describe("Rng", () => {
  it("Philox4x32-10 matches the Random123 known-answer vectors", () => {
    const hex = (ws: ReadonlyArray<number>) => ws.map((w) => w.toString(16).padStart(8, "0"))
    assert.deepStrictEqual(hex(Rng.philox([0, 0, 0, 0], [0, 0])), ["6627e8d5", "e169c58d", "bc57ac4c", "9b00dbd8"])
    assert.deepStrictEqual(
      hex(Rng.philox([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])),
      ["408f276d", "41c83b0e", "a20bc7c6", "6d5451fd"]
    )
    assert.deepStrictEqual(
      hex(Rng.philox([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
      ["d16cfe09", "94fdcceb", "5001e420", "24126ea1"]
    )
  })

  it("a draw depends only on (seed, stream, step, index)", () => {
    const s = Rng.stream(7, "noise")
    assert.deepStrictEqual(Rng.normal(s, 3, 10), Rng.normal(Rng.stream(7, "noise"), 3, 10))
    // A longer draw extends a shorter one: index i does not depend on n.
    assert.deepStrictEqual(Rng.uniform(s, 3, 5), Rng.uniform(s, 3, 9).subarray(0, 5))
    assert.notDeepEqual(Rng.normal(s, 4, 10), Rng.normal(s, 3, 10))
    assert.notDeepEqual(Rng.normal(Rng.stream(8, "noise"), 3, 10), Rng.normal(s, 3, 10))
    assert.notDeepEqual(Rng.normal(Rng.stream(7, "labels"), 3, 10), Rng.normal(s, 3, 10))
    // The key derivation is part of the on-disk contract (resumed runs depend on it).
    assert.deepStrictEqual(Rng.stream(0, "noise").key, Rng.stream(0, "noise").key)
    assert.notDeepEqual(Rng.child(s, "a").key, Rng.child(s, "b").key)
  })

  it("moments of 1e5 draws", () => {
    const s = Rng.stream(1, "moments")
    const n = 100_000
    const normal = moments(Rng.normal(s, 0, n))
    assert.closeTo(normal.mean, 0, 0.01)
    assert.closeTo(normal.variance, 1, 0.02)
    const uniform = Rng.uniform(s, 1, n)
    const u = moments(uniform)
    assert.closeTo(u.mean, 0.5, 0.005)
    assert.closeTo(u.variance, 1 / 12, 0.002)
    assert.isTrue(uniform.every((x) => x > 0 && x < 1))
    const gumbel = moments(Rng.gumbel(s, 2, n))
    assert.closeTo(gumbel.mean, 0.5772156649, 0.02)
    assert.closeTo(gumbel.variance, Math.PI ** 2 / 6, 0.05)
    const ints = Rng.integers(s, 3, n, -3, 4)
    const counts = new Map<number, number>()
    for (const i of ints) counts.set(i, (counts.get(i) ?? 0) + 1)
    assert.deepStrictEqual([...counts.keys()].sort((a, b) => a - b), [-3, -2, -1, 0, 1, 2, 3])
    for (const c of counts.values()) assert.closeTo(c / n, 1 / 7, 0.01)
  })

  it("permutations are permutations, and uniformly spread", () => {
    const s = Rng.stream(2, "perm")
    const firsts = new Array(5).fill(0)
    for (let step = 0; step < 5000; step++) {
      const p = Rng.permutation(s, step, 5)
      assert.deepStrictEqual([...p].sort(), [0, 1, 2, 3, 4])
      firsts[p[0]!]++
    }
    for (const c of firsts) assert.closeTo(c / 5000, 0.2, 0.03)
  })

  it.effect("device tensors hold the same bits on every backend", () =>
    Effect.gen(function*() {
      const s = Rng.stream(3, "device")
      const expected = Rng.normal(s, 0, 1000)
      for (const layer of [Compute.wasm, Compute.cpu]) {
        const values = yield* Effect.gen(function*() {
          const compute = yield* Compute
          const t = Rng.normalTensor(s, 0, [10, 100])
          const v = yield* compute.read(t)
          t.dispose()
          return v
        }).pipe(Effect.provide(layer))
        assert.deepStrictEqual(values, expected)
      }
    }))
})
