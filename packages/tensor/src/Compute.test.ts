import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import * as AdamW from "./AdamW.ts"
import { Compute } from "./Compute.ts"
import * as ParamTree from "./ParamTree.ts"
import * as ProxyMlp from "./ProxyMlp.ts"
import { tf } from "./tf.ts"

// Six layers: twelve leaves, past the 8-input limit that broke tf.addN on WebGPU.
const shape: ProxyMlp.Shape = { layers: 6, tokens: 32, width: 16 }

/** Three AdamW steps of the proxy MLP; the losses as numbers. */
const threeSteps = Effect.gen(function*() {
  const compute = yield* Compute
  let params = ProxyMlp.init(shape, 0)
  let state = AdamW.init(params)
  const { x, y } = ProxyMlp.batch(shape, 0)
  const losses: Array<number> = []
  for (let i = 0; i < 3; i++) {
    const next = ProxyMlp.adamwStep(AdamW.single(1e-2), state, params, x, y, 1.0)
    ParamTree.dispose([params, state.m, state.v])
    params = next.params
    state = next.state
    losses.push((yield* compute.read(next.loss))[0]!)
    next.loss.dispose()
  }
  return losses
})

/** The WebGPU layer where a Vulkan device exists; otherwise the reason there is none. */
const webgpu = Effect.gen(function*() {
  const probe = yield* Effect.exit(Effect.scoped(Layer.build(Compute.webgpu)))
  return Exit.isSuccess(probe) ? undefined : String(Exit.isFailure(probe) ? probe.cause : "")
})

describe("Compute", () => {
  it.effect("each CPU layer reports its backend and device, and releases the engine", () =>
    Effect.gen(function*() {
      for (const [layer, name] of [[Compute.wasm, "wasm"], [Compute.cpu, "cpu"]] as const) {
        const info = yield* Effect.gen(function*() {
          const c = yield* Compute
          assert.strictEqual(tf.getBackend(), name)
          return { backend: c.backend, device: c.device, memory: yield* c.memory }
        }).pipe(Effect.provide(layer))
        assert.strictEqual(info.backend, name)
        assert.match(info.device, name === "wasm" ? /WebAssembly/ : /JavaScript/)
        assert.isTrue(info.memory.processRss > 0)
      }
    }))

  it.effect("one live layer per process", () =>
    Effect.gen(function*() {
      const nested = yield* Effect.flip(Effect.provide(Effect.void, Compute.cpu).pipe(Effect.provide(Compute.wasm)))
      assert.match(nested.message, /another Compute layer \(wasm\) is live/)
    }))

  it.effect("auto picks a backend that initialises and says why it passed over the others", () =>
    Effect.gen(function*() {
      const c = yield* Compute
      assert.include(["node-gpu", "webgpu", "node", "wasm"], c.backend)
      const passed = c.skipped.map((s) => s.backend)
      assert.deepStrictEqual(passed, ["node-gpu", "webgpu", "node", "wasm", "cpu"].slice(0, passed.length))
      for (const s of c.skipped) assert.isAbove(s.reason.length, 0)
    }).pipe(Effect.provide(Compute.auto)))

  it.effect("tidy and scoped release every intermediate tensor: flat memory over 100 training steps", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      let params = ProxyMlp.init(shape, 1)
      const { x, y } = ProxyMlp.batch(shape, 1)
      const before = (yield* compute.memory).tensors
      for (let i = 0; i < 100; i++) {
        const next = yield* compute.scoped(Effect.gen(function*() {
          const step = ProxyMlp.sgdStep(params, x, y, 1e-2)
          yield* compute.read(step.loss)
          return step.params
        }))
        ParamTree.dispose(params)
        params = next
      }
      assert.strictEqual((yield* compute.memory).tensors, before)
      const kept = compute.tidy(() => tf.add(tf.mul(x, 2), 1))
      assert.strictEqual((yield* compute.memory).tensors, before + 1)
      kept.dispose()
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the same 3-step training gives the same losses on wasm, cpu and webgpu (1e-4)", () =>
    Effect.gen(function*() {
      const wasm = yield* threeSteps.pipe(Effect.provide(Compute.wasm))
      const cpu = yield* threeSteps.pipe(Effect.provide(Compute.cpu))
      assert.isTrue(wasm[2]! < wasm[0]!, `training lowers the loss: ${wasm}`)
      for (let i = 0; i < 3; i++) assert.closeTo(cpu[i]!, wasm[i]!, 1e-4)
      const noGpu = yield* webgpu
      if (noGpu !== undefined) {
        console.log(`webgpu part skipped: no Vulkan device (${noGpu})`)
        return
      }
      const gpu = yield* threeSteps.pipe(Effect.provide(Compute.webgpu))
      for (let i = 0; i < 3; i++) assert.closeTo(gpu[i]!, wasm[i]!, 1e-4)
    }), 120_000)
})
