/**
 * Compiles the fused kernels (wasm/kernels.ts, AssemblyScript) to the
 * wasm/kernels.wasm that FusedKernels loads. Run `pnpm --filter
 * @tinyfusion/tensor build:wasm` after editing the source; a test compiles it
 * again and checks the committed binary is this build.
 *
 * The module imports its memory (the tfjs backend's heap) and has no runtime,
 * no assertions and no abort import, so it has no data of its own to place.
 */
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

export const source = new URL("../wasm/kernels.ts", import.meta.url)
export const output = new URL("../wasm/kernels.wasm", import.meta.url)

export const flags = ["-O3", "--noAssert", "--runtime", "stub", "--importMemory", "--use", "abort=", "--enable", "simd", "--enable", "relaxed-simd"] as const

/** The compiled module's bytes. */
export async function compile(): Promise<Uint8Array> {
  const { default: asc } = await import("assemblyscript/asc")
  let binary: Uint8Array | undefined
  const result = await asc.main([fileURLToPath(source), "--outFile", "kernels.wasm", ...flags], {
    writeFile: (name, contents) => {
      if (name.endsWith("kernels.wasm") && typeof contents !== "string") binary = contents
    }
  })
  if (result.error !== null) throw new Error(`asc failed: ${result.error.message}\n${result.stderr.toString()}`)
  if (binary === undefined) throw new Error("asc wrote no kernels.wasm")
  return binary
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const binary = await compile()
  writeFileSync(output, binary)
  console.log(`${fileURLToPath(output)}: ${binary.length} bytes`)
}
