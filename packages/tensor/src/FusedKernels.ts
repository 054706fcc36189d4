/**
 * Fused kernels for the tfjs wasm backend, with their gradients. A DiT block
 * built from tfjs ops dispatches about two hundred small kernels (forward and
 * backward), each paying the engine's bookkeeping, a heap allocation and
 * often a materialised transpose; these do a Linear, an activation, adaLN's
 * LayerNorm + modulation, a gated residual or a whole attention in one call.
 *
 * The kernels are compiled from AssemblyScript (wasm/kernels.ts, SIMD) and
 * instantiated on the backend's own memory: they read and write tensors where
 * tfjs keeps them, and allocate only through the backend; matrix products run
 * in native code instead where NativeGemm is built (the same bits, twice the
 * vector width). The composed ops in Fused.ts are the reference every kernel
 * is tested against, and what other backends run. `install` also replaces
 * wasm's Identity (a copy of the tensor, made for every tensor the tape saves)
 * with one that shares the data, as the cpu backend's does: tfjs tensors are
 * immutable.
 */
import { readFileSync } from "node:fs"
import * as NativeGemm from "./NativeGemm.ts"
import { tf } from "./tf.ts"

type Info = tf.TensorInfo

/** The kernels' exports (pointers are byte offsets into the backend's heap). */
interface Exports {
  gemmScratchBytes(): number
  gemm(a: number, ars: number, acs: number, b: number, brs: number, bcs: number, c: number, m: number, n: number, k: number, bias: number, scratch: number): void
  columnSums(x: number, rows: number, cols: number, out: number): void
  gelu(x: number, out: number, n: number): void
  geluGrad(x: number, dy: number, dx: number, n: number): void
  silu(x: number, out: number, n: number): void
  siluGrad(x: number, dy: number, dx: number, n: number): void
  layerNormModulate(x: number, mod: number, width: number, shift: number, scale: number, out: number, b: number, t: number, d: number, eps: number, stats: number): void
  layerNormModulateGradX(x: number, mod: number, width: number, scale: number, dy: number, dx: number, b: number, t: number, d: number, eps: number, scratch: number): void
  layerNormModulateGradMod(x: number, width: number, shift: number, scale: number, dy: number, dmod: number, b: number, t: number, d: number, eps: number, stats: number): void
  gatedResidual(x: number, y: number, mod: number, width: number, gate: number, out: number, b: number, t: number, d: number): void
  gatedResidualGradY(mod: number, width: number, gate: number, dout: number, dy: number, b: number, t: number, d: number): void
  gatedResidualGradMod(y: number, width: number, gate: number, dout: number, dmod: number, b: number, t: number, d: number): void
  attention(qkv: number, out: number, probs: number, b: number, t: number, h: number, hd: number, scale: number, scratch: number): void
  attentionGrad(qkv: number, probs: number, dout: number, dqkv: number, b: number, t: number, h: number, hd: number, scale: number, scratch: number): void
  adamw(
    p: number, g: number, m: number, v: number, pOut: number, mOut: number, vOut: number, n: number,
    beta1: number, oneMinusBeta1: number, beta2: number, oneMinusBeta2: number, sqrtBc2: number, eps: number, step: number, decay: number,
    gradScale: number, e: number, eOut: number, emaDecay: number, oneMinusEmaDecay: number
  ): void
  ema(e: number, p: number, out: number, n: number, decay: number, oneMinusDecay: number): void
  sumSquares(x: number, n: number): number
}

/** The WebAssembly API of the runtime (the project's TypeScript libs do not declare it). */
const WebAssemblyApi = (globalThis as unknown as {
  readonly WebAssembly: {
    readonly Module: new (bytes: Uint8Array) => object
    readonly Instance: new (module: object, imports: object) => { readonly exports: unknown }
    validate(bytes: Uint8Array): boolean
  }
}).WebAssembly

/** The parts of tfjs-backend-wasm's BackendWasm the kernels use. */
interface WasmBackend {
  readonly wasm: { readonly asm: { readonly memory: { readonly buffer: ArrayBuffer } }; _malloc(bytes: number): number; _free(ptr: number): void }
  readonly dataIdMap: { get(dataId: tf.DataId): { readonly memoryOffset: number } }
  makeOutput(shape: Array<number>, dtype: tf.DataType): Info
  incRef(dataId: tf.DataId): void
}

const binary = new URL("../wasm/kernels.wasm", import.meta.url)

let module: object | undefined
const instances = new WeakMap<object, Exports>()

/** The kernels bound to this backend's heap (one instance per backend). */
const kernelsOf = (backend: WasmBackend): Exports => {
  let k = instances.get(backend)
  if (k === undefined) {
    k = new WebAssemblyApi.Instance(module!, { env: { memory: backend.wasm.asm.memory } }).exports as unknown as Exports
    instances.set(backend, k)
  }
  return k
}

const ptr = (backend: WasmBackend, x: Info): number => backend.dataIdMap.get(x.dataId).memoryOffset
const size = (shape: ReadonlyArray<number>): number => shape.reduce((p, d) => p * d, 1)

/** Float scratch on the heap for the duration of f. */
const withScratch = <A>(backend: WasmBackend, bytes: number, f: (scratch: number) => A): A => {
  const scratch = backend.wasm._malloc(Math.max(bytes, 16)) >>> 0
  try {
    return f(scratch)
  } finally {
    backend.wasm._free(scratch)
  }
}

const float32 = (name: string, inputs: Record<string, Info>): void => {
  for (const [key, x] of Object.entries(inputs)) {
    if (x.dtype !== "float32") throw new Error(`${name}: input ${key} is ${x.dtype}, the kernel takes float32`)
  }
}

type Body = (k: Exports, backend: WasmBackend, inputs: Record<string, Info>, attrs: Record<string, number>) => Info | Array<Info>

const kernel = (kernelName: string, body: Body): tf.KernelConfig => ({
  kernelName,
  backendName: "wasm",
  kernelFunc: ({ inputs, backend, attrs }) => {
    float32(kernelName, inputs as Record<string, Info>)
    const b = backend as unknown as WasmBackend
    return body(kernelsOf(b), b, inputs as Record<string, Info>, attrs as unknown as Record<string, number>)
  }
})

export const names = {
  linear: "TfLinear",
  linearGradInput: "TfLinearGradInput",
  linearGradWeight: "TfLinearGradWeight",
  linearGradBias: "TfLinearGradBias",
  gelu: "TfGelu",
  geluGrad: "TfGeluGrad",
  silu: "TfSilu",
  siluGrad: "TfSiluGrad",
  layerNormModulate: "TfLayerNormModulate",
  layerNormModulateGradX: "TfLayerNormModulateGradX",
  layerNormModulateGradMod: "TfLayerNormModulateGradMod",
  gatedResidual: "TfGatedResidual",
  gatedResidualGradY: "TfGatedResidualGradY",
  gatedResidualGradMod: "TfGatedResidualGradMod",
  attention: "TfAttention",
  attentionGrad: "TfAttentionGrad",
  adamw: "TfAdamW",
  ema: "TfEma",
  sumSquares: "TfSumSquares"
} as const

/** Rows and columns of x seen as a matrix over its last axis. */
const matrix = (x: Info): [number, number] => {
  const cols = x.shape[x.shape.length - 1]!
  return [cols === 0 ? 0 : size(x.shape) / cols, cols]
}

const gemm = (k: Exports, backend: WasmBackend, args: {
  a: number; ars: number; acs: number; b: number; brs: number; bcs: number; c: number; m: number; n: number; k: number; bias: number
}): void => {
  const native = NativeGemm.active()
  if (native !== undefined) {
    return native(backend.wasm.asm.memory.buffer, args.a, args.ars, args.acs, args.b, args.brs, args.bcs, args.c, args.m, args.n, args.k, args.bias)
  }
  withScratch(backend, k.gemmScratchBytes(), (scratch) =>
    k.gemm(args.a, args.ars, args.acs, args.b, args.brs, args.bcs, args.c, args.m, args.n, args.k, args.bias, scratch))
}

/** [B, T, D] of x and [B, width] of mod, checked against each other. */
const tokens = (name: string, x: Info, mod: Info): [number, number, number, number] => {
  if (x.shape.length !== 3 || mod.shape.length !== 2 || mod.shape[0] !== x.shape[0]) {
    throw new Error(`${name}: x [${x.shape}] is not [B, T, D] or mod [${mod.shape}] is not [B, width]`)
  }
  return [x.shape[0]!, x.shape[1]!, x.shape[2]!, mod.shape[1]!]
}

const chunk = (name: string, offset: number, d: number, width: number): number => {
  if (!Number.isInteger(offset) || offset < 0 || offset + d > width) throw new Error(`${name}: chunk at ${offset} of width ${d} is outside a mod row of ${width}`)
  return offset
}

const kernels: ReadonlyArray<tf.KernelConfig> = [
  // y = x·Wᵀ + b over the last axis; W is [out, in] (PyTorch's layout).
  kernel(names.linear, (k, backend, { x, weight, bias }) => {
    const [m, kk] = matrix(x!)
    const [n, kw] = weight!.shape as [number, number]
    if (kw !== kk || bias!.shape.length !== 1 || bias!.shape[0] !== n) {
      throw new Error(`linear: x [${x!.shape}], weight [${weight!.shape}] and bias [${bias!.shape}] do not fit`)
    }
    const out = backend.makeOutput([...x!.shape.slice(0, -1), n], "float32")
    gemm(k, backend, { a: ptr(backend, x!), ars: kk, acs: 1, b: ptr(backend, weight!), brs: 1, bcs: kk, c: ptr(backend, out), m, n, k: kk, bias: ptr(backend, bias!) })
    return out
  }),
  // dx = dy·W
  kernel(names.linearGradInput, (k, backend, { dy, weight }) => {
    const [m, n] = matrix(dy!)
    const kk = weight!.shape[1]!
    const out = backend.makeOutput([...dy!.shape.slice(0, -1), kk], "float32")
    gemm(k, backend, { a: ptr(backend, dy!), ars: n, acs: 1, b: ptr(backend, weight!), brs: kk, bcs: 1, c: ptr(backend, out), m: m, n: kk, k: n, bias: 0 })
    return out
  }),
  // dW = dyᵀ·x
  kernel(names.linearGradWeight, (k, backend, { dy, x }) => {
    const [m, n] = matrix(dy!)
    const kk = x!.shape[x!.shape.length - 1]!
    const out = backend.makeOutput([n, kk], "float32")
    gemm(k, backend, { a: ptr(backend, dy!), ars: 1, acs: n, b: ptr(backend, x!), brs: kk, bcs: 1, c: ptr(backend, out), m: n, n: kk, k: m, bias: 0 })
    return out
  }),
  // db = Σ_rows dy
  kernel(names.linearGradBias, (k, backend, { dy }) => {
    const [m, n] = matrix(dy!)
    const out = backend.makeOutput([n], "float32")
    k.columnSums(ptr(backend, dy!), m, n, ptr(backend, out))
    return out
  }),
  kernel(names.gelu, (k, backend, { x }) => {
    const out = backend.makeOutput([...x!.shape], "float32")
    k.gelu(ptr(backend, x!), ptr(backend, out), size(x!.shape))
    return out
  }),
  kernel(names.geluGrad, (k, backend, { x, dy }) => {
    const out = backend.makeOutput([...x!.shape], "float32")
    k.geluGrad(ptr(backend, x!), ptr(backend, dy!), ptr(backend, out), size(x!.shape))
    return out
  }),
  kernel(names.silu, (k, backend, { x }) => {
    const out = backend.makeOutput([...x!.shape], "float32")
    k.silu(ptr(backend, x!), ptr(backend, out), size(x!.shape))
    return out
  }),
  kernel(names.siluGrad, (k, backend, { x, dy }) => {
    const out = backend.makeOutput([...x!.shape], "float32")
    k.siluGrad(ptr(backend, x!), ptr(backend, dy!), ptr(backend, out), size(x!.shape))
    return out
  }),
  kernel(names.layerNormModulate, (k, backend, { x, mod }, { shift, scale, eps }) => {
    const [b, t, d, width] = tokens("layerNormModulate", x!, mod!)
    const out = backend.makeOutput([b, t, d], "float32")
    withScratch(backend, 8, (stats) =>
      k.layerNormModulate(
        ptr(backend, x!), ptr(backend, mod!), width, chunk("layerNormModulate", shift!, d, width), chunk("layerNormModulate", scale!, d, width),
        ptr(backend, out), b, t, d, eps!, stats
      ))
    return out
  }),
  kernel(names.layerNormModulateGradX, (k, backend, { x, mod, dy }, { scale, eps }) => {
    const [b, t, d, width] = tokens("layerNormModulateGradX", x!, mod!)
    const out = backend.makeOutput([b, t, d], "float32")
    withScratch(backend, 4 * (d + 2), (scratch) =>
      k.layerNormModulateGradX(ptr(backend, x!), ptr(backend, mod!), width, scale!, ptr(backend, dy!), ptr(backend, out), b, t, d, eps!, scratch))
    return out
  }),
  kernel(names.layerNormModulateGradMod, (k, backend, { x, mod, dy }, { shift, scale, eps }) => {
    const [b, t, d, width] = tokens("layerNormModulateGradMod", x!, mod!)
    const out = backend.makeOutput([b, width], "float32")
    withScratch(backend, 8, (stats) =>
      k.layerNormModulateGradMod(ptr(backend, x!), width, shift!, scale!, ptr(backend, dy!), ptr(backend, out), b, t, d, eps!, stats))
    return out
  }),
  kernel(names.gatedResidual, (k, backend, { x, y, mod }, { gate }) => {
    const [b, t, d, width] = tokens("gatedResidual", x!, mod!)
    if (!tf.util.arraysEqual(x!.shape, y!.shape)) throw new Error(`gatedResidual: x [${x!.shape}] and y [${y!.shape}] differ`)
    const out = backend.makeOutput([b, t, d], "float32")
    k.gatedResidual(ptr(backend, x!), ptr(backend, y!), ptr(backend, mod!), width, chunk("gatedResidual", gate!, d, width), ptr(backend, out), b, t, d)
    return out
  }),
  kernel(names.gatedResidualGradY, (k, backend, { mod, dy }, { gate }) => {
    const [b, t, d, width] = tokens("gatedResidualGradY", dy!, mod!)
    const out = backend.makeOutput([b, t, d], "float32")
    k.gatedResidualGradY(ptr(backend, mod!), width, gate!, ptr(backend, dy!), ptr(backend, out), b, t, d)
    return out
  }),
  kernel(names.gatedResidualGradMod, (k, backend, { y, mod, dy }, { gate }) => {
    const [b, t, d, width] = tokens("gatedResidualGradMod", y!, mod!)
    const out = backend.makeOutput([b, width], "float32")
    k.gatedResidualGradMod(ptr(backend, y!), width, gate!, ptr(backend, dy!), ptr(backend, out), b, t, d)
    return out
  }),
  // qkv [B, T, 3·D] with features (3, heads, head_dim) → [out [B, T, D], probs [B, heads, T, T]].
  kernel(names.attention, (k, backend, { qkv }, { heads }) => {
    const [b, t, three] = qkv!.shape as [number, number, number]
    const d = three / 3
    const hd = d / heads!
    if (qkv!.shape.length !== 3 || !Number.isInteger(hd)) throw new Error(`attention: qkv [${qkv!.shape}] is not [B, T, 3·heads·head_dim] for ${heads} heads`)
    const out = backend.makeOutput([b, t, d], "float32")
    const probs = backend.makeOutput([b, heads!, t, t], "float32")
    withScratch(backend, 4 * hd * t, (scratch) =>
      k.attention(ptr(backend, qkv!), ptr(backend, out), ptr(backend, probs), b, t, heads!, hd, 1 / Math.sqrt(hd), scratch))
    return [out, probs]
  }),
  kernel(names.attentionGrad, (k, backend, { qkv, probs, dy }, { heads }) => {
    const [b, t, three] = qkv!.shape as [number, number, number]
    const hd = three / 3 / heads!
    const out = backend.makeOutput([b, t, three], "float32")
    withScratch(backend, 4 * (hd * t + 2 * t * t), (scratch) =>
      k.attentionGrad(ptr(backend, qkv!), ptr(backend, probs!), ptr(backend, dy!), ptr(backend, out), b, t, heads!, hd, 1 / Math.sqrt(hd), scratch))
    return out
  }),
  // Outputs p', m', v' and, given an EMA `e` of p, e'. gradScale: an optional scalar tensor (clipping's factor),
  // read where it lies, so the update needs no device read.
  kernel(names.adamw, (k, backend, { p, g, m, v, gradScale, e }, a) => {
    if (e !== undefined && size(e.shape) !== size(p!.shape)) throw new Error(`adamw: EMA [${e.shape}] does not match parameter [${p!.shape}]`)
    const outs = (e === undefined ? [0, 1, 2] : [0, 1, 2, 3]).map(() => backend.makeOutput([...p!.shape], "float32"))
    const scale = gradScale === undefined ? 1 : new Float32Array(backend.wasm.asm.memory.buffer, ptr(backend, gradScale), 1)[0]!
    k.adamw(
      ptr(backend, p!), ptr(backend, g!), ptr(backend, m!), ptr(backend, v!), ptr(backend, outs[0]!), ptr(backend, outs[1]!), ptr(backend, outs[2]!),
      size(p!.shape), a["beta1"]!, a["oneMinusBeta1"]!, a["beta2"]!, a["oneMinusBeta2"]!, a["sqrtBc2"]!, a["eps"]!, a["step"]!, a["decay"]!, scale,
      e === undefined ? 0 : ptr(backend, e), e === undefined ? 0 : ptr(backend, outs[3]!), a["emaDecay"] ?? 0, a["oneMinusEmaDecay"] ?? 0
    )
    return outs
  }),
  kernel(names.ema, (k, backend, { e, p }, { decay, oneMinusDecay }) => {
    const out = backend.makeOutput([...p!.shape], "float32")
    k.ema(ptr(backend, e!), ptr(backend, p!), ptr(backend, out), size(p!.shape), decay!, oneMinusDecay!)
    return out
  }),
  // Σ over every input of Σ x², summed in input order: one call for a whole gradient tree.
  kernel(names.sumSquares, (k, backend, inputs) => {
    let total = 0
    for (const x of Object.values(inputs)) total += k.sumSquares(ptr(backend, x), size(x.shape))
    const out = backend.makeOutput([], "float32")
    new Float32Array(backend.wasm.asm.memory.buffer, ptr(backend, out), 1)[0] = total
    return out
  })
]

const run = (name: string, inputs: tf.NamedTensorMap, attrs: Record<string, number> = {}): tf.Tensor =>
  tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor

const gradients: ReadonlyArray<tf.GradConfig> = [
  {
    kernelName: names.linear,
    inputsToSave: ["x", "weight"],
    gradFunc: (dy, saved) => {
      const [x, weight] = saved as [tf.Tensor, tf.Tensor]
      const g = dy as tf.Tensor
      return {
        x: () => run(names.linearGradInput, { dy: g, weight }),
        weight: () => run(names.linearGradWeight, { dy: g, x }),
        bias: () => run(names.linearGradBias, { dy: g })
      }
    }
  },
  {
    kernelName: names.gelu,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => run(names.geluGrad, { x: saved[0]!, dy: dy as tf.Tensor }) })
  },
  {
    kernelName: names.silu,
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => run(names.siluGrad, { x: saved[0]!, dy: dy as tf.Tensor }) })
  },
  {
    kernelName: names.layerNormModulate,
    inputsToSave: ["x", "mod"],
    gradFunc: (dy, saved, attrs) => {
      const [x, mod] = saved as [tf.Tensor, tf.Tensor]
      const a = attrs as unknown as Record<string, number>
      return {
        x: () => run(names.layerNormModulateGradX, { x, mod, dy: dy as tf.Tensor }, a),
        mod: () => run(names.layerNormModulateGradMod, { x, mod, dy: dy as tf.Tensor }, a)
      }
    }
  },
  {
    kernelName: names.gatedResidual,
    inputsToSave: ["y", "mod"],
    gradFunc: (dy, saved, attrs) => {
      const [y, mod] = saved as [tf.Tensor, tf.Tensor]
      const a = attrs as unknown as Record<string, number>
      const g = dy as tf.Tensor
      return {
        x: () => tf.clone(g),
        y: () => run(names.gatedResidualGradY, { mod, dy: g }, a),
        mod: () => run(names.gatedResidualGradMod, { y, mod, dy: g }, a)
      }
    }
  },
  {
    kernelName: names.attention,
    inputsToSave: ["qkv"],
    outputsToSave: [false, true],
    gradFunc: (dys, saved, attrs) => {
      const [qkv, probs] = saved as [tf.Tensor, tf.Tensor]
      const dy = (dys as Array<tf.Tensor>)[0]!
      return { qkv: () => run(names.attentionGrad, { qkv, probs, dy }, attrs as unknown as Record<string, number>) }
    }
  }
]

/** tfjs's wasm Identity copies the tensor; this one shares its data (a reference more). */
const sharedIdentity: tf.KernelConfig = {
  kernelName: tf.Identity,
  backendName: "wasm",
  kernelFunc: ({ inputs, backend }) => {
    const { x } = inputs as { x: Info }
    ;(backend as unknown as WasmBackend).incRef(x.dataId)
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype }
  }
}

let originalIdentity: tf.KernelConfig | undefined
/** Whether the kernels are registered (checked on every op, so kept rather than looked up). */
let registered = false

const replace = (config: tf.KernelConfig): void => {
  if (tf.getKernel(config.kernelName, config.backendName) !== undefined) tf.unregisterKernel(config.kernelName, config.backendName)
  tf.registerKernel(config)
}

/**
 * Registers the fused kernels for the wasm backend and their gradients
 * (idempotent; the wasm backend package must be imported first). Does
 * nothing where WebAssembly SIMD is missing: the ops then compose.
 */
export const install = (): void => {
  if (installed()) return
  if (module === undefined) {
    const bytes = readFileSync(binary)
    if (!WebAssemblyApi.validate(bytes)) return
    module = new WebAssemblyApi.Module(bytes)
  }
  const identity = tf.getKernel(tf.Identity, "wasm")
  if (identity === undefined) throw new Error("the wasm backend registers no Identity kernel (is @tensorflow/tfjs-backend-wasm imported?)")
  originalIdentity = identity
  replace(sharedIdentity)
  for (const g of gradients) tf.registerGradient(g)
  for (const k of kernels) replace(k)
  registered = true
}

/** Removes the fused kernels (the ops compose again) and restores tfjs's Identity. */
export const uninstall = (): void => {
  if (!installed()) return
  for (const k of kernels) tf.unregisterKernel(k.kernelName, "wasm")
  replace(originalIdentity!)
  originalIdentity = undefined
  registered = false
}

/** Whether the fused kernels are registered. */
export const installed = (): boolean => registered

/** Whether the active backend runs the fused kernels (wasm with them installed). */
export const active = (): boolean => tf.getBackend() === "wasm" && installed()

export { run as runKernel }
