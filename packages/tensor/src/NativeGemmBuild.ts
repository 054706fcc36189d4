/**
 * Compiles native/gemm.c to the native/gemm.node addon that NativeGemm loads,
 * with the system's C compiler ($CC, else cc) and Node-API's headers (the
 * node-api-headers package: Node-API is one C ABI across Node versions).
 *
 * `pnpm install` runs it with --if-possible: where it cannot build (not x64
 * Linux, no compiler, a compiler that fails) it says why and exits 0, and the
 * wasm backend multiplies with its own kernel, to the same bits, more slowly.
 * `pnpm --filter @tinyfusion/tensor build:native` rebuilds after an edit and
 * exits non-zero when it cannot.
 */
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { readFileSync, renameSync, rmSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"

export const source = new URL("../native/gemm.c", import.meta.url)
// Named from the source's URL, not from import.meta.url: a stage's fingerprint
// counts a file named from import.meta.url by its bytes, and the addon's bytes
// vary with the compiler while its results do not (they are the wasm kernel's).
// gemm.c, named above, is what counts.
export const output = new URL("gemm.node", source)

/** The hex SHA-256 of a source text, as the addon reports the one it was built from. */
export const sourceHash = (text: Uint8Array): string => createHash("sha256").update(text).digest("hex")

/** Why this machine cannot build the addon, or undefined when it can try. */
export const unsupported = (platform: string, arch: string): string | undefined =>
  platform === "linux" && arch === "x64" ? undefined : `the native GEMM is built for x64 Linux only (this is ${arch} ${platform})`

/** The compiler's arguments for `src` to `out`. */
export const compilerArguments = (src: string, out: string, headers: string, hash: string): ReadonlyArray<string> => [
  "-O3", "-std=c11", "-fPIC", "-shared", "-fvisibility=hidden",
  // No contraction outside the intrinsics: the bits must be the wasm kernel's.
  "-ffp-contract=off",
  `-I${headers}`, `-DSOURCE_SHA256="${hash}"`,
  "-o", out, src
]

/** Builds the addon and says so, or throws why it cannot. */
export function build(): string {
  const why = unsupported(process.platform, process.arch)
  if (why !== undefined) throw new Error(why)
  const headers = (createRequire(import.meta.url)("node-api-headers") as { readonly include_dir: string }).include_dir
  const compiler = process.env["CC"] ?? "cc"
  const src = fileURLToPath(source)
  const out = fileURLToPath(output)
  const partial = `${out}.${process.pid}.partial`
  const args = compilerArguments(src, partial, headers, sourceHash(readFileSync(src)))
  const run = spawnSync(compiler, args, { encoding: "utf8" })
  if (run.error !== undefined || run.status !== 0) {
    rmSync(partial, { force: true })
    const missing = (run.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT"
    throw new Error(missing ? `no C compiler (${compiler}; install gcc)` : `${compiler} ${args.join(" ")} failed:\n${run.error?.message ?? run.stderr}`)
  }
  // Renamed into place whole, so no process loads a half-written addon.
  renameSync(partial, out)
  return `built ${out}`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const ifPossible = process.argv.includes("--if-possible")
  try {
    console.log(`native GEMM: ${build()}`)
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e)
    if (!ifPossible) {
      console.error(`native GEMM: ${reason}`)
      process.exit(1)
    }
    console.log(`native GEMM not built: ${reason}\nThe wasm backend multiplies with its own kernel: the same results, a DiT training step ~1.6× slower.`)
  }
}
