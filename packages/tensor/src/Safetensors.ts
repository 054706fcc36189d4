/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header
 * ({ name: { dtype, shape, data_offsets } , __metadata__ }) and the raw data.
 * F32, F16, BF16 and F64 read as float32; I32 and I64 as int32. F64 tensors
 * are also kept exact (`File.float64`) and can be written from Float64Arrays,
 * for values that need double precision (feature statistics). Writing is
 * deterministic (keys sorted, header padded to 8 bytes) so equal trees give
 * equal files and hashes.
 */
import { Effect, Schema } from "effect"
import { float32, type HostTensor, int32, numel } from "./HostTensor.ts"

export class SafetensorsError extends Schema.TaggedError<SafetensorsError>()("SafetensorsError", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid safetensors data: ${this.reason}`
  }
}

const Dtype = Schema.Literals(["F32", "F16", "BF16", "F64", "I32", "I64"])
type Dtype = typeof Dtype.Type
const bytesPer: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8 }

const Entry = Schema.Struct({
  dtype: Dtype,
  shape: Schema.Array(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  data_offsets: Schema.Tuple([Schema.Int, Schema.Int])
})
const Metadata = Schema.Record(Schema.String, Schema.String)
const decodeEntry = Schema.decodeUnknownEffect(Entry)
const decodeMetadata = Schema.decodeUnknownEffect(Metadata)

export interface File {
  readonly tensors: ReadonlyMap<string, HostTensor>
  readonly metadata: Readonly<Record<string, string>>
  /** The stored dtype of each tensor, before conversion. */
  readonly dtypes: ReadonlyMap<string, Dtype>
  /** The exact values of the F64 tensors (`tensors` holds them rounded to float32). */
  readonly float64: ReadonlyMap<string, Float64Array>
}

/** A double-precision tensor to write as F64. */
export interface Float64Tensor {
  readonly dtype: "float64"
  readonly shape: ReadonlyArray<number>
  readonly data: Float64Array
}

const fail = (reason: string) => Effect.fail(new SafetensorsError({ reason }))

/** Parses and validates a safetensors byte buffer. */
export const decode = Effect.fn("Safetensors.decode")(function*(bytes: Uint8Array) {
  if (bytes.byteLength < 8) return yield* fail(`file is ${bytes.byteLength} bytes, shorter than the 8-byte header length`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const headerLength = Number(view.getBigUint64(0, true))
  if (8 + headerLength > bytes.byteLength) {
    return yield* fail(`header claims ${headerLength} bytes but the file has only ${bytes.byteLength - 8} after the length`)
  }
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)))
  } catch (e) {
    return yield* fail(`header is not JSON: ${(e as Error).message}`)
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) return yield* fail("header is not a JSON object")
  const dataStart = 8 + headerLength
  const dataLength = bytes.byteLength - dataStart
  const tensors = new Map<string, HostTensor>()
  const dtypes = new Map<string, Dtype>()
  const float64 = new Map<string, Float64Array>()
  let metadata: Record<string, string> = {}
  const spans: Array<[number, number, string]> = []
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = { ...(yield* decodeMetadata(raw).pipe(Effect.mapError(() => new SafetensorsError({ reason: "__metadata__ must map strings to strings" })))) }
      continue
    }
    const entry = yield* decodeEntry(raw).pipe(
      Effect.mapError((e) => new SafetensorsError({ reason: `tensor ${name}: ${e.message}` }))
    )
    const [begin, end] = entry.data_offsets
    const expected = numel(entry.shape) * bytesPer[entry.dtype]
    if (begin < 0 || end < begin || end > dataLength) {
      return yield* fail(`tensor ${name}: offsets [${begin}, ${end}] outside the ${dataLength}-byte data (truncated file?)`)
    }
    if (end - begin !== expected) {
      return yield* fail(`tensor ${name}: ${entry.dtype}[${entry.shape}] needs ${expected} bytes, offsets give ${end - begin}`)
    }
    spans.push([begin, end, name])
    dtypes.set(name, entry.dtype)
    tensors.set(name, convert(entry.dtype, entry.shape, bytes.subarray(dataStart + begin, dataStart + end)))
    if (entry.dtype === "F64") {
      float64.set(name, new Float64Array(Uint8Array.prototype.slice.call(bytes, dataStart + begin, dataStart + end).buffer))
    }
  }
  spans.sort((a, b) => a[0] - b[0])
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]![0] < spans[i - 1]![1]) return yield* fail(`tensors ${spans[i - 1]![2]} and ${spans[i]![2]} overlap`)
  }
  return { tensors, metadata, dtypes, float64 } satisfies File
})

function convert(dtype: Dtype, shape: ReadonlyArray<number>, raw: Uint8Array): HostTensor {
  const n = numel(shape)
  // Copy first: the raw span may not be aligned for a typed-array view. Not
  // raw.slice(): on a Node Buffer (what file reads return) it is a view of the whole pool.
  const buf = new Uint8Array(raw).buffer
  switch (dtype) {
    case "F32":
      return float32(shape, new Float32Array(buf))
    case "F64":
      return float32(shape, Float32Array.from(new Float64Array(buf)))
    case "F16": {
      const h = new Uint16Array(buf)
      const out = new Float32Array(n)
      for (let i = 0; i < n; i++) out[i] = f16ToF32(h[i]!)
      return float32(shape, out)
    }
    case "BF16": {
      const h = new Uint16Array(buf)
      const bits = new Uint32Array(n)
      for (let i = 0; i < n; i++) bits[i] = h[i]! << 16
      return float32(shape, new Float32Array(bits.buffer))
    }
    case "I32":
      return int32(shape, new Int32Array(buf))
    case "I64": {
      const wide = new BigInt64Array(buf)
      return int32(shape, Int32Array.from(wide, (v) => Number(v)))
    }
  }
}

export type WriteDtype = "F32" | "F16" | "BF16"

/**
 * Serialises tensors. Float tensors are stored as `dtype` (default F32);
 * int32 tensors as I32; float64 tensors as F64.
 */
export function encode(
  tensors: Iterable<readonly [string, HostTensor | Float64Tensor]>,
  options: { readonly metadata?: Readonly<Record<string, string>>; readonly dtype?: WriteDtype } = {}
): Uint8Array {
  const floatType = options.dtype ?? "F32"
  const sorted = [...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const header: Record<string, unknown> = {}
  if (options.metadata !== undefined) header["__metadata__"] = options.metadata
  const payloads: Array<Uint8Array> = []
  let offset = 0
  for (const [name, t] of sorted) {
    if (name in header) throw new Error(`duplicate tensor name ${name}`)
    const payload = t.dtype === "float32" ? encodeFloats(t.data, floatType) : bytesOf(t.data)
    const dtype = t.dtype === "float32" ? floatType : t.dtype === "int32" ? "I32" : "F64"
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + payload.byteLength] }
    payloads.push(payload)
    offset += payload.byteLength
  }
  let json = JSON.stringify(header)
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const headerBytes = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + headerBytes.byteLength + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true)
  out.set(headerBytes, 8)
  let at = 8 + headerBytes.byteLength
  for (const p of payloads) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

const bytesOf = (a: Float32Array | Int32Array | Float64Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

function encodeFloats(data: Float32Array, dtype: WriteDtype): Uint8Array {
  if (dtype === "F32") return bytesOf(data)
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length)
  const out = new Uint16Array(data.length)
  for (let i = 0; i < data.length; i++) out[i] = dtype === "F16" ? f32BitsToF16(bits[i]!) : f32BitsToBf16(bits[i]!)
  return new Uint8Array(out.buffer)
}

/** IEEE half → float (exact). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >> 10) & 0x1f
  const frac = h & 0x3ff
  if (exp === 0) return sign * frac * 2 ** -24
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN
  return sign * (1 + frac / 1024) * 2 ** (exp - 15)
}

/** float bits → half bits, round to nearest even (as PyTorch's .half()). */
export function f32BitsToF16(bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  const exp = (bits >>> 23) & 0xff
  const mant = bits & 0x7fffff
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0)
  const e = exp - 127 + 15
  if (e >= 0x1f) return sign | 0x7c00
  if (e <= 0) {
    if (e < -10) return sign
    const m = mant | 0x800000
    const shift = 14 - e
    const half = m >> shift
    const rest = m & ((1 << shift) - 1)
    const mid = 1 << (shift - 1)
    return sign | (half + (rest > mid || (rest === mid && (half & 1)) ? 1 : 0))
  }
  const half = (e << 10) | (mant >> 13)
  const rest = mant & 0x1fff
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && (half & 1)) ? 1 : 0))
}

/** float bits → bfloat16 bits, round to nearest even. */
export function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return ((bits >>> 16) | 0x40) & 0xffff
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}
