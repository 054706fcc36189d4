import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { DiT, Linear } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as BlockStack from "./BlockStack.ts"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Lora from "./Lora.ts"

const config = Fixtures.tiny(3)
const stack = BlockStack.dit({ _tag: "sit" }, config)
const inputs = (b: number) => ({
  x: tf.tensor4d(Rng.normal(Rng.stream(0, "test/x"), 0, b * 64), [b, 4, 4, 4]),
  t: Array.from({ length: b }, (_, i) => i / b),
  y: Array.from({ length: b }, (_, i) => i % 3)
})

describe("LoRA", () => {
  it.effect("every Linear the forward applies has an adapter: A in ±1/√in, B zero; the fresh update changes no bit", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      // Attention qkv and proj, fc1, fc2, adaLN per block; both t-embedder layers; the final linear and its adaLN.
      assert.strictEqual(stack.linears.length, 5 * 3 + 4)
      const seen = new Set<string>()
      const params = HostTensor.treeToTensors(Fixtures.random(config, 0))
      const recording: Linear.Apply = (path, layer, x) => (seen.add(path), Linear.apply(path, layer, x))
      compute.tidy(() => DiT.forward(config, params, inputs(2), { linear: recording }))
      assert.deepStrictEqual([...seen].sort(), stack.linears.map((l) => l.path).sort())

      const host = Lora.init(stack.linears, 4, 7)
      const flat = new Map(ParamTree.flatten(host, HostTensor.isHostTensor))
      assert.strictEqual(flat.size, 2 * stack.linears.length)
      for (const { path, inFeatures, outFeatures } of stack.linears) {
        const a = flat.get(`${path}.lora_a.weight`)!
        const b = flat.get(`${path}.lora_b.weight`)!
        assert.deepStrictEqual(a.shape, [4, inFeatures])
        assert.deepStrictEqual(b.shape, [outFeatures, 4])
        const bound = 1 / Math.sqrt(inFeatures)
        assert.isTrue(a.data.every((v) => Math.abs(v) <= bound) && new Set(a.data).size === a.data.length, path)
        assert.isTrue(b.data.every((v) => v === 0), path)
      }
      const adapters = HostTensor.treeToTensors(host)
      const [plain, adapted] = yield* compute.scoped(Effect.gen(function*() {
        const x = inputs(3)
        return [
          yield* HostTensor.fromTensor(DiT.forward(config, params, x)),
          yield* HostTensor.fromTensor(DiT.forward(config, params, x, { linear: Lora.linear(adapters, 2) }))
        ] as const
      }))
      assert.isTrue(HostTensor.bitEqual(plain, adapted))
      ParamTree.dispose([params, adapters])
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the adapted Linear is x·(W + s·B·A)ᵀ + b (hand-computed in float64)", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const [out, inp, r, s] = [3, 4, 2, 2]
      const w = Rng.normal(Rng.stream(0, "test/w"), 0, out * inp)
      const bias = Rng.normal(Rng.stream(0, "test/b"), 0, out)
      const a = Rng.normal(Rng.stream(0, "test/a"), 0, r * inp)
      const b = Rng.normal(Rng.stream(0, "test/bb"), 0, out * r)
      const x = Rng.normal(Rng.stream(0, "test/xx"), 0, 2 * inp)
      const adapters = { layer: { lora_a: { weight: tf.tensor2d(a, [r, inp]) }, lora_b: { weight: tf.tensor2d(b, [out, r]) } } }
      const y = yield* compute.read(compute.tidy(() =>
        Lora.linear(adapters, s)("layer", { weight: tf.tensor2d(w, [out, inp]), bias: tf.tensor1d(bias) }, tf.tensor2d(x, [2, inp]))
      ))
      for (let n = 0; n < 2; n++) {
        for (let o = 0; o < out; o++) {
          let expected = bias[o]!
          for (let i = 0; i < inp; i++) {
            let delta = 0
            for (let k = 0; k < r; k++) delta += b[o * r + k]! * a[k * inp + i]!
            expected += x[n * inp + i]! * (w[o * inp + i]! + s * delta)
          }
          assert.closeTo(y[n * out + o]!, expected, 1e-5)
        }
      }
      ParamTree.dispose(adapters)
    }).pipe(Effect.provide(Compute.wasm)))
})
