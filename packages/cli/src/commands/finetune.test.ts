import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import { cli, teacherIn } from "../fixtures/Commands.ts"
import { evenly } from "./finetune.ts"

describe("tinyfusion finetune", () => {
  it("the default student keeps the first and last block, the rest evenly: SPEC's oracle for 28 → 14", () => {
    assert.deepStrictEqual(evenly(28, 14), [0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27])
    assert.deepStrictEqual(evenly(4, 2), [0, 3])
    assert.deepStrictEqual(evenly(5, 1), [0])
  })

  it.live("distils a student of a stored teacher's blocks; a key that is not a teacher is named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-finetune-" })
      const keys = yield* teacherIn(root)
      // The teacher and its data stages are cached: no dataset is opened (an empty --data folder would fail).
      const noData = yield* fs.makeTempDirectoryScoped({ prefix: "cli-finetune-no-data-" })
      const run = (args: ReadonlyArray<string>) =>
        cli(["finetune", "--backend", "wasm", "--store", root, "--data", noData, "--steps", "4", "--batch-size", "8", "--checkpoint-every", "2", "--curve-every", "1", ...args])

      const masked = yield* run(["--teacher", keys.teacher, "--kept", "1,2", "--group-size", "2"])
      assert.isTrue(masked.ok, masked.failure)
      const row = masked.lines[0]!.split("\n")[2]!
      assert.match(row, /^recovery\s+recovery-\w+\s+masked-kd \(2σ\)\s+dit DiT\(depth 2, .*\)\s+1,2\s+\S+\s+\S+\s+4 steps/)
      const key = row.split(/\s+/)[1]!
      const manifest = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${key}/manifest.json`))
      assert.deepStrictEqual(manifest.config.loss, { strategy: "masked-kd", k: 2, alphaKd: 0.9, alphaGt: 0.1, beta: 0.01, alignment: { kept: [1, 2], groups: [[0, 1], [2, 3]] } })
      assert.deepStrictEqual(manifest.inputs.latents, keys.latents)

      // The default --keep is half the depth, evenly: blocks 0 and 3, with the fixed mapping.
      const fixed = yield* run(["--teacher", keys.teacher, "--strategy", "repkd", "--alignment", "fixed"])
      assert.isTrue(fixed.ok, fixed.failure)
      assert.match(fixed.lines[0]!, /repkd\s+dit DiT\(depth 2, .*\)\s+0,3\s/)

      const wrong = yield* run(["--teacher", keys.latents])
      assert.match(wrong.message, /^--teacher: latents-\w+ is not a pretrain artifact of the store/)
    })).pipe(Effect.provide(NodeServices.layer)), 60_000)
})
