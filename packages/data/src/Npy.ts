/**
 * NumPy's .npy format (numpy.lib.format, versions 1.0–3.0): the magic
 * "\x93NUMPY", a major and minor version byte, the header length (2 bytes
 * little-endian in 1.0, 4 bytes in 2.0 and 3.0), then the header — a Python
 * dict literal {'descr': '<f8', 'fortran_order': False, 'shape': (N, …), }
 * padded with spaces and a newline so the data starts 64-byte aligned —
 * then the elements in C order.
 */
import { Schema } from "effect"

export class NpyError extends Schema.TaggedError<NpyError>()("NpyError", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.file}: ${this.reason}`
  }
}

export type Dtype = "uint8" | "int32" | "int64" | "float32" | "float64"

/** descr strings (little-endian or byte-order-free) of the dtypes read. */
const descrs: Record<string, Dtype> = {
  "|u1": "uint8",
  "<u1": "uint8",
  "<i4": "int32",
  "<i8": "int64",
  "<f4": "float32",
  "<f8": "float64"
}

export const bytesPer: Record<Dtype, number> = { uint8: 1, int32: 4, int64: 8, float32: 4, float64: 8 }

export interface Header {
  readonly dtype: Dtype
  readonly shape: ReadonlyArray<number>
  /** Bytes before the data (magic, version, length and header). */
  readonly dataOffset: number
}

export type Data = Uint8Array | Int32Array | Float32Array | Float64Array | BigInt64Array

export interface NdArray {
  readonly dtype: Dtype
  readonly shape: ReadonlyArray<number>
  readonly data: Data
}

export const magic = Uint8Array.of(0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59)

export const count = (shape: ReadonlyArray<number>): number => shape.reduce((a, b) => a * b, 1)

/** The bytes needed to know a header's length (magic, version, length field of version 2/3). */
export const prefixLength = 12

/**
 * Parses a header from the first bytes of a file (at least `prefixLength`;
 * when fewer than the whole header, `needed` says how many to give again).
 */
export function parseHeader(bytes: Uint8Array, file: string): Header | { readonly needed: number } {
  const fail = (reason: string) => {
    throw new NpyError({ file, reason })
  }
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) fail("not a .npy array (no \\x93NUMPY magic)")
  const major = bytes[6]!
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (major < 1 || major > 3) fail(`.npy format version ${major}.${bytes[7]} is not 1.x, 2.x or 3.x`)
  const lengthBytes = major === 1 ? 2 : 4
  if (bytes.length < 8 + lengthBytes) return { needed: 8 + lengthBytes }
  const length = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true)
  const dataOffset = 8 + lengthBytes + length
  if (bytes.length < dataOffset) return { needed: dataOffset }
  const text = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(8 + lengthBytes, dataOffset))
  const field = (name: string, value: string) => new RegExp(`['"]${name}['"]\\s*:\\s*${value}`).exec(text)?.[1]
  const descr = field("descr", `['"]([^'"]*)['"]`)
  const fortran = field("fortran_order", "(True|False)")
  const shapeText = field("shape", "(\\([^)]*\\))")
  if (descr === undefined || fortran === undefined || shapeText === undefined) fail(`header ${JSON.stringify(text.trim())} lacks descr, fortran_order or shape`)
  const dtype = descrs[descr!]
  if (dtype === undefined) fail(`dtype ${descr} is not read (uint8, little-endian int32/int64/float32/float64)`)
  if (fortran !== "False") fail("the array is in Fortran order; save it C-contiguous (np.ascontiguousarray)")
  const dims = /^\((.*)\)$/.exec(shapeText!)?.[1]
  if (dims === undefined) fail(`shape ${shapeText} is not a tuple`)
  const shape = dims!.split(",").map((d) => d.trim()).filter((d) => d !== "").map(Number)
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) fail(`shape ${shapeText} is not a tuple of sizes`)
  return { dtype: dtype!, shape, dataOffset }
}

/** A typed view of little-endian element bytes (copied, so it is aligned). */
export function typed(dtype: Dtype, raw: Uint8Array): Data {
  const buffer = new Uint8Array(raw).buffer
  switch (dtype) {
    case "uint8":
      return new Uint8Array(buffer)
    case "int32":
      return new Int32Array(buffer)
    case "int64":
      return new BigInt64Array(buffer)
    case "float32":
      return new Float32Array(buffer)
    case "float64":
      return new Float64Array(buffer)
  }
}

const descrOf: Record<Dtype, string> = { uint8: "|u1", int32: "<i4", int64: "<i8", float32: "<f4", float64: "<f8" }

/** A version 1.0 header (as np.save writes it) for an array of this dtype and shape. */
export function header(dtype: Dtype, shape: ReadonlyArray<number>): Uint8Array {
  const dims = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`
  const dict = `{'descr': '${descrOf[dtype]}', 'fortran_order': False, 'shape': ${dims}, }`
  const unpadded = 10 + dict.length + 1
  const padded = dict + " ".repeat((64 - (unpadded % 64)) % 64) + "\n"
  const out = new Uint8Array(10 + padded.length)
  out.set(magic)
  out[6] = 1
  out[7] = 0
  new DataView(out.buffer).setUint16(8, padded.length, true)
  out.set(new TextEncoder().encode(padded), 10)
  return out
}
