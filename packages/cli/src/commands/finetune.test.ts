import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import { cli, teacherIn } from "../fixtures/Commands.ts"

describe("tinyfusion finetune", () => {
  it.live("distils a student of a stored teacher's blocks; a key that is not a teacher is named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-finetune-" })
      const keys = yield* teacherIn(root)
      // The teacher and its data stages are cached: no dataset is opened (an empty --data folder would fail).
      const noData = yield* fs.makeTempDirectoryScoped({ prefix: "cli-finetune-no-data-" })
      const run = (args: ReadonlyArray<string>) =>
        cli([
          "finetune", "--backend", "wasm", "--store", root, "--data", noData, "--latents", keys.latents,
          "--steps", "4", "--batch-size", "8", "--checkpoint-every", "2", "--curve-every", "1", ...args
        ])

      const masked = yield* run(["--teacher", keys.teacher, "--kept", "1,2", "--group-size", "2"])
      assert.isTrue(masked.ok, masked.failure)
      const row = masked.lines[0]!.split("\n")[2]!
      assert.match(row, /^recovery\s+recovery-\w+\s+masked-kd\s+dit DiT\(depth 2, .*\)\s+1,2\s+\S+\s+\S+\s+4 steps/)
      const key = row.split(/\s+/)[1]!
      const manifest = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${key}/manifest.json`))
      assert.strictEqual(manifest.config.strategy, "masked-kd")
      assert.deepStrictEqual(manifest.config.options, { alphaKd: 0.9, alphaGt: 0.1, beta: "paper", alignment: "decision", k: 2 })
      assert.deepStrictEqual(manifest.inputs.latents, keys.latents)
      // The student records the blocks and groups the decision alignment pairs with the teacher's.
      const student = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${manifest.inputs.student}/manifest.json`))
      assert.deepStrictEqual([student.output.kept, student.output.groups, student.output.source], [[1, 2], [[0, 1], [2, 3]], keys.teacher])

      // The default --keep is half the depth, evenly: blocks 0 and 3; the strategy's options are flags.
      const fixed = yield* run(["--teacher", keys.teacher, "--strategy", "repkd", "--alignment", "fixed", "--beta", "0.5"])
      assert.isTrue(fixed.ok, fixed.failure)
      assert.match(fixed.lines[0]!, /repkd\s+dit DiT\(depth 2, .*\)\s+0,3\s/)

      const wrong = yield* run(["--teacher", keys.latents])
      assert.match(wrong.message, /input --teacher \(latents artifact latents-\w+\) does not fit/)
      const notOption = yield* run(["--teacher", keys.teacher, "--strategy", "finetune", "--k", "2"])
      assert.match(notOption.message, /--k is not an option of recovery strategy finetune; it takes none/)
    })).pipe(Effect.provide(NodeServices.layer)), 60_000)
})
