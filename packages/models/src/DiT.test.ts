import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, FusedKernels, Gradients, HostTensor, ParamTree, Rng, tf, tidy, WebGpuFixture } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as DiT from "./DiT.ts"
import * as Embeddings from "./Embeddings.ts"
import * as Init from "./Init.ts"
import * as Linear from "./Linear.ts"
import * as Fixtures from "./fixtures/Tiny.ts"

const tiny: Config.Config = Fixtures.tiny

/** Every parameter N(0, 0.3²) (no zero adaLN or final layer), so every path of the forward matters. */
const randomHost = (config: Config.Config, seed: number): Map<string, HostTensor.HostTensor> =>
  new Map(StateDict.referenceShapes(config).map(([key, shape]) => {
    const n = HostTensor.numel(shape)
    const values = key === "pos_embed"
      ? Embeddings.positionEmbedding(config.hiddenSize, Config.gridSize(config))
      : Rng.normal(Rng.stream(seed, `test/${key}`), 0, n).map((v) => v * 0.3)
    return [key, HostTensor.float32(shape, values)] as const
  }))

const upload = (flat: Map<string, HostTensor.HostTensor>) =>
  HostTensor.treeToTensors(ParamTree.unflatten([...flat]))

/**
 * DiT.forward transcribed from the PyTorch reference in float64 loops: NCHW
 * conv patch embedding, qkv reshaped (3, heads, head_dim), chunk order of
 * adaLN, and unpatchify's einsum "nhwpqc->nchpwq". Input and output NHWC.
 */
function referenceForward(
  config: Config.Config,
  w: Map<string, HostTensor.HostTensor>,
  x: Float32Array,
  t: ReadonlyArray<number>,
  y: ReadonlyArray<number>
): Float64Array {
  const get = (k: string) => w.get(k)!.data as Float32Array
  const [D, p, C, S] = [config.hiddenSize, config.patchSize, config.inChannels, config.inputSize]
  const G = S / p
  const T = G * G
  const H = config.numHeads
  const hd = Config.headDim(config)
  const A = H * hd
  const Cout = Config.outChannels(config)
  const lin = (key: string, v: ArrayLike<number>, out: number) => {
    const W = get(`${key}.weight`)
    const b = get(`${key}.bias`)
    const inp = v.length
    return Array.from({ length: out }, (_, o) => {
      let s = b[o]!
      for (let i = 0; i < inp; i++) s += W[o * inp + i]! * v[i]!
      return s
    })
  }
  const silu = (v: Array<number>) => v.map((a) => a / (1 + Math.exp(-a)))
  const gelu = (a: number) => 0.5 * a * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (a + 0.044715 * a ** 3)))
  const ln = (v: Array<number>) => {
    const m = v.reduce((s, a) => s + a, 0) / v.length
    const var_ = v.reduce((s, a) => s + (a - m) ** 2, 0) / v.length
    return v.map((a) => (a - m) / Math.sqrt(var_ + 1e-6))
  }
  const out = new Float64Array(x.length / C * Cout)
  for (let b = 0; b < t.length; b++) {
    const conv = get("x_embedder.proj.weight")
    const convBias = get("x_embedder.proj.bias")
    const pos = get("pos_embed")
    let tokens = Array.from({ length: T }, (_, k) => {
      const [gy, gx] = [Math.floor(k / G), k % G]
      return Array.from({ length: D }, (_, d) => {
        let s = convBias[d]! + pos[k * D + d]!
        for (let c = 0; c < C; c++) for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) {
          s += conv[((d * C + c) * p + i) * p + j]! * x[((b * S + gy * p + i) * S + gx * p + j) * C + c]!
        }
        return s
      })
    })
    const freq = Array.from({ length: 256 }, (_, i) => {
      const f = Math.exp((-Math.log(10000) * (i % 128)) / 128)
      return i < 128 ? Math.cos(t[b]! * f) : Math.sin(t[b]! * f)
    })
    const tEmb = lin("t_embedder.mlp.2", silu(lin("t_embedder.mlp.0", freq, D)), D)
    const table = get("y_embedder.embedding_table.weight")
    const cond = tEmb.map((v, d) => v + table[y[b]! * D + d]!)
    const modulate = (v: Array<number>, shift: Array<number>, scale: Array<number>) => v.map((a, d) => a * (1 + scale[d]!) + shift[d]!)
    for (let l = 0; l < config.depth; l++) {
      const ada = lin(`blocks.${l}.adaLN_modulation.1`, silu(cond), 6 * D)
      const chunk = (i: number) => ada.slice(i * D, (i + 1) * D)
      const h = tokens.map((v) => modulate(ln(v), chunk(0), chunk(1)))
      const qkv = h.map((v) => lin(`blocks.${l}.attn.qkv`, v, 3 * A))
      const attnOut = Array.from({ length: T }, (_, i) => {
        const o = new Array<number>(A).fill(0)
        for (let head = 0; head < H; head++) {
          const q = (k: number, e: number) => qkv[k]![head * hd + e]!
          const kk = (k: number, e: number) => qkv[k]![A + head * hd + e]!
          const vv = (k: number, e: number) => qkv[k]![2 * A + head * hd + e]!
          const logits = Array.from({ length: T }, (_, j) => {
            let s = 0
            for (let e = 0; e < hd; e++) s += q(i, e) * kk(j, e)
            return s / Math.sqrt(hd)
          })
          const mx = Math.max(...logits)
          const ex = logits.map((a) => Math.exp(a - mx))
          const z = ex.reduce((s, a) => s + a, 0)
          for (let e = 0; e < hd; e++) for (let j = 0; j < T; j++) o[head * hd + e]! += (ex[j]! / z) * vv(j, e)
        }
        return lin(`blocks.${l}.attn.proj`, o, D)
      })
      tokens = tokens.map((v, k) => v.map((a, d) => a + chunk(2)[d]! * attnOut[k]![d]!))
      tokens = tokens.map((v) => {
        const m = modulate(ln(v), chunk(3), chunk(4))
        const mlp = lin(`blocks.${l}.mlp.fc2`, lin(`blocks.${l}.mlp.fc1`, m, Config.mlpHidden(config)).map(gelu), D)
        return v.map((a, d) => a + chunk(5)[d]! * mlp[d]!)
      })
    }
    const ada = lin("final_layer.adaLN_modulation.1", silu(cond), 2 * D)
    const final = tokens.map((v) => lin("final_layer.linear", modulate(ln(v), ada.slice(0, D), ada.slice(D)), p * p * Cout))
    // imgs[n, c, gy·p + pi, gx·p + qi] = x[n, gy, gx, pi, qi, c]
    for (let k = 0; k < T; k++) {
      const [gy, gx] = [Math.floor(k / G), k % G]
      for (let pi = 0; pi < p; pi++) for (let qi = 0; qi < p; qi++) for (let c = 0; c < Cout; c++) {
        out[((b * S + gy * p + pi) * S + gx * p + qi) * Cout + c] = final[k]![(pi * p + qi) * Cout + c]!
      }
    }
  }
  return out
}

const inputs = (config: Config.Config, batch: number, seed: number) => {
  const s = config.inputSize
  const x = Rng.normal(Rng.stream(seed, "test/x"), 0, batch * s * s * config.inChannels)
  return {
    data: x,
    t: Array.from({ length: batch }, (_, i) => [999, 0, 431, 17][i % 4]!),
    y: Array.from({ length: batch }, (_, i) => i % (config.numClasses + 1))
  }
}

describe("DiT", () => {
  // The second shape has the widths of a width-pruned DiT: 3 heads of 5 (attention 15 wide in a 8-wide stream), MLP 7.
  const narrow: Config.Config = { ...tiny, numHeads: 3, headDim: 5, mlpHidden: 7 }
  for (const [name, config] of [["the reference widths", tiny], ["recorded head and MLP widths", narrow]] as const) {
    it.effect(`forward equals a float64 transcription of the PyTorch reference (${name})`, () =>
      Effect.gen(function*() {
        const weights = randomHost(config, 1)
        const params = upload(weights)
        const { data, t, y } = inputs(config, 4, 2)
        const out = tidy(() => DiT.forward(config, params, { x: tf.tensor4d(data, [4, 4, 4, 2]), t, y }))
        assert.deepStrictEqual(out.shape, [4, 4, 4, 4])
        const expected = referenceForward(config, weights, data, t, y)
        const got = out.dataSync()
        let worst = 0
        expected.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got[i]!))))
        assert.isBelow(worst, 2e-4, `max |ours − reference| = ${worst}`)
        assert.isAbove(Math.max(...expected.map(Math.abs)), 0.1, "the reference output is not trivially small")
      }).pipe(Effect.provide(Compute.wasm)))
  }

  it.effect("gates of 1 are the plain model bit for bit; a gate of 0 on block i is the model without block i", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const params = upload(randomHost(tiny, 3))
      const { data, t, y } = inputs(tiny, 3, 4)
      const x = tf.tensor4d(data, [3, 4, 4, 2])
      const before = (yield* compute.memory).tensors
      const plain = tidy(() => DiT.forward(tiny, params, { x, t, y }))
      const ones = tidy(() => DiT.forward(tiny, params, { x, t, y }, { gates: tf.ones([3, 3]) as tf.Tensor2D }))
      assert.deepStrictEqual(ones.dataSync(), plain.dataSync())
      // Sample 0 keeps every block; samples 1 and 2 drop blocks 1 and 0.
      const gates = tf.tensor2d([[1, 1, 1], [1, 0, 1], [0, 1, 1]])
      const mixed = tidy(() => DiT.forwardHidden(tiny, params, { x, t, y }, { gates }))
      const per = (tensor: tf.Tensor, i: number) => {
        const row = tensor.slice([i], [1])
        const values = row.dataSync()
        row.dispose()
        return values
      }
      assert.deepStrictEqual(per(mixed.output, 0), per(plain, 0))
      for (const [sample, dropped] of [[1, 1], [2, 0]] as const) {
        const kept = [0, 1, 2].filter((k) => k !== dropped)
        const pruned = DiT.keepBlocks(tiny, params, kept)
        assert.strictEqual(pruned.config.depth, 2)
        const out = tidy(() => DiT.forward(pruned.config, pruned.params, { x, t, y }))
        assert.deepStrictEqual(per(mixed.output, sample), per(out, sample))
        out.dispose()
        // The dropped block passes its input through: its output state equals its input state.
        assert.deepStrictEqual(per(mixed.hidden[dropped + 1]!, sample), per(mixed.hidden[dropped]!, sample))
      }
      assert.strictEqual(mixed.hidden.length, 4)
      assert.notDeepEqual(per(mixed.hidden[2]!, 0), per(mixed.hidden[1]!, 0))
      tf.dispose([plain, ones, gates, mixed.output, ...mixed.hidden])
      assert.strictEqual((yield* compute.memory).tensors, before)
      assert.throws(() => DiT.keepBlocks(tiny, params, [2, 1]), /ascending and distinct/)
      assert.throws(() => DiT.keepBlocks(tiny, params, [3]), /not in 0..2/)
      assert.throws(() => DiT.forward(tiny, params, { x, t, y }, { gates: tf.ones([3, 2]) as tf.Tensor2D }), /not \[batch 3, depth 3\]/)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("infer is forward bit for bit, keeping only its output", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const params = upload(randomHost(tiny, 5))
      const { data, t, y } = inputs(tiny, 4, 6)
      const x = tf.tensor4d(data, [4, 4, 4, 2])
      const plain = tidy(() => DiT.forward(tiny, params, { x, t, y }))
      const before = (yield* compute.memory).tensors
      const inferred = DiT.infer(tiny, params, { x, t, y })
      assert.strictEqual((yield* compute.memory).tensors, before + 1)
      assert.deepStrictEqual(inferred.dataSync(), plain.dataSync())
      assert.throws(() => DiT.infer({ ...tiny, depth: 2 }, params, { x, t, y }), /hold 3 blocks, the config says depth 2/)
      tf.dispose([x, plain, inferred])
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a Linear override sees every Linear of the network by its state_dict path, and its result is used", () =>
    Effect.gen(function*() {
      const params = upload(randomHost(tiny, 5))
      const { data, t, y } = inputs(tiny, 2, 6)
      const x = tf.tensor4d(data, [2, 4, 4, 2])
      const seen: Array<string> = []
      const plain = tidy(() => DiT.forward(tiny, params, { x, t, y }))
      const traced = tidy(() =>
        DiT.forward(tiny, params, { x, t, y }, { linear: (path, layer, input) => (seen.push(path), Linear.apply(path, layer, input)) }))
      const linears = StateDict.referenceShapes(tiny)
        .map(([k]) => k)
        .filter((k) => k.endsWith(".weight") && !k.startsWith("x_embedder") && !k.startsWith("y_embedder"))
        .map((k) => k.slice(0, -".weight".length))
      assert.deepStrictEqual([...seen].sort(), [...linears].sort())
      assert.deepStrictEqual(traced.dataSync(), plain.dataSync())
      // Zeroing the last block's fc2 through the override is the model with that weight and bias zeroed.
      const zeroed = (path: string, layer: Linear.Params, input: tf.Tensor) =>
        path === "blocks.2.mlp.fc2" ? tf.zeros([...input.shape.slice(0, -1), layer.weight.shape[0]!]) : Linear.apply(path, layer, input)
      const viaOverride = tidy(() => DiT.forward(tiny, params, { x, t, y }, { linear: zeroed }))
      const weights = randomHost(tiny, 5)
      for (const k of ["blocks.2.mlp.fc2.weight", "blocks.2.mlp.fc2.bias"]) {
        const w = weights.get(k)!
        weights.set(k, HostTensor.float32(w.shape, new Float32Array(w.data.length)))
      }
      const edited = tidy(() => DiT.forward(tiny, upload(weights), { x, t, y }))
      assert.deepStrictEqual(viaOverride.dataSync(), edited.dataSync())
      assert.notDeepEqual(viaOverride.dataSync(), plain.dataSync())
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("reference initialisation: output 0, blocks start as identities, the init's distributions", () =>
    Effect.gen(function*() {
      const config = { ...tiny, hiddenSize: 32, numHeads: 4 }
      const host = Init.host(config, 7)
      const flat = new Map(ParamTree.flatten(host, HostTensor.isHostTensor))
      assert.deepStrictEqual([...flat.keys()], StateDict.referenceShapes(config).map(([k]) => k))
      const values = (k: string) => [...flat.get(k)!.data]
      for (const k of flat.keys()) {
        if (k.endsWith(".bias") || k.includes("adaLN_modulation") || k.startsWith("final_layer.linear")) {
          assert.isTrue(values(k).every((v) => v === 0), `${k} is zero`)
        }
      }
      const std = (v: Array<number>) => Math.sqrt(v.reduce((s, a) => s + a * a, 0) / v.length)
      // Xavier-uniform [96, 32]: bound √(6/128); std bound/√3. The conv uses its [32, 2·2·2] view.
      const qkv = values("blocks.0.attn.qkv.weight")
      assert.isAtMost(Math.max(...qkv.map(Math.abs)), Math.sqrt(6 / 128))
      assert.closeTo(std(qkv), Math.sqrt(6 / 128) / Math.sqrt(3), 0.01)
      assert.isAtMost(Math.max(...values("x_embedder.proj.weight").map(Math.abs)), Math.sqrt(6 / 40))
      assert.closeTo(std(values("t_embedder.mlp.0.weight")), 0.02, 0.002)
      assert.closeTo(std(values("y_embedder.embedding_table.weight")), 0.02, 0.006)
      assert.deepStrictEqual(values("pos_embed"), [...Embeddings.positionEmbedding(32, 2)])
      assert.deepStrictEqual(values("blocks.1.mlp.fc1.weight"), [...(new Map(ParamTree.flatten(Init.host(config, 7), HostTensor.isHostTensor)).get("blocks.1.mlp.fc1.weight")!.data)])
      assert.notDeepEqual(values("blocks.1.mlp.fc1.weight"), values("blocks.2.mlp.fc1.weight"))

      const params = Init.params(config, 7)
      const { data, t, y } = inputs(config, 2, 8)
      const run = tidy(() => DiT.forwardHidden(config, params, { x: tf.tensor4d(data, [2, 4, 4, 2]), t, y }))
      assert.isTrue(run.output.dataSync().every((v) => v === 0))
      const first = run.hidden[0]!.dataSync()
      for (const h of run.hidden) assert.deepStrictEqual(h.dataSync(), first)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("configs: presets validate, bad shapes are named", () =>
    Effect.gen(function*() {
      for (const name of Config.presetNames) yield* Config.make(name)
      const xl = yield* Config.make("DiT-XL/2")
      assert.strictEqual(Config.tokens(xl), 256)
      assert.strictEqual(Config.labelRows(xl), 1001)
      assert.strictEqual(Config.outChannels(xl), 8)
      const mini = yield* Config.make("mini", { hiddenSize: 64 })
      assert.strictEqual(Config.tokens(mini), 16)
      const bad = yield* Effect.flip(Config.make("mini", { hiddenSize: 66, patchSize: 3 }))
      assert.match(bad.message, /inputSize 8 is not a multiple of patchSize 3/)
      assert.match(bad.message, /hiddenSize 66 is not divisible by numHeads 4/)
      const negative = yield* Effect.flip(Config.decode({ ...xl, depth: 0 }))
      assert.match(negative.message, /depth/)
      // Recorded widths: any head width, any MLP width; they are what the shapes use.
      const pruned = yield* Config.make("DiT-XL/2", { hiddenSize: 816, numHeads: 11, headDim: 72, mlpHidden: 3264 })
      assert.deepStrictEqual([Config.headDim(pruned), Config.attentionWidth(pruned), Config.mlpHidden(pruned)], [72, 792, 3264])
      assert.deepStrictEqual([Config.headDim(xl), Config.attentionWidth(xl), Config.mlpHidden(xl)], [72, 1152, 4608])
      assert.match(Config.describe(pruned), /hidden 816, heads 11 × 72, MLP 3264, patch 2/)
      const zero = yield* Effect.flip(Config.decode({ ...xl, mlpHidden: 0 }))
      assert.match(zero.message, /mlpHidden/)
    }))

  it.effect("the fused kernels (wasm) and the composed ops (cpu, and webgpu where a Vulkan device exists) give the same forward and gradients", () =>
    Effect.gen(function*() {
      const config = { ...tiny, hiddenSize: 12, depth: 2 }
      const { data, t, y } = inputs(config, 3, 9)
      /** Output and every parameter's gradient of Σ out·w on the layer's backend. */
      const run = Effect.gen(function*() {
        const compute = yield* Compute
        const fused = FusedKernels.active()
        const params = upload(randomHost(config, 11))
        const x = tf.tensor4d(data, [3, 4, 4, 2])
        const { value, grads } = tidy(() => {
          const w = tf.tensor(Rng.normal(Rng.stream(0, "test/fused-weights"), 0, 3 * 4 * 4 * 4), [3, 4, 4, 4])
          const value = DiT.forward(config, params, { x, t, y })
          const { grads } = Gradients.valueAndGrad((p) => tf.sum(tf.mul(DiT.forward(config, p, { x, t, y }), w)) as tf.Scalar, params)
          return { value, grads: ParamTree.flattenTensors(grads) }
        })
        const read = { fused, value: yield* compute.read(value), grads: [] as Array<readonly [string, Float32Array]> }
        for (const [k, g] of grads) read.grads.push([k, yield* compute.read(g)])
        tf.dispose([value, x, ...grads.map(([, g]) => g)])
        ParamTree.dispose(params)
        return read
      })
      const wasm = yield* run.pipe(Effect.provide(Compute.wasm))
      const noGpu = yield* Effect.promise(WebGpuFixture.unavailable)
      const others: Array<readonly [string, Effect.Success<typeof run>]> = [["cpu", yield* run.pipe(Effect.provide(Compute.cpu))]]
      if (noGpu === undefined) others.push(["webgpu", yield* run.pipe(Effect.provide(Compute.webgpu))] as const)
      else console.log(`webgpu part skipped: ${noGpu}`)
      assert.isTrue(wasm.fused)
      const close = (label: string, a: Float32Array, b: Float32Array) => {
        assert.strictEqual(a.length, b.length, label)
        a.forEach((v, i) => assert.closeTo(v, b[i]!, 2e-4 * (1 + Math.abs(b[i]!)), `${label}[${i}]`))
      }
      for (const [name, other] of others) {
        assert.isFalse(other.fused)
        close(`${name} output`, wasm.value, other.value)
        assert.deepStrictEqual(wasm.grads.map(([k]) => k), other.grads.map(([k]) => k))
        wasm.grads.forEach(([k, g], i) => close(`${name} ∂${k}`, g, other.grads[i]![1]))
      }
    }), 120_000)

})
