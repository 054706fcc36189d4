/**
 * Starting each TensorFlow.js backend in Node. Kept apart from the Compute
 * service because each backend has its own start-up quirks.
 */
import * as os from "node:os"
import { tf } from "./tf.ts"
import * as FusedKernels from "./FusedKernels.ts"
import * as NativeGemm from "./NativeGemm.ts"
import * as WasmMatMul from "./WasmMatMul.ts"
import * as WebGpuMatMul from "./WebGpuMatMul.ts"

export interface StartedBackend {
  readonly device: string
  readonly hardware: boolean
  /** Bytes the device holds when the engine's own figures do not say. */
  readonly deviceBytes?: () => number
  readonly teardown?: () => void
}

const cpuModel = (): string => os.cpus()[0]?.model.trim() ?? "unknown CPU"

export async function startBackend(name: "node-gpu" | "webgpu" | "node" | "wasm" | "cpu"): Promise<StartedBackend> {
  switch (name) {
    case "wasm":
      return startWasm()
    case "cpu":
      return startCpu()
    case "webgpu":
      return startWebGpu()
    case "node":
      return startTfjsNode("@tensorflow/tfjs-node", false)
    case "node-gpu":
      return startTfjsNode("@tensorflow/tfjs-node-gpu", true)
  }
}

async function activate(tfName: string): Promise<void> {
  if (!(await tf.setBackend(tfName))) throw new Error(`tfjs could not initialise its ${tfName} backend`)
  await tf.ready()
}

async function startWasm(): Promise<StartedBackend> {
  await import("@tensorflow/tfjs-backend-wasm")
  // Before the backend starts, so every stage on this layer gets the fast kernels.
  WasmMatMul.install()
  FusedKernels.install()
  await activate("wasm")
  const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")
  const backend = tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array; tfjs: { getThreadsCount(): number } } }
  const threads = backend.wasm.tfjs.getThreadsCount()
  return {
    device: `WebAssembly${simd ? " SIMD" : ""}, ${threads} thread${threads === 1 ? "" : "s"} on ${cpuModel()}; ${NativeGemm.describe()}`,
    hardware: false,
    deviceBytes: () => backend.wasm.HEAPU8.byteLength
  }
}

async function startCpu(): Promise<StartedBackend> {
  await activate("cpu")
  // The cpu backend prints an advert for tfjs-node on first use; we choose backends ourselves.
  ;(tf.backend() as unknown as { firstUse: boolean }).firstUse = false
  return { device: `JavaScript on ${cpuModel()}`, hardware: false }
}

/** A WebGPU adapter as Dawn describes it (the spec's GPUAdapterInfo). */
export interface AdapterInfo {
  readonly vendor: string
  readonly architecture: string
  readonly device: string
  readonly description: string
  /** The spec's mark of a software adapter; Dawn builds before it leave it out. */
  readonly isFallbackAdapter?: boolean
}

/**
 * An adapter for people, and whether it is a hardware GPU rather than a
 * rasteriser running on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader, WARP):
 * `Compute.auto` passes over those, wasm being faster on the same CPU.
 */
export const describeAdapter = (info: AdapterInfo): { readonly device: string; readonly hardware: boolean } => {
  const software = info.isFallbackAdapter === true || info.architecture === "software" ||
    /llvmpipe|lavapipe|swiftshader|basic render driver/i.test(`${info.description} ${info.device}`)
  const name = info.description || info.device || info.vendor || "an unnamed adapter"
  return { device: `WebGPU on ${name}${software ? " (software)" : ""}`, hardware: !software }
}

interface GpuLike {
  requestAdapter(options: { powerPreference: string }): Promise<{ readonly info: AdapterInfo } | null>
}

// One Dawn instance per process: instances created per layer and later
// garbage-collected crash the process (SIGSEGV/SIGABRT in Dawn's teardown).
let dawnGpu: GpuLike | undefined

async function startWebGpu(): Promise<StartedBackend> {
  // Mesa's Vulkan loader complains on every start when XDG_RUNTIME_DIR is unset.
  process.env["XDG_RUNTIME_DIR"] ??= os.tmpdir()
  const dawn = await import("webgpu")
  const gpu = (dawnGpu ??= dawn.create([]) as unknown as GpuLike)
  // The adapter tfjs takes too: it asks with the same preference (WEBGPU_USE_LOW_POWER_GPU is off).
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" })
  if (adapter === null) throw new Error("Dawn found no WebGPU adapter (no Vulkan device; install a Vulkan driver)")
  // tfjs-backend-webgpu registers itself at import time only if navigator.gpu exists;
  // Node 22 defines a read-only navigator, so it is replaced rather than assigned.
  Object.assign(globalThis, dawn.globals)
  Object.defineProperty(globalThis, "navigator", { value: { gpu }, configurable: true, writable: true })
  await import("@tensorflow/tfjs-backend-webgpu")
  WebGpuMatMul.install()
  await activate("webgpu")
  const backend = tf.backend() as unknown as WebGpuBackend
  failReadsAfterRejectedWork(backend)
  return {
    ...describeAdapter(adapter.info),
    // Buffers in use and those tfjs pools for reuse.
    deviceBytes: () => backend.memory().numBytesAllocatedInGPU,
    teardown: () => backend.device.destroy()
  }
}

/** The parts of tfjs-backend-webgpu's WebGPUBackend this module uses. */
interface WebGpuBackend {
  readonly device: {
    destroy(): void
    addEventListener(type: "uncapturederror", listener: (event: { readonly error: { readonly message: string } }) => void): void
  }
  memory(): { numBytesAllocatedInGPU: number }
  read(dataId: object): Promise<unknown>
}

/**
 * Dawn reports a command it rejects — a tensor past the device's largest
 * storage binding (128 MiB on lavapipe), a failed allocation — as an
 * uncaptured error and goes on, leaving the command's outputs zero. The next
 * read of any tensor fails with those errors instead (a ComputeError for the
 * reader), so no result is computed from zeros.
 */
function failReadsAfterRejectedWork(backend: WebGpuBackend): void {
  const rejected = new Set<string>()
  backend.device.addEventListener("uncapturederror", (event) => rejected.add(event.error.message.split("\n")[0]!.trim()))
  const read = backend.read.bind(backend)
  backend.read = async (dataId) => {
    const values = await read(dataId)
    if (rejected.size === 0) return values
    const errors = [...rejected]
    rejected.clear()
    throw new Error(`the GPU rejected work queued before this read: ${errors.join("; ")}`)
  }
}

async function startTfjsNode(pkg: string, gpu: boolean): Promise<StartedBackend> {
  // Optional dependencies: present only where their native TensorFlow installed.
  const specifier: string = pkg
  try {
    await import(specifier)
  } catch (e) {
    if ((e as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw e
    throw new Error(`${pkg} is not installed (an optional dependency; its install downloads the TensorFlow C library)`)
  }
  await activate("tensorflow")
  return { device: `TensorFlow C library via ${pkg}${gpu ? " (CUDA)" : ""} on ${cpuModel()}`, hardware: gpu }
}
