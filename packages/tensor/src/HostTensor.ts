/**
 * Tensors in host memory: what artifacts, checkpoints and safetensors files
 * hold. Backend independent, so a stored value is the same bits on every backend.
 */
import { Effect } from "effect"
import { ComputeError } from "./Compute.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export type HostTensor =
  | { readonly dtype: "float32"; readonly shape: ReadonlyArray<number>; readonly data: Float32Array }
  | { readonly dtype: "int32"; readonly shape: ReadonlyArray<number>; readonly data: Int32Array }

export type HostTree = ParamTree.Tree<HostTensor>

export const isHostTensor = (x: unknown): x is HostTensor =>
  typeof x === "object" && x !== null && "dtype" in x && "shape" in x &&
  "data" in x && (x.data instanceof Float32Array || x.data instanceof Int32Array)

export const numel = (shape: ReadonlyArray<number>): number => shape.reduce((a, b) => a * b, 1)

export const float32 = (shape: ReadonlyArray<number>, data: Float32Array): HostTensor => {
  if (data.length !== numel(shape)) throw new Error(`shape [${shape}] needs ${numel(shape)} values, got ${data.length}`)
  return { dtype: "float32", shape: [...shape], data }
}

export const int32 = (shape: ReadonlyArray<number>, data: Int32Array): HostTensor => {
  if (data.length !== numel(shape)) throw new Error(`shape [${shape}] needs ${numel(shape)} values, got ${data.length}`)
  return { dtype: "int32", shape: [...shape], data }
}

/** Uploads to the active backend. */
export const toTensor = (h: HostTensor): tf.Tensor => tf.tensor(h.data, [...h.shape], h.dtype)

/** Downloads from the device (waits for queued work). */
export const fromTensor = (t: tf.Tensor): Effect.Effect<HostTensor, ComputeError> =>
  Effect.tryPromise({
    try: async (): Promise<HostTensor> => {
      if (t.dtype === "int32") return int32(t.shape, Int32Array.from((await t.data()) as Int32Array))
      return float32(t.shape, Float32Array.from(await t.data()))
    },
    catch: (cause) => new ComputeError({ backend: tf.getBackend(), operation: `download ${t.shape.join("×")}`, cause })
  })

export const treeToTensors = (tree: HostTree): ParamTree.ParamTree =>
  ParamTree.map(tree, isHostTensor, toTensor) as ParamTree.ParamTree

export const treeFromTensors = (tree: ParamTree.ParamTree): Effect.Effect<HostTree, ComputeError> =>
  Effect.gen(function*() {
    const flat = ParamTree.flattenTensors(tree)
    const hosts = yield* Effect.forEach(flat, ([, t]) => fromTensor(t))
    return ParamTree.unflatten(flat.map(([k], i) => [k, hosts[i]!] as const))
  })

/** Bitwise equality of two host tensors (dtype, shape and every bit). */
export const bitEqual = (a: HostTensor, b: HostTensor): boolean => {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false
  const x = new Uint32Array(a.data.buffer, a.data.byteOffset, a.data.length)
  const y = new Uint32Array(b.data.buffer, b.data.byteOffset, b.data.length)
  return x.every((v, i) => v === y[i])
}
