import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as AdamW from "./AdamW.ts"
import { Compute } from "./Compute.ts"
import * as Ema from "./Ema.ts"
import * as WebGpuFixture from "./fixtures/WebGpu.ts"
import * as Fused from "./Fused.ts"
import * as FusedKernels from "./FusedKernels.ts"
import * as Gradients from "./Gradients.ts"
import * as ParamTree from "./ParamTree.ts"
import * as Rng from "./Rng.ts"
import { tf } from "./tf.ts"

const size = (shape: ReadonlyArray<number>) => shape.reduce((p, d) => p * d, 1)

const assertClose = (label: string, actual: Float32Array, expected: Float32Array, tolerance = 1e-4) => {
  assert.strictEqual(actual.length, expected.length, `${label}: length`)
  for (let i = 0; i < actual.length; i++) {
    const bound = tolerance * (1 + Math.abs(expected[i]!))
    if (!(Math.abs(actual[i]! - expected[i]!) <= bound)) assert.fail(`${label}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${bound})`)
  }
}

/** Inputs drawn N(0, 1) (or by `draw`) for each shape. */
const inputs = (seed: number, shapes: ReadonlyArray<ReadonlyArray<number>>) => {
  const s = Rng.stream(seed, "fused/inputs")
  return shapes.map((shape, i) => tf.tensor(Rng.normal(s, i, size(shape)), [...shape]))
}

/**
 * Value and gradients of L = Σ f(inputs) ⊙ w for w drawn N(0, 1): the op's
 * output and its vector-Jacobian product for every input.
 */
const evaluate = (f: (...xs: Array<tf.Tensor>) => tf.Tensor, xs: ReadonlyArray<tf.Tensor>, seed: number) =>
  tf.tidy(() => {
    const out = f(...xs)
    const w = tf.tensor(Rng.normal(Rng.stream(seed, "fused/weights"), 0, out.size), out.shape)
    const grads = tf.grads((...ys: Array<tf.Tensor>) => tf.sum(tf.mul(f(...ys), w)))([...xs])
    return { shape: out.shape, out: out.dataSync() as Float32Array, grads: grads.map((g) => g.dataSync() as Float32Array) }
  })

/** The kernel (wasm) against the composed ops (also on wasm): values and every gradient. */
const agree = (
  label: string,
  fused: (...xs: Array<tf.Tensor>) => tf.Tensor,
  composed: (...xs: Array<tf.Tensor>) => tf.Tensor,
  shapes: ReadonlyArray<ReadonlyArray<number>>,
  seed: number,
  tolerance = 1e-4
) => {
  assert.isTrue(FusedKernels.active(), "the fused kernels run on wasm")
  const xs = inputs(seed, shapes)
  const a = evaluate(fused, xs, seed)
  const b = evaluate(composed, xs, seed)
  tf.dispose(xs)
  assert.deepStrictEqual(a.shape, b.shape, `${label}: shape`)
  assertClose(`${label}: value`, a.out, b.out, tolerance)
  a.grads.forEach((g, i) => assertClose(`${label}: ∂input ${i}`, g, b.grads[i]!, tolerance))
}

/** Each DiT op on one shape, called as the model calls it: a kernel on wasm, the composed ops elsewhere. */
const ops: ReadonlyArray<{ readonly label: string; readonly f: (...xs: Array<tf.Tensor>) => tf.Tensor; readonly shapes: ReadonlyArray<ReadonlyArray<number>> }> = [
  { label: "linear", f: (x, w, b) => Fused.linear(x!, w!, b!), shapes: [[2, 37, 19], [13, 19], [13]] },
  { label: "silu", f: (x) => Fused.silu(x!), shapes: [[2, 9, 5]] },
  { label: "gelu", f: (x) => Fused.gelu(x!), shapes: [[2, 9, 5]] },
  { label: "layerNormModulate", f: (x, mod) => Fused.layerNormModulate(x!, mod!, 3, 4), shapes: [[2, 16, 64], [2, 6 * 64]] },
  { label: "gatedResidual", f: (x, y, mod) => Fused.gatedResidual(x!, y!, mod!, 2), shapes: [[2, 16, 64], [2, 16, 64], [2, 6 * 64]] },
  { label: "attention", f: (qkv) => Fused.attention(qkv!, 4), shapes: [[3, 16, 3 * 4 * 16]] }
]

/** Every op's value and vector-Jacobian products on the layer's backend, read back (webgpu has no synchronous reads). */
const opsOnBackend = Effect.gen(function*() {
  const compute = yield* Compute
  return yield* Effect.forEach(ops, (op, seed) =>
    compute.scoped(Effect.gen(function*() {
      const xs = inputs(seed, op.shapes)
      const out = op.f(...xs)
      const w = tf.tensor(Rng.normal(Rng.stream(seed, "fused/weights"), 0, out.size), out.shape)
      const grads = tf.grads((...ys: Array<tf.Tensor>) => tf.sum(tf.mul(op.f(...ys), w)))(xs)
      return { fused: FusedKernels.active(), value: yield* compute.read(out), grads: yield* Effect.forEach(grads, compute.read) }
    })))
})

const optimiserShapes: Record<string, ReadonlyArray<number>> = { "a.weight": [3, 5], "a.bias": [7], "b.weight": [64, 9] }

/**
 * Three AdamW updates (two groups, one with weight decay, one step clipped) with EMA updates
 * from the same start, on the layer's backend: every tensor after each,
 * and the gradients' global norm.
 */
const optimiserSteps = Effect.gen(function*() {
  const compute = yield* Compute
  const s = Rng.stream(0, "fused/optimiser")
  const tree = (i: number) =>
    ParamTree.unflatten(Object.entries(optimiserShapes).map(([k, sh], j) => [k, tf.tensor(Rng.normal(s, 10 * i + j, size(sh)), [...sh])] as const)) as ParamTree.ParamTree
  const config: AdamW.Config = {
    ...AdamW.defaults,
    groups: [
      { name: "decayed", includes: (k) => k.startsWith("b."), lr: 3e-3, weightDecay: 0.1 },
      { name: "rest", includes: () => true, lr: 1e-3, weightDecay: 0 }
    ]
  }
  let params = tree(0)
  let state = AdamW.init(params)
  // The EMA tracks some of the parameters (as mask learning's does): all but a.bias.
  let ema = ParamTree.clone(ParamTree.unflatten(ParamTree.flattenTensors(params).filter(([k]) => k !== "a.bias")) as ParamTree.ParamTree)
  const tensors: Array<Float32Array> = []
  const norms: Array<number> = []
  for (let step = 1; step <= 3; step++) {
    const grads = tree(step)
    // Step 2 clips (a gradient scale, as Update.apply passes it) and moves the EMA by Ema.update; steps 1 and 3
    // do not clip, and move the EMA inside the update.
    const clip = step === 2 ? tf.scalar(0.37) : undefined
    const next = AdamW.update(config, state, params, grads, { lrScale: 0.5 * step, gradScale: clip, ema: step === 2 ? undefined : { tree: ema, decay: 0.999 } })
    clip?.dispose()
    const nextEma = next.ema ?? Ema.update(ema, next.params, 0.999)
    for (const t of ParamTree.leaves(next.params).concat(ParamTree.leaves(next.state.m), ParamTree.leaves(next.state.v), ParamTree.leaves(nextEma))) {
      tensors.push(yield* compute.read(t))
    }
    const norm = Gradients.globalNorm(grads)
    norms.push((yield* compute.read(norm))[0]!)
    ParamTree.dispose([params, state.m, state.v, ema, grads, norm])
    ;[params, state, ema] = [next.params, next.state, nextEma]
  }
  ParamTree.dispose([params, state.m, state.v, ema])
  return { tensors, norms }
})

const numDataIds = () => (tf.backend() as unknown as { numDataIds(): number }).numDataIds()

describe("Fused", () => {
  it.effect("linear: values and gradients (x, W, b) match x·Wᵀ + b composed, across the kernel's blocking and edges", () =>
    Effect.gen(function*() {
      yield* Compute
      // [x shape, out]: tails of every tile, rank 3, and sizes past one block of rows (64), inner (256) and columns (256).
      const cases: ReadonlyArray<[ReadonlyArray<number>, number]> = [[[3, 5], 7], [[1, 1], 1], [[2, 37, 19], 13], [[64, 64], 192], [[130, 300], 270]]
      cases.forEach(([x, n], i) => {
        const k = x[x.length - 1]!
        agree(`linear ${x}→${n}`, Fused.linear, Fused.composed.linear, [x, [n, k], [n]], i, k > 256 ? 3e-4 : 1e-4)
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("silu and gelu (tanh): values and gradients match the composed activations", () =>
    Effect.gen(function*() {
      yield* Compute
      for (const [i, shape] of [[3], [2, 9, 5], [512, 64]].entries()) {
        agree(`silu ${shape}`, Fused.silu, Fused.composed.silu, [shape], i)
        agree(`gelu ${shape}`, Fused.gelu, Fused.composed.gelu, [shape], 10 + i)
      }
      // Far tails: σ saturates without overflow.
      const x = tf.tensor([-120, -30, 0, 30, 120])
      assertClose("gelu tails", Fused.gelu(x).dataSync() as Float32Array, Float32Array.from([-0, -0, 0, 30, 120]))
      assertClose("silu tails", Fused.silu(x).dataSync() as Float32Array, Float32Array.from([-0, -2.8e-12, 0, 30, 120]))
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("layerNormModulate: values and gradients (x, mod) match LayerNorm then x·(1 + scale) + shift", () =>
    Effect.gen(function*() {
      yield* Compute
      for (const [i, [b, t, d, chunks, shift, scale]] of [[3, 5, 7, 3, 2, 0], [2, 16, 64, 6, 3, 4], [1, 1, 4, 2, 0, 1]].entries()) {
        agree(
          `layerNormModulate [${b},${t},${d}], chunks ${shift},${scale} of ${chunks}`,
          (x, mod) => Fused.layerNormModulate(x!, mod!, shift!, scale!),
          (x, mod) => Fused.composed.layerNormModulate(x!, mod!, shift!, scale!),
          [[b!, t!, d!], [b!, chunks! * d!]],
          20 + i
        )
      }
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("gatedResidual: values and gradients (x, y, mod) match x + gate·y", () =>
    Effect.gen(function*() {
      yield* Compute
      for (const [i, [b, t, d, chunks, gate]] of [[3, 5, 7, 6, 5], [2, 16, 64, 6, 2]].entries()) {
        agree(
          `gatedResidual [${b},${t},${d}], chunk ${gate} of ${chunks}`,
          (x, y, mod) => Fused.gatedResidual(x!, y!, mod!, gate!),
          (x, y, mod) => Fused.composed.gatedResidual(x!, y!, mod!, gate!),
          [[b!, t!, d!], [b!, t!, d!], [b!, chunks! * d!]],
          30 + i
        )
      }
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("attention: values and the gradient of qkv match the composed multi-head softmax attention", () =>
    Effect.gen(function*() {
      yield* Compute
      for (const [i, [b, t, heads, hd]] of [[2, 5, 2, 3], [3, 16, 4, 16], [1, 1, 1, 1], [2, 7, 3, 32]].entries()) {
        agree(
          `attention B=${b} T=${t} heads=${heads} hd=${hd}`,
          (qkv) => Fused.attention(qkv!, heads!),
          (qkv) => Fused.composed.attention(qkv!, heads!),
          [[b!, t!, 3 * heads! * hd!]],
          40 + i
        )
      }
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("bad shapes and chunks are refused with the op's name", () =>
    Effect.gen(function*() {
      yield* Compute
      const x = tf.zeros([2, 3, 4])
      assert.throws(() => Fused.layerNormModulate(x, tf.zeros([2, 12]), 0, 3), /layerNormModulate: chunk 3 is not one of mod's 3/)
      assert.throws(() => Fused.gatedResidual(x, x, tf.zeros([3, 12]), 0), /gatedResidual: .* mod \[3,12\]/)
      assert.throws(() => Fused.attention(tf.zeros([2, 3, 10]), 2), /attention: qkv \[2,3,10\]/)
      assert.throws(() => Fused.linear(x, tf.zeros([5, 3]), tf.zeros([5])), /linear: x \[2,3,4\], weight \[5,3\]/)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("AdamW and the EMA give the same bits as the composed ops; the global norm agrees", () =>
    Effect.gen(function*() {
      const fused = yield* optimiserSteps
      FusedKernels.uninstall()
      const composed = yield* optimiserSteps.pipe(Effect.ensuring(Effect.sync(FusedKernels.install)))
      assert.strictEqual(fused.tensors.length, composed.tensors.length)
      const bits = (t: Float32Array) => Array.from(new Uint32Array(t.buffer))
      fused.tensors.forEach((t, i) => assert.deepStrictEqual(bits(t), bits(composed.tensors[i]!), `tensor ${i}`))
      fused.norms.forEach((n, i) => assert.closeTo(n, composed.norms[i]!, 1e-5 * composed.norms[i]!, `global norm ${i}`))
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("wasm's Identity shares data: a clone outlives its source, and nothing leaks", () =>
    Effect.gen(function*() {
      yield* Compute
      const before = numDataIds()
      const x = tf.tensor([1, 2, 3])
      const y = tf.clone(x)
      x.dispose()
      assert.deepStrictEqual(Array.from(y.dataSync()), [1, 2, 3])
      y.dispose()
      assert.strictEqual(numDataIds(), before)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("on cpu the ops are the composed ones", () =>
    Effect.gen(function*() {
      yield* Compute
      assert.isFalse(FusedKernels.active())
      const [x, w, b] = inputs(50, [[4, 6], [3, 6], [3]])
      assert.deepStrictEqual(Array.from(Fused.linear(x!, w!, b!).dataSync()), Array.from(Fused.composed.linear(x!, w!, b!).dataSync()))
    }).pipe(Effect.provide(Compute.cpu)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("the ops compose there, and give the wasm kernels' values and gradients", () =>
      Effect.gen(function*() {
        const kernels = yield* opsOnBackend.pipe(Effect.provide(Compute.wasm))
        const gpu = yield* opsOnBackend.pipe(Effect.provide(Compute.webgpu))
        ops.forEach((op, i) => {
          assert.isTrue(kernels[i]!.fused, "wasm runs the kernels")
          assert.isFalse(gpu[i]!.fused, "webgpu composes")
          assertClose(`${op.label}: value`, gpu[i]!.value, kernels[i]!.value)
          gpu[i]!.grads.forEach((g, j) => assertClose(`${op.label}: ∂input ${j}`, g, kernels[i]!.grads[j]!))
        })
      }), 120_000)

    it.effect("AdamW, the EMA and the global norm compose there, and give the wasm kernels' values", () =>
      Effect.gen(function*() {
        const kernels = yield* optimiserSteps.pipe(Effect.provide(Compute.wasm))
        const gpu = yield* optimiserSteps.pipe(Effect.provide(Compute.webgpu))
        // One rounding of m̂/(√v̂ + ε) apart at most: WGSL's division and square root need not round as wasm's do.
        gpu.tensors.forEach((t, i) => assertClose(`tensor ${i}`, t, kernels.tensors[i]!, 1e-6))
        gpu.norms.forEach((n, i) => assert.closeTo(n, kernels.norms[i]!, 1e-5 * kernels.norms[i]!, `global norm ${i}`))
      }), 120_000)
  })
})
