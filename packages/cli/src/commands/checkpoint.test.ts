import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import { Command } from "effect/cli"
import { Checkpoint, Config, Init } from "@tinyfusion/models"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import { checkpoint } from "./checkpoint.ts"

const run = Command.runWith(checkpoint, { version: "test" })

describe("tinyfusion checkpoint", () => {
  it.effect("import of a BF16 reference file, then export, reproduces the file; mismatches fail and write nothing", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const config = yield* Config.make("mini", { depth: 2, hiddenSize: 16 })
      const params = Init.host(config, 4)
      const reference = yield* Checkpoint.encode(config, params, { dtype: "BF16" })
      yield* fs.writeFile(`${dir}/ref.safetensors`, reference)

      yield* run(["import", `${dir}/ref.safetensors`, "--out", `${dir}/ours.safetensors`, "--model", "mini", "--depth", "2", "--hidden", "16"])
      const ours = yield* Safetensors.decode(yield* fs.readFile(`${dir}/ours.safetensors`))
      assert.deepStrictEqual([...new Set(ours.dtypes.values())], ["F32"])
      assert.deepStrictEqual(JSON.parse(ours.metadata[Checkpoint.configKey]!), config)

      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/back.safetensors`, "--dtype", "bf16"])
      assert.deepStrictEqual(yield* fs.readFile(`${dir}/back.safetensors`), reference)
      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/back32.safetensors`])
      const back = yield* Safetensors.decode(yield* fs.readFile(`${dir}/back32.safetensors`))
      const original = new Map(ParamTree.flatten(params, HostTensor.isHostTensor))
      assert.deepStrictEqual([...back.tensors.keys()].sort(), [...original.keys()].sort())
      for (const [key, t] of back.tensors) assert.isTrue(HostTensor.bitEqual(t, ours.tensors.get(key)!), key)

      const wrong = yield* Effect.flip(run(["import", `${dir}/ref.safetensors`, "--out", `${dir}/bad.safetensors`, "--model", "mini", "--depth", "3", "--hidden", "16"]))
      assert.strictEqual(wrong._tag, "CheckpointMismatch")
      assert.match(wrong.message, /10 mismatches:\n  missing blocks\.2\.attn\.qkv\.weight \[48, 16\]/)
      assert.isFalse(yield* fs.exists(`${dir}/bad.safetensors`))
      const bare = yield* Safetensors.decode(reference)
      yield* fs.writeFile(`${dir}/plain.safetensors`, Safetensors.encode(bare.tensors))
      const noConfig = yield* Effect.flip(run(["export", `${dir}/plain.safetensors`, "--out", `${dir}/x.safetensors`]))
      assert.strictEqual(noConfig._tag, "InvalidConfig")
      assert.match(noConfig.message, /no tinyfusion\.dit metadata; name its shape with --model/)
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))
})
