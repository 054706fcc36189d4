/**
 * The fused kernels' matrix product in native code (native/gemm.c: AVX2 and
 * FMA, twice WebAssembly's vector width), used by the wasm backend where it
 * was built (`pnpm install` builds it when a C compiler is present) and the CPU
 * has both. It writes the wasm kernel's bits (NativeGemm.test.ts), so whether
 * it is present changes speed, never a result.
 */
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import * as NativeGemmBuild from "./NativeGemmBuild.ts"

/** C[m,n] = A·B (+ bias), operands as byte offsets into `heap` and strides as wasm/kernels.ts `gemm` takes them; bias 0 for none. */
export type Gemm = (
  heap: ArrayBuffer, a: number, ars: number, acs: number, b: number, brs: number, bcs: number, c: number, m: number, n: number, k: number, bias: number
) => void

interface Addon {
  readonly gemm: Gemm
  /** SHA-256 of the gemm.c it was compiled from. */
  readonly source: string
  /** Whether this CPU has AVX2 and FMA. */
  readonly supported: boolean
}

export type Status =
  | { readonly _tag: "Ready"; readonly gemm: Gemm }
  | { readonly _tag: "Unavailable"; readonly reason: string }

const rebuild = "pnpm --filter @tinyfusion/tensor build:native"

/** The addon at `file`, if it loads, was compiled from `source` (the text of gemm.c) and this CPU runs it. */
export const load = (file: string, source: Uint8Array): Status => {
  if (!existsSync(file)) return { _tag: "Unavailable", reason: `not built (${rebuild} needs a C compiler)` }
  let addon: Addon
  try {
    addon = createRequire(import.meta.url)(file) as Addon
  } catch (e) {
    return { _tag: "Unavailable", reason: `${file} does not load: ${e instanceof Error ? e.message : String(e)}` }
  }
  if (addon.source !== NativeGemmBuild.sourceHash(source)) return { _tag: "Unavailable", reason: `built from another native/gemm.c (run ${rebuild})` }
  if (!addon.supported) return { _tag: "Unavailable", reason: "this CPU lacks AVX2 or FMA" }
  return { _tag: "Ready", gemm: addon.gemm }
}

let loaded: Status | undefined

/** The addon, loaded on first ask, or why there is none. */
export const status = (): Status =>
  (loaded ??= load(fileURLToPath(NativeGemmBuild.output), readFileSync(NativeGemmBuild.source)))

let enabled = true

/** Turns the native product off (the wasm kernel multiplies) or back on, for before/after figures. */
export const use = (on: boolean): void => {
  enabled = on
}

/** The product to call, when it is available and on. */
export const active = (): Gemm | undefined => {
  const s = status()
  return enabled && s._tag === "Ready" ? s.gemm : undefined
}

/** For a device line: which code multiplies on the wasm backend. */
export const describe = (): string => {
  const s = status()
  if (s._tag === "Unavailable") return `wasm GEMM (native: ${s.reason})`
  return enabled ? "native AVX2 GEMM" : "wasm GEMM (native off)"
}
