import { assert, describe, it } from "@effect/vitest"
import * as PlatformError from "effect/PlatformError"
import { ComputeError } from "@tinyfusion/tensor"
import * as Retry from "./Retry.ts"
import * as StoreError from "./StoreError.ts"
import { InvalidConfig } from "./Stage.ts"

const io = (tag: PlatformError.SystemErrorTag, code?: string) =>
  StoreError.fromPlatform("read", "/store/x")(
    PlatformError.systemError({ _tag: tag, module: "FileSystem", method: "readFile", cause: code === undefined ? undefined : { code } })
  )

describe("Retry", () => {
  it("I/O failures are transient when a second attempt may succeed", () => {
    assert.isTrue(io("Unknown", "EIO").transient)
    assert.isTrue(io("Busy", "EBUSY").transient)
    assert.isTrue(io("Unknown", "EMFILE").transient)
    assert.isTrue(io("TimedOut").transient)
    assert.isFalse(io("NotFound", "ENOENT").transient)
    assert.isFalse(io("PermissionDenied", "EACCES").transient)
    assert.isFalse(io("Unknown", "ENOSPC").transient)
    assert.strictEqual(io("Unknown", "EIO").message, "read /store/x failed: EIO: Unknown: FileSystem.readFile")
  })

  it("which errors the stage runtime retries", () => {
    assert.isTrue(Retry.isTransient(io("Unknown", "EIO")))
    assert.isFalse(Retry.isTransient(io("NotFound", "ENOENT")))
    assert.isTrue(Retry.isTransient(new ComputeError({ backend: "webgpu", operation: "matMul", cause: "device lost" })))
    assert.isTrue(Retry.isTransient(new Retry.Transient({ operation: "read shard", cause: "EIO" })))
    assert.isFalse(Retry.isTransient(new InvalidConfig({ stage: "s", issue: "x" })))
    assert.isFalse(Retry.isTransient(new Error("plain")))
    assert.isFalse(Retry.isTransient(undefined))
  })
})
