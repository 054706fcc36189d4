import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Compute } from "./Compute.ts"
import * as Fused from "./Fused.ts"
import * as FusedKernelsBuild from "./FusedKernelsBuild.ts"
import * as NativeGemm from "./NativeGemm.ts"
import * as NativeGemmBuild from "./NativeGemmBuild.ts"
import * as Rng from "./Rng.ts"
import { tf } from "./tf.ts"

const status = NativeGemm.status()
const why = status._tag === "Unavailable" ? ` (skipped: ${status.reason})` : ""

interface WasmGemm {
  gemmScratchBytes(): number
  gemm(a: number, ars: number, acs: number, b: number, brs: number, bcs: number, c: number, m: number, n: number, k: number, bias: number, scratch: number): void
}

/** The WebAssembly API of the runtime (the project's TypeScript libs do not declare it). */
const WebAssembly = (globalThis as unknown as {
  readonly WebAssembly: {
    readonly Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer }
    readonly Module: new (bytes: Uint8Array) => object
    readonly Instance: new (module: object, imports: object) => { readonly exports: unknown }
  }
}).WebAssembly

/** The wasm kernel on a heap of its own, and a bump allocator on that heap (16-byte aligned plus 8, as tfjs's offsets can be). */
const wasmHeap = () => {
  const memory = new WebAssembly.Memory({ initial: 256 })
  const kernels = new WebAssembly.Instance(new WebAssembly.Module(readFileSync(FusedKernelsBuild.output)), { env: { memory } }).exports as unknown as WasmGemm
  let top = 1 << 16
  const alloc = (floats: number) => {
    const at = top + 8
    top += (floats * 4 + 64 + 15) & ~15
    return at
  }
  return { memory, kernels, alloc, scratch: alloc(kernels.gemmScratchBytes() / 4) }
}

/** N(0, 1) values scaled by 2^e, e in [-12, 12]: sums whose roundings depend on their order. */
const fill = (heap: ArrayBuffer, at: number, floats: number, seed: number) => {
  const s = Rng.stream(seed, "native-gemm")
  const values = Rng.normal(s, 0, floats)
  const exponents = Rng.uniform(s, 1, floats)
  const view = new Float32Array(heap, at, floats)
  for (let i = 0; i < floats; i++) view[i] = values[i]! * 2 ** Math.round(24 * exponents[i]! - 12)
}

describe(`NativeGemm${why}`, () => {
  it.skipIf(status._tag !== "Ready")("writes the wasm kernel's bits for every stride pattern, edge, k-block and bias", () => {
    const native = (status as Extract<NativeGemm.Status, { _tag: "Ready" }>).gemm
    const { memory, kernels, alloc, scratch } = wasmHeap()
    // [m, k, n]: a whole tile, edges in m and n, k past one k-block (256), n past one column block (256), m past one row block (72), k = 0.
    const shapes = [[6, 16, 16], [1, 1, 1], [5, 7, 3], [37, 300, 29], [73, 64, 300], [512, 128, 384], [32, 128, 768], [13, 0, 9]] as const
    let seed = 0
    for (const [m, k, n] of shapes) {
      const a = alloc(2 * m * k + 2), b = alloc(2 * k * n + 2), bias = alloc(n), c1 = alloc(m * n), c2 = alloc(m * n)
      for (const [at, floats] of [[a, 2 * m * k + 2], [b, 2 * k * n + 2], [bias, n]] as const) fill(memory.buffer, at, floats, seed++)
      // A and B row-major, transposed (the three products of a Linear) and a strided view of every other element.
      const patterns: ReadonlyArray<readonly [string, number, number, number, number]> = [
        ["A·B", k, 1, n, 1], ["A·Bᵀ", k, 1, 1, k], ["Aᵀ·B", 1, m, n, 1], ["Aᵀ·Bᵀ", 1, m, 1, k], ["strided", 2 * k, 2, 2 * n, 2]
      ]
      for (const [label, ars, acs, brs, bcs] of patterns) {
        for (const withBias of [false, true]) {
          new Uint32Array(memory.buffer, c1, m * n).fill(0x7fc00001)
          new Uint32Array(memory.buffer, c2, m * n).fill(0x7fc00002)
          kernels.gemm(a, ars, acs, b, brs, bcs, c1, m, n, k, withBias ? bias : 0, scratch)
          native(memory.buffer, a, ars, acs, b, brs, bcs, c2, m, n, k, withBias ? bias : 0)
          const wasm = new Uint32Array(memory.buffer, c1, m * n)
          const ours = new Uint32Array(memory.buffer, c2, m * n)
          for (let i = 0; i < m * n; i++) {
            if (wasm[i] !== ours[i]) assert.fail(`${m}×${k}×${n} ${label}${withBias ? " + bias" : ""}: entry ${i} is ${ours[i]!.toString(16)}, the wasm kernel's ${wasm[i]!.toString(16)}`)
          }
        }
      }
    }
    // The scaled values make order matter: a product summed another way would differ somewhere.
    const { memory: m2, alloc: alloc2 } = wasmHeap()
    const [a, b, c] = [alloc2(300), alloc2(300), alloc2(1)]
    fill(m2.buffer, a, 300, 1)
    fill(m2.buffer, b, 300, 2)
    native(m2.buffer, a, 300, 1, b, 1, 1, c, 1, 1, 300, 0)
    const x = new Float32Array(m2.buffer, a, 300), y = new Float32Array(m2.buffer, b, 300)
    let forward = 0
    let backward = 0
    for (let p = 0; p < 300; p++) forward = Math.fround(forward + Math.fround(x[p]! * y[p]!))
    for (let p = 299; p >= 0; p--) backward = Math.fround(backward + Math.fround(x[p]! * y[p]!))
    assert.notStrictEqual(forward, backward, "the test's values make the summation order visible")
    assert.closeTo(new Float32Array(m2.buffer, c, 1)[0]!, forward, Math.abs(forward) * 1e-5)
  })

  it.skipIf(status._tag !== "Ready")("refuses operands that reach outside the heap", () => {
    const native = (status as Extract<NativeGemm.Status, { _tag: "Ready" }>).gemm
    const memory = new WebAssembly.Memory({ initial: 1 })
    const bytes = memory.buffer.byteLength
    assert.throws(() => native(memory.buffer, 0, 4, 1, 64, 4, 1, bytes - 60, 4, 4, 4, 0), /outside the heap/)
    assert.throws(() => native(memory.buffer, bytes - 16, 4, 1, 64, 4, 1, 128, 4, 4, 4, 0), /outside the heap/)
    assert.throws(() => native(memory.buffer, 0, 4, 1, 64, 4, 1, 128, 4, 4, 4, bytes - 8), /outside the heap/)
    assert.throws(() => native(memory.buffer, 2, 4, 1, 64, 4, 1, 128, 4, 4, 4, 0), /outside the heap/)
    native(memory.buffer, 0, 4, 1, 64, 4, 1, bytes - 64, 4, 4, 4, 0)
  })

  it.skipIf(status._tag !== "Ready")("does not load an addon built from another gemm.c", () => {
    const other = new TextEncoder().encode(`${readFileSync(NativeGemmBuild.source, "utf8")}\n/* edited */\n`)
    const stale = NativeGemm.load(fileURLToPath(NativeGemmBuild.output), other)
    assert.strictEqual(stale._tag, "Unavailable")
    assert.include((stale as { reason: string }).reason, "built from another native/gemm.c")
  })

  it("says why when there is no addon", () => {
    const missing = NativeGemm.load(path.join(os.tmpdir(), "no-such-dir", "gemm.node"), new Uint8Array())
    assert.deepStrictEqual(missing, { _tag: "Unavailable", reason: "not built (pnpm --filter @tinyfusion/tensor build:native needs a C compiler)" })
  })

  it.effect.skipIf(status._tag !== "Ready")("a Linear's three products on the wasm backend: the same bits with the native product on and off", () =>
    Effect.gen(function*() {
      const s = Rng.stream(3, "native-gemm/linear")
      const x = tf.tensor(Rng.normal(s, 0, 4 * 9 * 40), [4, 9, 40])
      const w = tf.tensor(Rng.normal(s, 1, 70 * 40), [70, 40])
      const bias = tf.tensor(Rng.normal(s, 2, 70), [70])
      const dy = tf.tensor(Rng.normal(s, 3, 4 * 9 * 70), [4, 9, 70])
      const run = (on: boolean) => {
        NativeGemm.use(on)
        try {
          return tf.tidy(() => {
            const f = (xs: tf.Tensor, ws: tf.Tensor, bs: tf.Tensor) => tf.sum(tf.mul(Fused.linear(xs, ws, bs), dy))
            const [gx, gw] = tf.grads(f)([x, w, bias])
            return [Fused.linear(x, w, bias), gx!, gw!].map((t) => Buffer.from((t.dataSync() as Float32Array).buffer).toString("hex"))
          })
        } finally {
          NativeGemm.use(true)
        }
      }
      assert.strictEqual(NativeGemm.describe(), "native AVX2 GEMM")
      assert.deepStrictEqual(run(true), run(false))
      tf.dispose([x, w, bias, dy])
    }).pipe(Effect.provide(Compute.wasm)))
})

describe("NativeGemmBuild", () => {
  it("builds on x64 Linux only, and says so elsewhere", () => {
    assert.isUndefined(NativeGemmBuild.unsupported("linux", "x64"))
    assert.strictEqual(NativeGemmBuild.unsupported("darwin", "arm64"), "the native GEMM is built for x64 Linux only (this is arm64 darwin)")
  })

  it("compiles without contracting the C code's own arithmetic and stamps the source's hash", () => {
    const args = NativeGemmBuild.compilerArguments("gemm.c", "gemm.node", "/h", "ab12")
    assert.include(args, "-ffp-contract=off")
    assert.include(args, `-DSOURCE_SHA256="ab12"`)
  })
})
