/**
 * The IDX format of MNIST and Fashion-MNIST (LeCun's): two zero bytes, a
 * type byte (0x08 = unsigned byte), the number of dimensions, each dimension
 * as a big-endian uint32, then the values in row-major order. The files are
 * distributed gzipped; `decode` accepts either form.
 */
import { Effect, Schema } from "effect"
import * as zlib from "node:zlib"

export class IdxError extends Schema.TaggedError<IdxError>()("IdxError", {
  file: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.file} is not a valid IDX file: ${this.reason}`
  }
}

export interface IdxArray {
  readonly dims: ReadonlyArray<number>
  readonly data: Uint8Array
}

const UNSIGNED_BYTE = 0x08
const isGzip = (bytes: Uint8Array) => bytes.byteLength >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b

/** Parses IDX bytes (gzipped or not) holding unsigned bytes. `file` names the source in errors. */
export const decode = Effect.fn("Idx.decode")(function*(bytes: Uint8Array, file: string) {
  const fail = (reason: string) => Effect.fail(new IdxError({ file, reason }))
  let raw = bytes
  if (isGzip(bytes)) {
    const unzipped = yield* Effect.try({
      try: () => zlib.gunzipSync(bytes),
      catch: (e) => new IdxError({ file, reason: `gzip stream is corrupt or truncated (${(e as Error).message})` })
    })
    raw = new Uint8Array(unzipped.buffer, unzipped.byteOffset, unzipped.byteLength)
  }
  if (raw.byteLength < 4) return yield* fail(`${raw.byteLength} bytes, shorter than the 4-byte magic number`)
  if (raw[0] !== 0 || raw[1] !== 0) return yield* fail(`magic number starts with ${hex(raw[0]!)} ${hex(raw[1]!)}, not 00 00`)
  if (raw[2] !== UNSIGNED_BYTE) return yield* fail(`element type ${hex(raw[2]!)} is not 0x08 (unsigned byte)`)
  const rank = raw[3]!
  if (rank === 0) return yield* fail("zero dimensions")
  const headerLength = 4 + 4 * rank
  if (raw.byteLength < headerLength) return yield* fail(`header needs ${headerLength} bytes, the file has ${raw.byteLength}`)
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false))
  const count = dims.reduce((a, b) => a * b, 1)
  const available = raw.byteLength - headerLength
  if (available !== count) {
    return yield* fail(
      available < count
        ? `dimensions [${dims.join(", ")}] need ${count} bytes of data, only ${available} present (truncated file)`
        : `dimensions [${dims.join(", ")}] need ${count} bytes of data, ${available} present (trailing bytes)`
    )
  }
  return { dims, data: raw.slice(headerLength) } satisfies IdxArray
})

/** Serialises unsigned bytes as IDX (not gzipped). */
export function encode(dims: ReadonlyArray<number>, data: Uint8Array): Uint8Array {
  const count = dims.reduce((a, b) => a * b, 1)
  if (count !== data.length) throw new Error(`dimensions [${dims.join(", ")}] need ${count} values, got ${data.length}`)
  const out = new Uint8Array(4 + 4 * dims.length + data.length)
  const view = new DataView(out.buffer)
  out[2] = UNSIGNED_BYTE
  out[3] = dims.length
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false))
  out.set(data, 4 + 4 * dims.length)
  return out
}

const hex = (b: number) => `0x${b.toString(16).padStart(2, "0")}`
