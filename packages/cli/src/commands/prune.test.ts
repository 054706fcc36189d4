import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import { cli, teacherIn } from "../fixtures/Commands.ts"

describe("tinyfusion prune", () => {
  it.live("prunes a stored teacher with the learnable method and a baseline, exports the model; bad requests are named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-prune-" })
      const keys = yield* teacherIn(root)
      // The teacher and its data stages are cached: no dataset is opened (an empty --data folder would fail).
      const noData = yield* fs.makeTempDirectoryScoped({ prefix: "cli-prune-no-data-" })
      const run = (args: ReadonlyArray<string>) =>
        cli(["prune", "--backend", "wasm", "--store", root, "--data", noData, "--teacher", keys.teacher, "--latents", keys.latents, "--calibration", "8", ...args])

      // The learnable method's own options are flags: --iterations, --batch-size, --update.
      const learned = yield* run(["--scheme", "1:2", "--iterations", "6", "--batch-size", "4", "--update", "full", "--export"])
      assert.isTrue(learned.ok, learned.failure)
      const [, , prune, exported] = learned.lines[0]!.split("\n")
      // 1:2 over 4 blocks keeps one of each pair: the kept list is [0 or 1, 2 or 3].
      assert.match(prune!, /^prune\s+prune-\w+\s+learnable 1:2\s+[01],[23]\s+confidence 0\.\d{3}\s+\d\.\d{4}\s+\d+\.\d/)
      assert.match(exported!, /^prune-export\s+prune-export-\w+\s+2 blocks/)
      const key = prune!.split(/\s+/)[1]!
      const decision = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${key}/decision.json`))
      assert.strictEqual(decision.evidence.history.length > 1, true)
      assert.deepStrictEqual(decision.groups, [[0, 1], [2, 3]])
      const manifest = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${key}/manifest.json`))
      assert.include(manifest.config.options, { iterations: 6, batchSize: 4, update: "full", rank: 8 })
      assert.deepStrictEqual(manifest.inputs, { teacher: keys.teacher, data: keys.latents })

      // Oracle keeps the first and the last block.
      const oracle = yield* run(["--method", "oracle", "--keep", "2"])
      assert.isTrue(oracle.ok, oracle.failure)
      assert.match(oracle.lines[0]!, /oracle\s+0,3\s+-\s+\d\.\d{4}\s+\d+\.\d/)

      // An added pruner (experiments/src/pruners) with its option.
      const norm = yield* run(["--method", "weight-norm", "--keep", "2", "--norm", "l1"])
      assert.isTrue(norm.ok, norm.failure)
      assert.match(norm.lines[0]!, /weight-norm\s+\d,\d\s+-\s+\d\.\d{4}/)

      // Diff-Pruning keeps every block and narrows them: half the parameters of the 16-wide teacher.
      const width = yield* run(["--method", "diff-pruning", "--keep", "4", "--ratio", "0.5", "--stride", "250", "--export"])
      assert.isTrue(width.ok, width.failure)
      assert.match(width.lines[0]!, /diff-pruning\s+0,1,2,3\s+-\s+\d+\.\d{4}/)
      assert.match(width.lines[0]!, /prune-export\s+prune-export-\w+\s+4 blocks, width 12, 2×8 heads, MLP 24/)
      assert.match((yield* run(["--method", "diff-pruning", "--keep", "4"])).message, /invalid options for pruner diff-pruning.*ratio/)

      assert.match((yield* run(["--method", "nonesuch", "--keep", "2"])).message, /^no pruner named "nonesuch"/)
      assert.match((yield* run(["--scheme", "3:2"])).message, /^Invalid value for flag --scheme: "3:2"/)
      assert.match((yield* run(["--method", "oracle", "--keep", "2", "--samples", "9"])).message, /--samples is not an option of pruner oracle; it takes none/)
      assert.match((yield* run(["--method", "random", "--keep", "2", "--norm", "l1"])).message, /--norm is not an option of pruner random; its options: --pick, --samples, --checkpoint-every/)
      // An option value no pruner accepts is refused as the command line is parsed.
      const badNorm = yield* run(["--method", "weight-norm", "--keep", "2", "--norm", "l3"])
      assert.strictEqual(badNorm.code, 2)
      assert.match(badNorm.message, /^Invalid value for flag --norm: "l3"\. Expected: .*\(the option norm\)$/)
      const notModel = yield* cli(["prune", "--backend", "wasm", "--store", root, "--teacher", keys.latents, "--latents", keys.latents, "--keep", "2", "--method", "oracle"])
      assert.match(notModel.message, /input --teacher \(latents artifact latents-\w+\) does not fit/)
    })).pipe(Effect.provide(NodeServices.layer)), 120_000)
})
