import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as AdamW from "./AdamW.ts"
import { type AdapterInfo, describeAdapter, type StartedBackend } from "./backends.ts"
import { type BackendName, Compute } from "./Compute.ts"
import * as WebGpuFixture from "./fixtures/WebGpu.ts"
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

/**
 * 100 steps of the proxy MLP under `compute.scoped`: live tensors, their bytes
 * and the device's allocation after each step.
 */
const hundredSteps = Effect.gen(function*() {
  const compute = yield* Compute
  let params = ProxyMlp.init(shape, 1)
  const { x, y } = ProxyMlp.batch(shape, 1)
  const before = yield* compute.memory
  const after: Array<{ tensors: number; bytes: number; deviceBytes: number | undefined }> = []
  for (let i = 0; i < 100; i++) {
    const next = yield* compute.scoped(Effect.gen(function*() {
      const step = ProxyMlp.sgdStep(params, x, y, 1e-2)
      yield* compute.read(step.loss)
      return step.params
    }))
    ParamTree.dispose(params)
    params = next
    after.push(yield* compute.memory)
  }
  ParamTree.dispose([params, x, y])
  return { before, after }
})

/** A machine for `Compute.autoWith`: what each backend starts as there, or why it does not. */
const machine = (backends: Partial<Record<BackendName, StartedBackend | string>>) => async (name: BackendName): Promise<StartedBackend> => {
  const found = backends[name] ?? `${name} is not on this machine`
  if (typeof found === "string") throw new Error(found)
  return found
}

/** Adapters as Dawn describes them: a datacentre GPU, Mesa's and Google's CPU rasterisers, GPUs on Mesa's hardware drivers. */
const adapters = {
  h100: { vendor: "nvidia", architecture: "hopper", device: "", description: "NVIDIA H100 80GB HBM3", isFallbackAdapter: false },
  // This machine's lavapipe, as Dawn reported it.
  lavapipe: {
    vendor: "mesa",
    architecture: "software",
    device: "llvmpipe-llvm-15-0-6-256-bits-",
    description: "llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1",
    isFallbackAdapter: true
  },
  // A Dawn build from before isFallbackAdapter: the name tells.
  swiftshader: { vendor: "google", architecture: "", device: "", description: "SwiftShader Device (Subzero)" },
  radeon: { vendor: "amd", architecture: "rdna-2", device: "", description: "AMD Radeon RX 6800 (RADV NAVI21)" },
  intel: { vendor: "intel", architecture: "gen-12lp", device: "", description: "Intel(R) UHD Graphics 770 (ADL-S GT1)", isFallbackAdapter: false }
} satisfies Record<string, AdapterInfo>

const wasmLike: StartedBackend = { device: "WebAssembly SIMD (faked)", hardware: false }

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

  it.effect("auto, on machines faked by their adapters: a hardware GPU wins, software rasterisers are passed over with the reason", () =>
    Effect.gen(function*() {
      for (const [name, info] of Object.entries(adapters)) {
        const { hardware, device } = describeAdapter(info)
        assert.strictEqual(hardware, ["h100", "radeon", "intel"].includes(name), name)
        assert.strictEqual(device, `WebGPU on ${info.description}${hardware ? "" : " (software)"}`)
      }
      const pick = (backends: Partial<Record<BackendName, StartedBackend | string>>) =>
        Effect.gen(function*() {
          const c = yield* Compute
          return { backend: c.backend, device: c.device, hardware: c.hardware, skipped: c.skipped }
        }).pipe(Effect.provide(Compute.autoWith(machine(backends))))
      const gpu = { ...describeAdapter(adapters.h100), teardown: () => {} }
      const h100 = yield* pick({ webgpu: gpu, wasm: wasmLike })
      assert.deepStrictEqual([h100.backend, h100.device, h100.hardware], ["webgpu", "WebGPU on NVIDIA H100 80GB HBM3", true])
      assert.deepStrictEqual(h100.skipped.map((s) => s.backend), ["node-gpu"])
      const lavapipe = yield* pick({ webgpu: describeAdapter(adapters.lavapipe), wasm: wasmLike })
      assert.strictEqual(lavapipe.backend, "wasm")
      assert.deepStrictEqual(lavapipe.skipped.map((s) => s.backend), ["node-gpu", "webgpu", "node"])
      assert.strictEqual(
        lavapipe.skipped[1]!.reason,
        "only a software adapter (WebGPU on llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1 (software)); wasm is faster on the same CPU"
      )
      assert.strictEqual((yield* pick({ webgpu: describeAdapter(adapters.swiftshader), wasm: wasmLike })).backend, "wasm")
      assert.strictEqual((yield* pick({ webgpu: describeAdapter(adapters.radeon), wasm: wasmLike })).backend, "webgpu")
      const noVulkan = yield* pick({ webgpu: "Dawn found no WebGPU adapter (no Vulkan device; install a Vulkan driver)", wasm: wasmLike })
      assert.strictEqual(noVulkan.backend, "wasm")
      assert.strictEqual(noVulkan.skipped[1]!.reason, "Dawn found no WebGPU adapter (no Vulkan device; install a Vulkan driver)")
      // tfjs-node-gpu, where it installs, comes first; nothing at all is a typed error naming every reason.
      assert.strictEqual((yield* pick({ "node-gpu": { device: "CUDA (faked)", hardware: true }, webgpu: gpu, wasm: wasmLike })).backend, "node-gpu")
      const none = yield* Effect.flip(pick({}))
      assert.match(none.message, /^backend auto is unavailable: node-gpu: node-gpu is not on this machine; webgpu: .*; cpu: cpu is not on this machine$/)
    }))

  it.effect("tidy and scoped release every intermediate tensor: flat memory over 100 training steps", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const { before, after } = yield* hundredSteps
      for (const m of after) assert.deepStrictEqual([m.tensors, m.bytes], [before.tensors, before.bytes])
      const settled = (yield* compute.memory).tensors
      const kept = compute.tidy(() => tf.add(tf.ones([4]), 1))
      assert.strictEqual((yield* compute.memory).tensors, settled + 1)
      kept.dispose()
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the same 3-step training gives the same losses on wasm and cpu (1e-4)", () =>
    Effect.gen(function*() {
      const wasm = yield* threeSteps.pipe(Effect.provide(Compute.wasm))
      const cpu = yield* threeSteps.pipe(Effect.provide(Compute.cpu))
      assert.isTrue(wasm[2]! < wasm[0]!, `training lowers the loss: ${wasm}`)
      for (let i = 0; i < 3; i++) assert.closeTo(cpu[i]!, wasm[i]!, 1e-4)
    }), 120_000)

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("work the device rejects fails the next read, naming why, rather than reading zeros; the device goes on", () =>
      Effect.gen(function*() {
        const compute = yield* Compute
        // 38 M floats: 152 MB, past lavapipe's largest storage binding (128 MiB; hardware GPUs allow GiBs).
        const big = 38_000_000
        const failed = yield* Effect.flip(compute.scoped(compute.read(tf.slice(tf.add(tf.fill([big], 1.5), 1), [big - 2], [2]))))
        assert.strictEqual(failed._tag, "ComputeError")
        assert.match(failed.message, /the GPU rejected work queued before this read: .*maximum storage buffer binding size/)
        assert.deepStrictEqual(Array.from(yield* compute.scoped(compute.read(tf.add(tf.ones([2]), 1)))), [2, 2])
      }).pipe(Effect.provide(Compute.webgpu)), 60_000)

    it.effect("the same 3-step training gives wasm's losses (1e-4)", () =>
      Effect.gen(function*() {
        const wasm = yield* threeSteps.pipe(Effect.provide(Compute.wasm))
        const gpu = yield* threeSteps.pipe(Effect.provide(Compute.webgpu))
        for (let i = 0; i < 3; i++) assert.closeTo(gpu[i]!, wasm[i]!, 1e-4)
      }), 120_000)

    it.effect("GPU buffers are released: tensors, bytes and the device's allocation flat over 100 training steps", () =>
      Effect.gen(function*() {
        const { before, after } = yield* hundredSteps
        for (const m of after) assert.deepStrictEqual([m.tensors, m.bytes], [before.tensors, before.bytes])
        // tfjs pools released buffers for reuse: the allocation never passes the peak of the first 50 steps.
        const peak = (ms: typeof after) => Math.max(...ms.map((m) => m.deviceBytes!))
        assert.isAbove(peak(after.slice(0, 50)), 0)
        assert.isAtMost(peak(after.slice(50)), peak(after.slice(0, 50)))
      }).pipe(Effect.provide(Compute.webgpu)), 120_000)
  })
})
