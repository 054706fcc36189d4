/**
 * Faster matmul kernels for the tfjs wasm backend. Its C++ BatchMatMul runs
 * XNNPACK's SIMD GEMM only for an untransposed product with a batch of one on
 * both sides, and a scalar triple loop (about 10× slower) for everything else
 * — including every product with a transposed operand, which is most of a
 * training step's backward pass and every nn.Linear's x·Wᵀ. These kernels
 * rewrite each product into that fast case:
 *
 * - a transposed operand is materialised once with the wasm Transpose kernel;
 * - a batch against one matrix (x [B,T,D] · W) is a single tall product;
 * - one matrix against a batch is a single wide product between transposes;
 * - batch against batch multiplies matrix by matrix, batch indices broadcast
 *   as NumPy does (tfjs's own kernels only handle a batch of one against n);
 *   many small matrices (attention over a few tokens) stay on tfjs's loop,
 *   which is faster there than one XNNPACK call per matrix.
 *
 * `install` replaces the registered BatchMatMul and _FusedMatMul for the wasm
 * backend (the Compute.wasm layer calls it); `uninstall` restores tfjs's.
 */
import { tf } from "./tf.ts"

type Info = tf.TensorInfo

/** The parts of tfjs-backend-wasm's BackendWasm these kernels use. */
interface WasmBackend {
  makeOutput(shape: Array<number>, dtype: tf.DataType): Info
  typedArrayFromHeap(info: Info): Float32Array
  disposeData(dataId: tf.DataId): boolean
}

interface Kernels {
  /** tfjs's BatchMatMul: its XNNPACK case, and small batch-against-batch products. */
  readonly reference: tf.KernelFunc
  readonly reshape: tf.KernelFunc
  readonly transpose: tf.KernelFunc
  readonly add: tf.KernelFunc
  readonly activations: Readonly<Record<string, tf.KernelFunc>>
}

const run = (f: tf.KernelFunc, backend: WasmBackend, inputs: Record<string, Info>, attrs: tf.NamedAttrMap = {}): Info =>
  f({ inputs, backend, attrs }) as Info

/**
 * Below this many multiply-adds per matrix (m·n·k), batch-against-batch
 * products stay on tfjs's kernel. Measured on the project's 2-core EPYC, the
 * two cross near 16×16×64.
 */
const loopMinimum = 16384

const size = (shape: ReadonlyArray<number>): number => shape.reduce((p, d) => p * d, 1)

/**
 * For each flat index of the broadcast batch shape, the flat index into an
 * operand's own batch dims (right-aligned; size-1 dims stay at 0).
 */
const batchIndex = (out: ReadonlyArray<number>, own: ReadonlyArray<number>) => {
  const offset = out.length - own.length
  const strides = own.map((_, i) => size(own.slice(i + 1)))
  return (flat: number): number => {
    let index = 0
    for (let axis = out.length - 1, rest = flat; axis >= 0; axis--) {
      const coordinate = rest % out[axis]!
      rest = Math.floor(rest / out[axis]!)
      const ownAxis = axis - offset
      if (ownAxis >= 0 && own[ownAxis] !== 1) index += coordinate * strides[ownAxis]!
    }
    return index
  }
}

/**
 * The operand as [batch, rows, cols] in row-major order, transposed when
 * asked. The result is a new reference the caller disposes.
 */
function plain(k: Kernels, backend: WasmBackend, x: Info, batch: number, transposed: boolean): Info {
  const r = x.shape.length
  const [rows, cols] = [x.shape[r - 2]!, x.shape[r - 1]!]
  const x3 = run(k.reshape, backend, { x }, { shape: [batch, rows, cols] })
  if (!transposed) return x3
  const t = run(k.transpose, backend, { x: x3 }, { perm: [0, 2, 1] })
  backend.disposeData(x3.dataId)
  return t
}

/** One [1,m,k]·[1,k,n] product on tfjs's XNNPACK path. */
const gemm1 = (k: Kernels, backend: WasmBackend, a: Info, b: Info): Info =>
  run(k.reference, backend, { a, b }, { transposeA: false, transposeB: false })

/** A copy of block `index` of a [batch, rows, cols] tensor, as [1, rows, cols]. */
function block(backend: WasmBackend, x: Info, index: number): Info {
  const [rows, cols] = [x.shape[1]!, x.shape[2]!]
  const out = backend.makeOutput([1, rows, cols], "float32")
  const n = rows * cols
  backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(x).subarray(index * n, (index + 1) * n))
  return out
}

/** a·b (with optional transposes, broadcast batch dims) as one new tensor. */
function product(k: Kernels, backend: WasmBackend, a: Info, b: Info, transposeA: boolean, transposeB: boolean): Info {
  const ra = a.shape.length
  const rb = b.shape.length
  const [m, inner] = transposeA ? [a.shape[ra - 1]!, a.shape[ra - 2]!] : [a.shape[ra - 2]!, a.shape[ra - 1]!]
  const [innerB, n] = transposeB ? [b.shape[rb - 1]!, b.shape[rb - 2]!] : [b.shape[rb - 2]!, b.shape[rb - 1]!]
  if (inner !== innerB) {
    throw new Error(`matMul: inner dimensions ${inner} (a ${a.shape}, transposeA=${transposeA}) and ${innerB} (b ${b.shape}, transposeB=${transposeB}) differ`)
  }
  if (a.dtype !== "float32" || b.dtype !== "float32") {
    return run(k.reference, backend, { a, b }, { transposeA, transposeB })
  }
  const batchDimsA = a.shape.slice(0, -2)
  const batchDimsB = b.shape.slice(0, -2)
  const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(batchDimsA, batchDimsB)
  const outShape = [...outBatch, m, n]
  const [batchA, batchB, batchOut] = [size(batchDimsA), size(batchDimsB), size(outBatch)]

  if (size(outShape) === 0 || inner === 0) {
    // Empty sums: XNNPACK rejects zero channels, and the heap is not zeroed.
    const out = backend.makeOutput(outShape, "float32")
    backend.typedArrayFromHeap(out).fill(0)
    return out
  }

  if (batchA > 1 && batchA === batchB && batchB === batchOut && m * n * inner < loopMinimum) {
    // Many small products (attention over few tokens): tfjs's scalar loop
    // beats one XNNPACK call per batch, each of which packs its right operand.
    return run(k.reference, backend, { a, b }, { transposeA, transposeB })
  }

  const a3 = plain(k, backend, a, batchA, transposeA)
  const b3 = plain(k, backend, b, batchB, transposeB)
  const owned: Array<Info> = [a3, b3]
  const own = (x: Info): Info => (owned.push(x), x)
  let out3: Info
  if (batchB === 1) {
    // Every batch of a against one matrix: stack a's rows into one tall product.
    const tall = own(run(k.reshape, backend, { x: a3 }, { shape: [1, batchA * m, inner] }))
    out3 = own(gemm1(k, backend, tall, b3))
  } else if (batchA === 1) {
    // One matrix against every batch of b: lay b's batches side by side
    // ([k, batch·n]) for one wide product, then move the batch axis back out.
    const side = own(run(k.transpose, backend, { x: b3 }, { perm: [1, 0, 2] }))
    const wideB = own(run(k.reshape, backend, { x: side }, { shape: [1, inner, batchB * n] }))
    const wide = own(gemm1(k, backend, a3, wideB))
    const split = own(run(k.reshape, backend, { x: wide }, { shape: [m, batchB, n] }))
    out3 = own(run(k.transpose, backend, { x: split }, { perm: [1, 0, 2] }))
  } else {
    out3 = own(backend.makeOutput([batchOut, m, n], "float32"))
    const indexA = batchIndex(outBatch, batchDimsA)
    const indexB = batchIndex(outBatch, batchDimsB)
    for (let i = 0; i < batchOut; i++) {
      const ai = block(backend, a3, indexA(i))
      const bi = block(backend, b3, indexB(i))
      const oi = gemm1(k, backend, ai, bi)
      // Views are taken after the product: a heap that grew detaches older ones.
      backend.typedArrayFromHeap(out3).set(backend.typedArrayFromHeap(oi), i * m * n)
      for (const x of [ai, bi, oi]) backend.disposeData(x.dataId)
    }
  }
  const out = run(k.reshape, backend, { x: out3 }, { shape: outShape })
  for (const x of owned) backend.disposeData(x.dataId)
  return out
}

function batchMatMul(k: Kernels): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: Info; b: Info }
    const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs
    return product(k, backend as WasmBackend, a, b, transposeA, transposeB)
  }
}

/** Product, then bias and activation as separate wasm kernels (they are cheap next to the product). */
function fusedMatMul(k: Kernels): tf.KernelFunc {
  return ({ inputs, backend: anyBackend, attrs }) => {
    const backend = anyBackend as WasmBackend
    const { a, b, bias, preluActivationWeights } = inputs as { a: Info; b: Info; bias?: Info; preluActivationWeights?: Info }
    const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as unknown as tf._FusedMatMulAttrs
    let out = product(k, backend, a, b, transposeA, transposeB)
    const then = (next: Info) => {
      backend.disposeData(out.dataId)
      out = next
    }
    if (bias !== undefined) then(run(k.add, backend, { a: out, b: bias }))
    switch (activation) {
      case "linear":
        break
      case "prelu":
        then(run(k.activations["prelu"]!, backend, { x: out, alpha: preluActivationWeights! }))
        break
      case "leakyrelu":
        then(run(k.activations["leakyrelu"]!, backend, { x: out }, { alpha: leakyreluAlpha ?? 0.2 }))
        break
      default: {
        const f = k.activations[activation]
        if (f === undefined) throw new Error(`_FusedMatMul: activation ${activation} is not supported`)
        then(run(f, backend, { x: out }))
      }
    }
    return out
  }
}

const kernelFunc = (name: string): tf.KernelFunc => {
  const config = tf.getKernel(name, "wasm")
  if (config === undefined) throw new Error(`the wasm backend registers no ${name} kernel (is @tensorflow/tfjs-backend-wasm imported?)`)
  return config.kernelFunc
}

/** tfjs's own kernels, kept while ours are installed. */
let originals: { readonly batchMatMul: tf.KernelConfig; readonly fusedMatMul: tf.KernelConfig } | undefined

const replace = (config: tf.KernelConfig): void => {
  tf.unregisterKernel(config.kernelName, config.backendName)
  tf.registerKernel(config)
}

/**
 * Registers the accelerated BatchMatMul and _FusedMatMul for the wasm
 * backend (idempotent). The wasm backend package must be imported first;
 * tfjs's setup functions are kept, so a backend re-initialised after an
 * engine reset binds them again.
 */
export const install = (): void => {
  if (originals !== undefined) return
  const batch = tf.getKernel(tf.BatchMatMul, "wasm")
  const fused = tf.getKernel(tf._FusedMatMul, "wasm")
  if (batch === undefined || fused === undefined) {
    throw new Error("the wasm backend registers no BatchMatMul/_FusedMatMul kernel (is @tensorflow/tfjs-backend-wasm imported?)")
  }
  const kernels: Kernels = {
    reference: batch.kernelFunc,
    reshape: kernelFunc(tf.Reshape),
    transpose: kernelFunc(tf.Transpose),
    add: kernelFunc(tf.Add),
    activations: {
      relu: kernelFunc(tf.Relu),
      relu6: kernelFunc(tf.Relu6),
      elu: kernelFunc(tf.Elu),
      sigmoid: kernelFunc(tf.Sigmoid),
      prelu: kernelFunc(tf.Prelu),
      leakyrelu: kernelFunc(tf.LeakyRelu)
    }
  }
  originals = { batchMatMul: batch, fusedMatMul: fused }
  replace({ ...batch, kernelFunc: batchMatMul(kernels) })
  replace({ ...fused, kernelFunc: fusedMatMul(kernels) })
}

/** Restores tfjs's own wasm matmul kernels (the reference the accelerated ones are measured against). */
export const uninstall = (): void => {
  if (originals === undefined) return
  replace(originals.batchMatMul)
  replace(originals.fusedMatMul)
  originals = undefined
}

/** Whether the accelerated kernels are the registered ones. */
export const installed = (): boolean => originals !== undefined
