/**
 * Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A draw is a
 * pure function of (seed, stream name, step, index): no hidden state, so a run
 * resumed at step s draws exactly what an uninterrupted run draws, and values
 * are generated in JS and uploaded, identical on every backend.
 */
import { tf } from "./tf.ts"

export interface Stream {
  readonly seed: number
  readonly name: string
  readonly key: readonly [number, number]
}

/** A named stream of a seed, e.g. stream(0, "noise"), stream(0, "labels"). */
export function stream(seed: number, name: string): Stream {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative safe integer, got ${seed}`)
  // FNV-1a 64 over the UTF-8 name, a zero byte and the seed's 8 little-endian bytes.
  let h = 0xcbf29ce484222325n
  const feed = (byte: number) => {
    h ^= BigInt(byte)
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn
  }
  for (const byte of new TextEncoder().encode(name)) feed(byte)
  feed(0)
  let s = BigInt(seed)
  for (let i = 0; i < 8; i++, s >>= 8n) feed(Number(s & 0xffn))
  return { seed, name, key: [Number(h & 0xffffffffn), Number(h >> 32n)] }
}

/** A sub-stream, e.g. per group or per sample. */
export const child = (parent: Stream, name: string): Stream => stream(parent.seed, `${parent.name}/${name}`)

const M0 = 0xd2511f53
const M1 = 0xcd9e8d57
const W0 = 0x9e3779b9
const W1 = 0xbb67ae85
const TWO32 = 4294967296

// 32×32 → 64-bit product split into exact float pieces.
function mulhilo(a: number, b: number, out: Float64Array, at: number): void {
  const p1 = a * (b & 0xffff)
  const p2 = a * (b >>> 16)
  const p2lo = p2 % 65536
  const mid = p2lo * 65536 + p1
  out[at] = Math.floor((p2 - p2lo) / 65536) + Math.floor(mid / TWO32)
  out[at + 1] = mid % TWO32
}

const scratch = new Float64Array(4)

/** One Philox4x32-10 block: 4 uint32 outputs for a 4-word counter and 2-word key. */
export function philox(counter: readonly [number, number, number, number], key: readonly [number, number]): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter
  let [k0, k1] = key
  for (let round = 0; round < 10; round++) {
    mulhilo(M0, c0, scratch, 0)
    mulhilo(M1, c2, scratch, 2)
    const next0 = (scratch[2]! ^ c1 ^ k0) >>> 0
    const next2 = (scratch[0]! ^ c3 ^ k1) >>> 0
    c0 = next0
    c1 = scratch[3]!
    c2 = next2
    c3 = scratch[1]!
    k0 = (k0 + W0) >>> 0
    k1 = (k1 + W1) >>> 0
  }
  return [c0 >>> 0, c1 >>> 0, c2 >>> 0, c3 >>> 0]
}

/** n raw uint32 words of (stream, step). */
export function bits(s: Stream, step: number, n: number): Uint32Array {
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`step must be a non-negative safe integer, got ${step}`)
  const out = new Uint32Array(n)
  const stepLo = step % TWO32
  const stepHi = Math.floor(step / TWO32)
  for (let block = 0; block * 4 < n; block++) {
    const words = philox([stepLo, stepHi, block % TWO32, Math.floor(block / TWO32)], s.key)
    for (let lane = 0; lane < 4 && block * 4 + lane < n; lane++) out[block * 4 + lane] = words[lane]!
  }
  return out
}

/** Uniform on the open interval (0, 1), 24-bit resolution (exact in float32). */
export function uniform(s: Stream, step: number, n: number): Float32Array {
  const raw = bits(s, step, n)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = ((raw[i]! >>> 8) + 0.5) / 16777216
  return out
}

/** Standard normal by Box–Muller on pairs of 32-bit uniforms (computed in float64). */
export function normal(s: Stream, step: number, n: number): Float32Array {
  const raw = bits(s, step, n + (n % 2))
  const out = new Float32Array(n)
  for (let i = 0; i < n; i += 2) {
    const u1 = (raw[i]! + 0.5) / TWO32
    const u2 = (raw[i + 1]! + 0.5) / TWO32
    const r = Math.sqrt(-2 * Math.log(u1))
    out[i] = r * Math.cos(2 * Math.PI * u2)
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2)
  }
  return out
}

/** Standard Gumbel, −log(−log u). */
export function gumbel(s: Stream, step: number, n: number): Float32Array {
  const raw = bits(s, step, n)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = -Math.log(-Math.log((raw[i]! + 0.5) / TWO32))
  return out
}

/** Integers uniform on [low, high), from 53-bit uniforms (bias below 2^-21 for ranges under 2^32). */
export function integers(s: Stream, step: number, n: number, low: number, high: number): Int32Array {
  if (!(high > low)) throw new Error(`empty range [${low}, ${high})`)
  const raw = bits(s, step, 2 * n)
  const out = new Int32Array(n)
  const range = high - low
  for (let i = 0; i < n; i++) {
    const u = (raw[2 * i]! * 2097152 + (raw[2 * i + 1]! >>> 11)) / 9007199254740992
    out[i] = low + Math.floor(u * range)
  }
  return out
}

/** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
export function permutation(s: Stream, step: number, n: number): Int32Array {
  const out = Int32Array.from({ length: n }, (_, i) => i)
  const raw = bits(s, step, 2 * n)
  for (let i = n - 1; i > 0; i--) {
    const u = (raw[2 * i]! * 2097152 + (raw[2 * i + 1]! >>> 11)) / 9007199254740992
    const j = Math.floor(u * (i + 1))
    const tmp = out[i]!
    out[i] = out[j]!
    out[j] = tmp
  }
  return out
}

const size = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

/** Device tensors of the same draws. */
export const normalTensor = (s: Stream, step: number, shape: ReadonlyArray<number>): tf.Tensor =>
  tf.tensor(normal(s, step, size(shape)), [...shape])
export const uniformTensor = (s: Stream, step: number, shape: ReadonlyArray<number>): tf.Tensor =>
  tf.tensor(uniform(s, step, size(shape)), [...shape])
export const gumbelTensor = (s: Stream, step: number, shape: ReadonlyArray<number>): tf.Tensor =>
  tf.tensor(gumbel(s, step, size(shape)), [...shape])
