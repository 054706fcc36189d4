import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as HostTensor from "./HostTensor.ts"
import * as Safetensors from "./Safetensors.ts"

const header = (json: string): Uint8Array => {
  const bytes = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + bytes.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length), true)
  out.set(bytes, 8)
  return out
}
const concat = (...parts: Array<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) (out.set(p, at), (at += p.length))
  return out
}
const reason = <A>(e: Effect.Effect<A, Safetensors.SafetensorsError>) =>
  Effect.flip(e).pipe(Effect.map((err) => err.reason))

describe("Safetensors", () => {
  it.effect("reads a file written by hand: F32, F16, BF16, I64 and metadata", () =>
    Effect.gen(function*() {
      const json = JSON.stringify({
        __metadata__: { format: "pt" },
        a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
        b: { dtype: "F16", shape: [2], data_offsets: [8, 12] },
        c: { dtype: "BF16", shape: [1, 2], data_offsets: [12, 16] },
        d: { dtype: "I64", shape: [1], data_offsets: [16, 24] }
      })
      // 1.0f = 0x3f800000, -2.5f = 0xc0200000; half 1.0 = 0x3c00, -2.5 = 0xc100; bf16 1.0 = 0x3f80, -2.5 = 0xc020
      const data = new Uint8Array([
        0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0,
        0x00, 0x3c, 0x00, 0xc1,
        0x80, 0x3f, 0x20, 0xc0,
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00
      ])
      const file = yield* Safetensors.decode(concat(header(json), data))
      assert.deepStrictEqual(file.metadata, { format: "pt" })
      assert.deepStrictEqual([...file.tensors.get("a")!.data], [1, -2.5])
      assert.deepStrictEqual([...file.tensors.get("b")!.data], [1, -2.5])
      assert.deepStrictEqual(file.tensors.get("c")!.shape, [1, 2])
      assert.deepStrictEqual([...file.tensors.get("c")!.data], [1, -2.5])
      assert.strictEqual(file.tensors.get("d")!.dtype, "int32")
      assert.deepStrictEqual([...file.tensors.get("d")!.data], [7])
      assert.strictEqual(file.dtypes.get("b"), "F16")
    }))

  it.effect("round trip is bit-exact, NaN payloads and signed zeros included", () =>
    Effect.gen(function*() {
      const bits = new Uint32Array([0x7fc00001, 0x80000000, 0x00000001, 0x7f7fffff, 0xff800000, 0x3eaaaaab])
      const a = HostTensor.float32([2, 3], new Float32Array(bits.buffer))
      const b = HostTensor.int32([3], new Int32Array([-1, 0, 2147483647]))
      const bytes = Safetensors.encode([["w", a], ["ids", b]], { metadata: { step: "3" } })
      assert.strictEqual((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8, 0)
      const file = yield* Safetensors.decode(bytes)
      assert.isTrue(HostTensor.bitEqual(file.tensors.get("w")!, a))
      assert.isTrue(HostTensor.bitEqual(file.tensors.get("ids")!, b))
      assert.deepStrictEqual(file.metadata, { step: "3" })
      // Deterministic bytes: the same tensors in another order encode identically.
      assert.deepStrictEqual(Safetensors.encode([["ids", b], ["w", a]], { metadata: { step: "3" } }), bytes)
      // A Node Buffer inside a larger pool (what file reads return) decodes the same.
      const pooled = Buffer.concat([Buffer.alloc(24, 7), Buffer.from(bytes)]).subarray(24)
      const fromBuffer = yield* Safetensors.decode(pooled)
      assert.isTrue(HostTensor.bitEqual(fromBuffer.tensors.get("w")!, a))
      assert.isTrue(HostTensor.bitEqual(fromBuffer.tensors.get("ids")!, b))
    }))

  it.effect("F64 tensors round trip exactly and also read as float32", () =>
    Effect.gen(function*() {
      const values = new Float64Array([1 / 3, -1e300, 2 ** -1074, 0.1])
      const bytes = Safetensors.encode([["x", { dtype: "float64", shape: [2, 2], data: values }]])
      // 1/3 as a double is 0x3fd5555555555555, little-endian.
      assert.deepStrictEqual([...bytes.subarray(bytes.length - 32, bytes.length - 24)], [0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0xd5, 0x3f])
      const file = yield* Safetensors.decode(bytes)
      assert.strictEqual(file.dtypes.get("x"), "F64")
      assert.deepStrictEqual([...file.float64.get("x")!], [...values])
      assert.deepStrictEqual(file.tensors.get("x")!.shape, [2, 2])
      assert.deepStrictEqual([...file.tensors.get("x")!.data], [...Float32Array.from(values)])
      // From a Node Buffer inside a larger pool, as fs.readFile returns: the exact values still.
      const pool = Buffer.alloc(bytes.length + 64, 0xff)
      pool.set(bytes, 24)
      const fromPool = yield* Safetensors.decode(pool.subarray(24, 24 + bytes.length))
      assert.deepStrictEqual([...fromPool.float64.get("x")!], [...values])
    }))

  it.effect("decodes from a Node Buffer (a view into a larger pool), as fs.readFile returns", () =>
    Effect.gen(function*() {
      const a = HostTensor.float32([3], new Float32Array([1.5, -2, 3.25]))
      const bytes = Safetensors.encode([["a", a]])
      const pool = Buffer.alloc(bytes.length + 64, 0xff)
      pool.set(bytes, 16)
      const file = yield* Safetensors.decode(pool.subarray(16, 16 + bytes.length))
      assert.isTrue(HostTensor.bitEqual(file.tensors.get("a")!, a))
    }))

  it.effect("F16 and BF16 writing rounds to nearest even", () =>
    Effect.gen(function*() {
      const values = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -24, 65504, 65520, -0, 1 / 3])
      const bits = new Uint32Array(values.buffer)
      assert.deepStrictEqual(
        [...bits].map(Safetensors.f32BitsToF16),
        [0x3c00, 0x3c02, 0x0001, 0x7bff, 0x7c00, 0x8000, 0x3555]
      )
      // bf16 keeps the top 16 bits, rounding the low half: 1/3 = 0x3eaaaaab → 0x3eab
      assert.strictEqual(Safetensors.f32BitsToBf16(0x3eaaaaab), 0x3eab)
      assert.strictEqual(Safetensors.f32BitsToBf16(0x3f808000), 0x3f80)
      assert.strictEqual(Safetensors.f32BitsToBf16(0x3f818000), 0x3f82)
      const file = yield* Safetensors.decode(
        Safetensors.encode([["h", HostTensor.float32([7], values)]], { dtype: "F16" })
      )
      assert.deepStrictEqual([...file.tensors.get("h")!.data], [1, 1 + 2 ** -9, 2 ** -24, 65504, Infinity, -0, 0.333251953125])
    }))

  it.effect("rejects bad and truncated files with a reason", () =>
    Effect.gen(function*() {
      const good = Safetensors.encode([["w", HostTensor.float32([4], new Float32Array([1, 2, 3, 4]))]])
      assert.match(yield* reason(Safetensors.decode(good.subarray(0, 5))), /shorter than the 8-byte/)
      assert.match(yield* reason(Safetensors.decode(good.subarray(0, good.length - 4))), /truncated/)
      assert.match(yield* reason(Safetensors.decode(good.subarray(0, 20))), /header claims/)
      assert.match(yield* reason(Safetensors.decode(header("{not json"))), /not JSON/)
      assert.match(
        yield* reason(Safetensors.decode(header(JSON.stringify({ w: { dtype: "Q8", shape: [1], data_offsets: [0, 1] } })))),
        /tensor w/
      )
      assert.match(
        yield* reason(Safetensors.decode(concat(header(JSON.stringify({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } })), new Uint8Array(8)))),
        /needs 12 bytes/
      )
      assert.match(
        yield* reason(Safetensors.decode(concat(
          header(JSON.stringify({
            a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
            b: { dtype: "F32", shape: [2], data_offsets: [4, 12] }
          })),
          new Uint8Array(12)
        ))),
        /overlap/
      )
    }))
})
