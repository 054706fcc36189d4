import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import * as FusedKernelsBuild from "./FusedKernelsBuild.ts"

describe("FusedKernelsBuild", () => {
  it("the committed wasm/kernels.wasm is the build of wasm/kernels.ts (run build:wasm after editing it)", async () => {
    const built = await FusedKernelsBuild.compile()
    const committed = readFileSync(FusedKernelsBuild.output)
    assert.strictEqual(Buffer.from(built).toString("hex"), committed.toString("hex"))
  }, 60_000)
})
