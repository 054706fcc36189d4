import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng } from "@tinyfusion/tensor"
import * as Matrix from "./Matrix.ts"
import * as PrecisionRecall from "./PrecisionRecall.ts"

const points = (xy: ReadonlyArray<readonly [number, number]>) => Matrix.make(xy.length, 2, Float32Array.from(xy.flat()))

/** Axis-aligned square of side s with its lower-left corner at (x, y). */
const square = (x: number, y: number, s: number): Array<readonly [number, number]> => [[x, y], [x + s, y], [x, y + s], [x + s, y + s]]

// Reference: three squares of side 2, far apart. Within a square the squared distances from a
// corner are 0 (itself), 4, 4, 8, and every other point is ≥ 18² away, so every reference radius
// (3rd neighbour, the point itself being the 0th) is 8.
//   A at (0, 0), B at (20, 0), C at (0, 50).
const reference = points([...square(0, 0, 2), ...square(20, 0, 2), ...square(0, 50, 2)])
// Samples: two squares of side 4 (distances 0, 16, 16, 32: every sample radius is 32),
//   S₁ at (−1, −1), around A; S₂ at (18, 4), above B. The two are at least 15² + 1² = 226 > 32 apart.
const samples = points([...square(-1, -1, 4), ...square(18, 4, 4)])
// Precision (samples within 8 of a reference point):
//   S₁: (−1,−1)→(0,0), (3,−1)→(2,0), (−1,3)→(0,2), (3,3)→(2,2), each at 1 + 1 = 2: 4 in.
//   S₂: (18,4)→(20,2) at 4 + 4 = 8 (on the boundary: in); (22,4)→(22,2) at 4: in;
//       (18,8)→(20,2) at 4 + 36 = 40, (22,8)→(22,2) at 36: out.  Precision = 6/8.
// Recall (reference points within 32 of a sample):
//   A: each at 2 from a corner of S₁: 4 in. B: (20,0)→(18,4) at 4 + 16 = 20, (22,0)→(22,4) at 16,
//   (20,2)→(18,4) at 8, (22,2)→(22,4) at 4: 4 in. C: ≥ 47² from everything: out. Recall = 8/12.
describe("PrecisionRecall", () => {
  it.effect("radii and the hand-worked 2-D example, in one block and in blocks of 3", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual([...(yield* PrecisionRecall.radii("reference", reference))], new Array(12).fill(8))
      assert.deepStrictEqual([...(yield* PrecisionRecall.radii("samples", samples, { blockSize: 3 }))], new Array(8).fill(32))
      for (const blockSize of [1024, 3]) {
        const pr = yield* PrecisionRecall.compute(reference, samples, { blockSize })
        assert.strictEqual(pr.precision, 6 / 8)
        assert.strictEqual(pr.recall, 8 / 12)
      }
      // Swapping the roles swaps the answers.
      const swapped = yield* PrecisionRecall.compute(samples, reference)
      assert.strictEqual(swapped.precision, 8 / 12)
      assert.strictEqual(swapped.recall, 6 / 8)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("coverage by group: which squares' balls hold each point; shares over drawn groups and weighted rows", () =>
    Effect.gen(function*() {
      const radii = { reference: new Float32Array(12).fill(8), samples: new Float32Array(8).fill(32) }
      // Reference groups A, B, C; sample groups S₁, S₂ (the squares above).
      for (const blockSize of [1024, 3]) {
        const c = yield* PrecisionRecall.coverage(
          { features: reference, radii: radii.reference, groups: Int32Array.of(0, 4, 8, 12) },
          { features: samples, radii: radii.samples, groups: Int32Array.of(0, 4, 8) },
          { blockSize }
        )
        // S₁'s corners lie in A's balls (bit 0), S₂'s lower two in B's (bit 1), its upper two in none.
        assert.deepStrictEqual([...c.samples], [1, 1, 1, 1, 2, 2, 0, 0])
        // A lies in S₁'s balls, B in S₂'s, C in none.
        assert.deepStrictEqual([...c.reference], [1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0])
        assert.deepStrictEqual(PrecisionRecall.shares(c), { precision: 6 / 8, recall: 8 / 12 })
        // Only B's balls and S₁'s drawn: S₂'s lower two are covered, and A.
        const drawn = { reference: Uint32Array.of(2), samples: Uint32Array.of(1) }
        assert.deepStrictEqual(PrecisionRecall.shares(c, drawn), { precision: 2 / 8, recall: 4 / 12 })
        // S₁ drawn twice and S₂ not, C three times and A, B not (weights of rows), all balls drawn:
        // precision over S₁'s 8 weighted rows, all covered; recall over C's 12, none covered.
        const weights = { samples: [2, 2, 2, 2, 0, 0, 0, 0], reference: [0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3] }
        const all = { reference: PrecisionRecall.allGroups(3), samples: PrecisionRecall.allGroups(2) }
        assert.deepStrictEqual(PrecisionRecall.shares(c, all, weights), { precision: 1, recall: 0 })
      }
      const bad = yield* Effect.flip(PrecisionRecall.coverage({ features: reference, radii: radii.reference, groups: Int32Array.of(0, 4, 4, 12) }, {
        features: samples,
        radii: radii.samples
      }))
      assert.match(bad.message, /reference groups.*offsets \[0,4,4,12\] do not cut 12 rows into non-empty groups/)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("precision = recall = 1 for identical sets, leaving no tensors behind; k is a parameter", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const before = (yield* compute.memory).tensors
      const features = Matrix.make(150, 16, Rng.normal(Rng.stream(0, "pr"), 0, 150 * 16))
      const pr = yield* PrecisionRecall.compute(features, features, { blockSize: 64 })
      assert.deepStrictEqual(pr, { precision: 1, recall: 1 })
      assert.strictEqual((yield* compute.memory).tensors, before, "no tensor outlives the computation")
      // k = 1 on four collinear points 0, 1, 3, 7: nearest neighbours at 1, 1, 2, 4, squared.
      const line = points([[0, 0], [1, 0], [3, 0], [7, 0]])
      assert.deepStrictEqual([...(yield* PrecisionRecall.radii("line", line, { k: 1 }))], [1, 1, 4, 16])
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("too few points, mismatched columns and bad options are typed errors", () =>
    Effect.gen(function*() {
      const fails = <A>(e: Effect.Effect<A, unknown, Compute>) =>
        Effect.flip(e).pipe(Effect.map((x) => (x as { readonly message: string }).message))
      assert.match(yield* fails(PrecisionRecall.radii("samples", points([[0, 0], [1, 1], [2, 2]]))), /samples.*3 rows, at least 4 needed/)
      assert.match(yield* fails(PrecisionRecall.compute(reference, Matrix.make(4, 3, new Float32Array(12)))), /samples.*3 columns, expected 2/)
      assert.match(yield* fails(PrecisionRecall.compute(reference, samples, { k: 0 })), /k must be a positive integer, got 0/)
    }).pipe(Effect.provide(Compute.wasm)))
})
