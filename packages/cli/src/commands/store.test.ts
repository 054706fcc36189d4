import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { HostTensor } from "@tinyfusion/tensor"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { cli } from "../fixtures/Commands.ts"

const Up = Stage.make({
  name: "up",
  module: import.meta.url,
  config: Schema.Struct({ n: Schema.Int }),
  output: Schema.Struct({}),
  run: (config, _inputs, ctx) =>
    Effect.as(ctx.writeTensors("w.safetensors", { w: HostTensor.float32([config.n], new Float32Array(config.n).fill(1)) }), {})
})

const Down = Stage.make({
  name: "down",
  module: import.meta.url,
  config: Schema.Struct({}),
  inputs: { up: Up.output },
  output: Schema.Struct({}),
  run: (_config, _inputs, ctx) => Effect.as(ctx.writeJson("summary.json", { ok: true }), {})
})

const bin = fileURLToPath(new URL("../bin.ts", import.meta.url))

describe("tinyfusion store", () => {
  it.live("ls, verify and gc on a store with a kept run, a stray artifact and then damage", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-store-" })
      const keys = yield* Effect.gen(function*() {
        const up = yield* Stage.run(Up, { n: 4 }, {})
        const down = yield* Stage.run(Down, {}, { up })
        const stray = yield* Stage.run(Up, { n: 2 }, {})
        yield* (yield* ArtifactStore).keep("exp", [down.key])
        return { up: up.key, down: down.key, stray: stray.key }
      }).pipe(Effect.provide(ArtifactStore.layer(root)))

      const ls = yield* cli(["store", "ls", "--store", root])
      assert.isTrue(ls.ok, ls.failure)
      assert.strictEqual(ls.lines[0], `store ${root}: 3 artifacts, 0 checkpoints, 1 runs\n`)
      const row = (key: string) => ls.lines[1]!.split("\n").find((l) => l.startsWith(key))!
      assert.match(row(keys.down), /down  .* exp\s+ok$/)
      // 8 (header length) + 56 (its JSON, padded to 8) + 8 (two float32).
      assert.match(row(keys.stray), /up  .* 72 B\s+-\s+ok$/)

      const good = yield* cli(["store", "verify", "--store", root])
      assert.isTrue(good.ok, good.failure)
      assert.strictEqual(good.lines.at(-1), "\n3 artifacts and 0 checkpoints checked, 0 corrupt")

      const dry = yield* cli(["store", "gc", "--dry-run", "--store", root])
      assert.deepStrictEqual(dry.lines, [
        `would remove artifact ${root}/artifacts/${keys.stray}`,
        "1 to remove (dry run: nothing removed)"
      ])
      assert.isTrue(yield* fs.exists(`${root}/artifacts/${keys.stray}`))
      const gc = yield* cli(["store", "gc", "--store", root])
      assert.deepStrictEqual(gc.lines, [`removed artifact ${root}/artifacts/${keys.stray}`, "1 removed"])
      assert.deepStrictEqual((yield* fs.readDirectory(`${root}/artifacts`)).sort(), [keys.down, keys.up].sort())

      // A flipped byte in a tensor file and a truncated manifest.
      const tensorFile = `${root}/artifacts/${keys.up}/w.safetensors`
      const bytes = Uint8Array.from(yield* fs.readFile(tensorFile))
      bytes[bytes.length - 1]! ^= 0x01
      yield* fs.writeFile(tensorFile, bytes)
      yield* fs.truncate(`${root}/artifacts/${keys.down}/manifest.json`, 30)
      const bad = yield* cli(["store", "verify", "--store", root])
      assert.strictEqual(bad.code, 1)
      assert.strictEqual(bad.message, `2 corrupt in the store: ${keys.down}, ${keys.up}`)
      assert.include(bad.lines, `BAD ${keys.up}: file w.safetensors has the wrong sha256`)
      assert.isTrue(bad.lines.some((l) => l.startsWith(`BAD ${keys.down}: manifest.json does not decode`)))

      // The real binary exits non-zero on it.
      const proc = spawnSync(process.execPath, [bin, "store", "verify", "--store", root], { encoding: "utf8" })
      assert.strictEqual(proc.status, 1)
      assert.match(proc.stderr, /2 corrupt in the store/)

      // gc will not guess the inputs of a kept artifact it cannot read.
      const refused = yield* cli(["store", "gc", "--store", root])
      assert.isFalse(refused.ok)
      assert.match(refused.failure, /gc cannot tell its inputs/)

      // A rerun recomputes both; the store verifies again.
      yield* Effect.gen(function*() {
        const up = yield* Stage.run(Up, { n: 4 }, {})
        const down = yield* Stage.run(Down, {}, { up })
        assert.isFalse(up.cached)
        assert.isFalse(down.cached)
      }).pipe(Effect.provide(ArtifactStore.layer(root)))
      const healed = yield* cli(["store", "verify", "--store", root])
      assert.isTrue(healed.ok, healed.failure)
    })).pipe(Effect.provide(NodeServices.layer)), 60_000)
})
