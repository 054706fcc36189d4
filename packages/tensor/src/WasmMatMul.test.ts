import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import * as Rng from "./Rng.ts"
import { tf } from "./tf.ts"
import * as WasmMatMul from "./WasmMatMul.ts"

interface Case {
  readonly name: string
  /** Shapes as passed to tf.matMul (already in transposed layout where asked). */
  readonly a: ReadonlyArray<number>
  readonly b: ReadonlyArray<number>
  readonly transposeA: boolean
  readonly transposeB: boolean
}

const size = (shape: ReadonlyArray<number>) => shape.reduce((p, d) => p * d, 1)

/** Flat index into an operand's batch dims for a broadcast batch index (NumPy rules). */
const operandBatch = (out: ReadonlyArray<number>, own: ReadonlyArray<number>, flat: number): number => {
  const coords = out.map(() => 0)
  for (let axis = out.length - 1, rest = flat; axis >= 0; axis--) {
    coords[axis] = rest % out[axis]!
    rest = Math.floor(rest / out[axis]!)
  }
  const mine = coords.slice(out.length - own.length).map((c, i) => (own[i] === 1 ? 0 : c))
  return mine.reduce((index, c, i) => index * own[i]! + c, 0)
}

/** m, k, n and the broadcast batch dims of a case. */
const dims = (c: Case) => {
  const [ra, rb] = [c.a.length, c.b.length]
  const [m, k] = c.transposeA ? [c.a[ra - 1]!, c.a[ra - 2]!] : [c.a[ra - 2]!, c.a[ra - 1]!]
  const n = c.transposeB ? c.b[rb - 2]! : c.b[rb - 1]!
  const rank = Math.max(ra, rb) - 2
  const pad = (s: ReadonlyArray<number>) => [...Array(rank - s.length).fill(1), ...s]
  const outBatch = pad(c.a.slice(0, -2)).map((d, i) => Math.max(d, pad(c.b.slice(0, -2))[i]!))
  return { m, k, n, outBatch, outShape: [...outBatch, m, n] }
}

/**
 * out = op(a)·op(b) in float64, and the gradients of L = Σ out ⊙ w with
 * respect to a and b, summed over broadcast batch dims.
 */
function reference(c: Case, a: Float32Array, b: Float32Array, w: Float32Array) {
  const { m, k, n, outBatch } = dims(c)
  const batchA = c.a.slice(0, -2)
  const batchB = c.b.slice(0, -2)
  // Element (i, j) of op(x) for batch `bi`, as a flat index into x.
  const ia = (bi: number, i: number, j: number) => bi * m * k + (c.transposeA ? j * m + i : i * k + j)
  const ib = (bi: number, i: number, j: number) => bi * k * n + (c.transposeB ? j * k + i : i * n + j)
  const out = new Float64Array(size(outBatch) * m * n)
  const da = new Float64Array(a.length)
  const db = new Float64Array(b.length)
  for (let bo = 0; bo < size(outBatch); bo++) {
    const [pa, pb] = [operandBatch(outBatch, batchA, bo), operandBatch(outBatch, batchB, bo)]
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const o = (bo * m + i) * n + j
        for (let l = 0; l < k; l++) {
          out[o] += a[ia(pa, i, l)]! * b[ib(pb, l, j)]!
          da[ia(pa, i, l)] += w[o]! * b[ib(pb, l, j)]!
          db[ib(pb, l, j)] += a[ia(pa, i, l)]! * w[o]!
        }
      }
    }
  }
  return { out, da, db }
}

const assertClose = (label: string, actual: Float32Array, expected: Float64Array | Float32Array) => {
  assert.strictEqual(actual.length, expected.length, `${label}: length`)
  for (let i = 0; i < actual.length; i++) {
    const tolerance = 1e-4 * (1 + Math.abs(expected[i]!))
    if (!(Math.abs(actual[i]! - expected[i]!) <= tolerance)) {
      assert.fail(`${label}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tolerance})`)
    }
  }
}

/**
 * Random cases: each batch layout (and so each path of the accelerated
 * kernel) under all four transpose combinations, with sizes drawn at random.
 */
const cases = (): ReadonlyArray<Case> => {
  const s = Rng.stream(0, "wasm-matmul/cases")
  const layouts: ReadonlyArray<{ name: string; a: (d: Int32Array) => Array<number>; b: (d: Int32Array) => Array<number>; large?: true }> = [
    { name: "rank 2", a: () => [], b: () => [] },
    { name: "batch · matrix (rank 3 · 2)", a: (d) => [d[0]!], b: () => [] },
    { name: "matrix · batch (rank 2 · 3)", a: () => [], b: (d) => [d[0]!] },
    { name: "1 · n", a: () => [1], b: (d) => [d[0]!] },
    { name: "n · 1", a: (d) => [d[0]!], b: () => [1] },
    { name: "n · n, small", a: (d) => [d[0]!], b: (d) => [d[0]!] },
    { name: "n · n, large", a: (d) => [d[0]!], b: (d) => [d[0]!], large: true },
    { name: "rank 4 · 4", a: (d) => [d[0]!, d[1]!], b: (d) => [d[0]!, d[1]!] },
    { name: "rank 4 · 3", a: (d) => [d[0]!, d[1]!], b: (d) => [d[1]!] },
    { name: "rank 4, [p,1] · [1,q]", a: (d) => [d[0]!, 1], b: (d) => [1, d[1]!], large: true },
    { name: "rank 3 · 4, [q] · [p,q]", a: (d) => [d[1]!], b: (d) => [d[0]!, d[1]!] }
  ]
  return layouts.flatMap((layout, l) =>
    [false, true].flatMap((transposeA) =>
      [false, true].map((transposeB): Case => {
        const step = l * 4 + Number(transposeA) * 2 + Number(transposeB)
        const batch = Rng.integers(s, 2 * step, 2, 2, 5)
        // Large cases clear the per-matrix threshold where batch · batch products loop over XNNPACK calls.
        const [m, n, k] = layout.large ? Rng.integers(s, 2 * step + 1, 3, 26, 34) : Rng.integers(s, 2 * step + 1, 3, 1, 9)
        return {
          name: `${layout.name}, transposeA=${transposeA}, transposeB=${transposeB}`,
          a: [...layout.a(batch), ...(transposeA ? [k!, m!] : [m!, k!])],
          b: [...layout.b(batch), ...(transposeB ? [n!, k!] : [k!, n!])],
          transposeA,
          transposeB
        }
      })
    )
  )
}

/**
 * Whether tfjs's own kernels compute this product: they flatten batch dims,
 * so they need equal batch dims or a batch of one on a side.
 */
const tfjsHandles = (c: Case) => {
  const { outBatch } = dims(c)
  const [ba, bb] = [size(c.a.slice(0, -2)), size(c.b.slice(0, -2))]
  return ba === 1 || bb === 1 || (ba === size(outBatch) && bb === size(outBatch))
}

/** Value and gradients of Σ matMul(a, b) ⊙ w on the registered kernels. */
const evaluate = (c: Case, a: tf.Tensor, b: tf.Tensor, w: tf.Tensor) =>
  tf.tidy(() => {
    const out = tf.matMul(a, b, c.transposeA, c.transposeB)
    const [da, db] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, c.transposeA, c.transposeB), w)))([a, b])
    return { shape: out.shape, out: out.dataSync() as Float32Array, da: da!.dataSync() as Float32Array, db: db!.dataSync() as Float32Array }
  })

const numDataIds = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds()

describe("WasmMatMul", () => {
  it.effect("values and gradients agree with float64 and with tfjs's kernels: every path, all four transposes, broadcast batches", () =>
    Effect.gen(function*() {
      yield* Compute
      assert.isTrue(WasmMatMul.installed())
      const s = Rng.stream(0, "wasm-matmul/values")
      const all = cases()
      for (const [i, c] of all.entries()) {
        const data = [Rng.normal(s, 3 * i, size(c.a)), Rng.normal(s, 3 * i + 1, size(c.b))] as const
        const { outShape } = dims(c)
        const w = Rng.normal(s, 3 * i + 2, size(outShape))
        const host = reference(c, data[0], data[1], w)
        const [a, b, wt] = [tf.tensor(data[0], [...c.a]), tf.tensor(data[1], [...c.b]), tf.tensor(w, outShape)]
        const fast = evaluate(c, a, b, wt)
        assert.deepStrictEqual(fast.shape, outShape, c.name)
        assertClose(`${c.name}: value`, fast.out, host.out)
        assertClose(`${c.name}: ∂a`, fast.da, host.da)
        assertClose(`${c.name}: ∂b`, fast.db, host.db)
        if (tfjsHandles(c)) {
          WasmMatMul.uninstall()
          const slow = evaluate(c, a, b, wt)
          WasmMatMul.install()
          assertClose(`${c.name}: value vs tfjs`, fast.out, slow.out)
          assertClose(`${c.name}: ∂a vs tfjs`, fast.da, slow.da)
          assertClose(`${c.name}: ∂b vs tfjs`, fast.db, slow.db)
        }
        tf.dispose([a, b, wt])
      }
      assert.strictEqual(all.length, 44)
    }).pipe(Effect.ensuring(Effect.sync(WasmMatMul.install)), Effect.provide(Compute.wasm)), 60_000)

  it.effect("fused matMul: bias (per column or scalar) and each activation, with gradients", () =>
    Effect.gen(function*() {
      yield* Compute
      const s = Rng.stream(0, "wasm-matmul/fused")
      const [m, k, n] = [5, 7, 3]
      const a = Rng.normal(s, 0, m * k)
      const b = Rng.normal(s, 1, n * k)
      const bias = Rng.normal(s, 2, n)
      const alpha = Rng.uniform(s, 3, n)
      // b is passed as [n, k] with transposeB: the product x·Wᵀ of nn.Linear.
      const z = (i: number, j: number, perColumn: boolean) => {
        let sum = perColumn ? bias[j]! : bias[0]!
        for (let l = 0; l < k; l++) sum += a[i * k + l]! * b[j * k + l]!
        return sum
      }
      const activations: Record<string, (x: number, j: number) => number> = {
        linear: (x) => x,
        relu: (x) => Math.max(x, 0),
        relu6: (x) => Math.min(Math.max(x, 0), 6),
        elu: (x) => (x >= 0 ? x : Math.exp(x) - 1),
        sigmoid: (x) => 1 / (1 + Math.exp(-x)),
        leakyrelu: (x) => (x >= 0 ? x : 0.1 * x),
        prelu: (x, j) => (x >= 0 ? x : alpha[j]! * x)
      }
      for (const perColumn of [true, false]) {
        for (const [activation, f] of Object.entries(activations)) {
          const got = tf.tidy(() =>
            tf.fused.matMul({
              a: tf.tensor(a, [m, k]),
              b: tf.tensor(b, [n, k]),
              transposeB: true,
              bias: perColumn ? tf.tensor(bias) : tf.tensor([bias[0]!]),
              activation: activation as tf.fused.Activation,
              preluActivationWeights: tf.tensor(alpha),
              leakyreluAlpha: 0.1
            }).dataSync() as Float32Array
          )
          const want = Float64Array.from({ length: m * n }, (_, o) => f(z(Math.floor(o / n), o % n, perColumn), o % n))
          assertClose(`${activation}, ${perColumn ? "bias per column" : "scalar bias"}`, got, want)
        }
      }
      // Gradients through relu: ∂L/∂bias_j = Σ_i [z_ij > 0] for L = Σ relu(z).
      const [, , dBias] = tf.grads((x: tf.Tensor, y: tf.Tensor, c: tf.Tensor) =>
        tf.sum(tf.fused.matMul({ a: x, b: y, transposeB: true, bias: c, activation: "relu" }))
      )([tf.tensor(a, [m, k]), tf.tensor(b, [n, k]), tf.tensor(bias)])
      const want = Float64Array.from({ length: n }, (_, j) => Array.from({ length: m }, (_, i) => Number(z(i, j, true) > 0)).reduce((p, q) => p + q, 0))
      assertClose("∂bias", dBias!.dataSync() as Float32Array, want)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("every path releases its intermediate wasm buffers", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const before = numDataIds()
      for (const c of cases().filter((c) => c.transposeA && c.transposeB)) {
        compute.tidy(() => tf.matMul(tf.ones([...c.a]), tf.ones([...c.b]), true, true).dataSync())
      }
      assert.strictEqual(numDataIds(), before)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("empty products are zeros of the broadcast shape", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const out = compute.tidy(() => tf.matMul(tf.ones([2, 3, 0]), tf.ones([1, 0, 4])))
      assert.deepStrictEqual(out.shape, [2, 3, 4])
      assert.deepStrictEqual(Array.from(out.dataSync()), Array(24).fill(0))
      out.dispose()
    }).pipe(Effect.provide(Compute.wasm)))
})
