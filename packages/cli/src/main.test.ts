/**
 * Nothing silent: every bad input of issue 20 run through the CLI, each
 * asserting its exit code and the first line of its message; then edited
 * manifests, which `store verify` reports and a rerun recomputes.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger, PlatformError, Schema } from "effect"
import { ArtifactStore, Checkpoint, Stage } from "@tinyfusion/core"
import { Fixtures as EvalFixtures } from "@tinyfusion/eval"
import { Fixtures, Init, StateDict } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { cli, teacherIn } from "./fixtures/Commands.ts"
import { exitCodes } from "./main.ts"

const { done, failed, refused } = exitCodes

/** A case: what a user types, the exit code, and the first line of the message (exact, or a pattern). */
type Case = readonly [args: ReadonlyArray<string>, code: number, message: string | RegExp]

/** A FileSystem that refuses every write, as a read-only mount does (root may write anywhere else). */
const readOnly = Layer.effect(
  FileSystem.FileSystem,
  Effect.map(FileSystem.FileSystem, (real) => {
    const denied = (method: string) =>
      Effect.fail(PlatformError.systemError({ _tag: "PermissionDenied", module: "FileSystem", method, cause: Object.assign(new Error("read-only file system"), { code: "EROFS" }) }))
    return { ...real, makeDirectory: () => denied("makeDirectory"), writeFile: () => denied("writeFile"), open: () => denied("open") } satisfies FileSystem.FileSystem
  })
)

/** A loop that checkpoints after every step and fails at step 3, as a killed pretraining leaves its checkpoints. */
const Killed = Stage.make({
  name: "killed",
  module: import.meta.url,
  config: Schema.Struct({}),
  output: Schema.Struct({}),
  run: (_config, _inputs, ctx) =>
    Effect.gen(function*() {
      yield* Checkpoint.loop(ctx, {
        steps: 4,
        every: 1,
        data: Schema.Struct({ adamStep: Schema.Int }),
        init: Effect.sync(() => ({ tensors: { w: tf.tensor1d([1, 2]) }, data: { adamStep: 0 } })),
        step: (state, step) =>
          step === 3
            ? Effect.die(new Error("killed"))
            : Effect.sync(() => ({ state: { tensors: { w: tf.add(state.tensors.w, 1) as tf.Tensor1D }, data: { adamStep: step + 1 } }, loss: 1 }))
      })
      return {}
    })
})

const check = (cases: ReadonlyArray<Case>, run: (args: ReadonlyArray<string>) => ReturnType<typeof cli>) =>
  Effect.gen(function*() {
    for (const [args, code, message] of cases) {
      const result = yield* run(args)
      const what = args.join(" ")
      assert.strictEqual(result.code, code, `${what}: ${result.failure}`)
      if (typeof message === "string") assert.strictEqual(result.message, message, what)
      else assert.match(result.message, message, what)
      // One line, never a trace.
      assert.isFalse(result.stderr.some((l) => /\bat (file|node):/.test(l)), what)
    }
    return cases.length
  })

describe("tinyfusion: bad input is refused with one line and a non-zero exit", () => {
  it.live("every case, through the CLI", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-bad-" })
      // A store of a synthetic 4-block teacher, and no dataset anywhere near: no case may open one.
      const keys = yield* teacherIn(root)
      const noData = yield* fs.makeTempDirectoryScoped({ prefix: "cli-bad-no-data-" })
      const up = yield* EvalFixtures.upstream.pipe(
        Effect.provide(Layer.mergeAll(ArtifactStore.layer(root), EvalFixtures.dataset, Logger.layer([]))),
        Effect.provide(Compute.wasm)
      )
      const ditFile = `${root}/dit.safetensors`
      yield* fs.writeFile(ditFile, yield* up.model.bytes("ema.safetensors"))
      const model = up.model.output.config
      const nanFile = `${root}/nan.safetensors`
      const nan = ParamTree.map(Init.host(model, 0), HostTensor.isHostTensor, (t) => HostTensor.float32(t.shape, new Float32Array(t.data.length).fill(Number.NaN)))
      yield* fs.writeFile(nanFile, yield* StateDict.encode(model, nan))
      const aFile = `${root}/a-file`
      yield* fs.writeFileString(aFile, "")
      const missing = `${root}/no-such-dir`
      const store = ["--backend", "wasm", "--store", root]
      const teacher = ["--data", noData, "--teacher", keys.teacher]
      const evalFlags = ["--autoencoder", up.autoencoder.key, "--reference", up.reference.key, "--batch-size", "4", "--grid", "0", "--split-size", "4"]
      const tiny = { ...Fixtures.tiny, hiddenSize: 16, depth: 2 }
      yield* fs.writeFile(`${root}/tiny.safetensors`, yield* StateDict.encode(tiny, Init.host(tiny, 1)))
      const flag = (name: string, value: string, expected: string) => `Invalid value for flag --${name}: "${value}". Expected: ${expected}`

      const cases: ReadonlyArray<Case> = [
        // Crashed untyped before.
        [["finetune", ...store, ...teacher, "--strategy", "repkd", "--group-size", "0"], refused, flag("group-size", "0", "an integer ≥ 1")],
        [["sample", ...store, "--model", `${root}/tiny.safetensors`, "--steps", "0"], failed, /^sampling flags: .*invalid timestep respacing "0": keeps no timestep; sample with at least one/],
        [["eval", ...store, "--model-key", up.model.key, ...evalFlags, "--n", "4", "--steps", "0"], failed, /^invalid config for stage evaluation: .*invalid timestep respacing "0": keeps no timestep/],
        [["throughput", ...store, "--preset", "mini", "--batch", "-4"], refused, flag("batch", "-4", "an integer ≥ 1")],
        // Accepted as if valid before.
        [["finetune", ...store, ...teacher, "--group-size", "-2"], refused, flag("group-size", "-2", "an integer ≥ 1")],
        [["finetune", ...store, ...teacher, "--group-size", "5"], failed, "--group-size: 5 does not divide the teacher's 4 blocks into groups"],
        [["prune", ...store, ...teacher, "--scheme", "1:3"], failed,
          "--scheme: 1:3 on 4 blocks leaves the last 1 in no group (always kept: 2 blocks in all); give --keep 2 to prune so"],
        [["repro", ...store, "--tables", ""], refused, "Missing value for flag --tables. Expected: comma-separated names out of all, 1, 2, 3, 4, 5, 7, 8, F4, X, I"],
        [["repro", ...store, "--data", missing], failed, new RegExp(`^preset quick: --data ${missing} does not hold Fashion-MNIST \\(missing train-images-idx3-ubyte.gz, `)],
        [["repro", ...store, "--data", noData], failed, new RegExp(`^preset quick: --data ${noData} does not hold Fashion-MNIST`)],
        [["store", "verify", "--store", missing], failed, `read the store ${missing} failed: no such directory`],
        [["store", "verify", "--store", noData], failed, `read the store ${noData} failed: it holds none of artifacts/, checkpoints/, runs/, so it is not a store`],
        [["eval", ...store, "--model-file", nanFile, ...evalFlags, "--n", "4", "--steps", "2"], failed,
          /^the raw weights of model-file-[0-9a-f]+: \d+ of \d+ values are not finite \(the first in pos_embed\); no metric of them means anything$/],
        [["sample", ...store, "--model", nanFile, "--steps", "2", "--out", `${root}/nan.png`], failed,
          new RegExp(`^the weights of ${nanFile}: \\d+ of \\d+ values are not finite \\(the first in pos_embed\\); no metric of them means anything$`)],
        [["eval", ...store, "--model-file", ditFile, "--family", "sit", ...evalFlags, "--n", "4", "--steps", "2"], failed,
          `${ditFile} holds a dit model (its metadata records the family), not a sit one`],
        [["eval", ...store, "--model-key", up.model.key, "--family", "sit", ...evalFlags, "--n", "4", "--steps", "2"], failed, `which model? ${up.model.key} holds a dit model, not a sit one`],
        // Unclear before.
        [["store", "ls", "--store", aFile], failed, `open the store ${aFile} failed: it is not a directory`],
        [["repro", "--store", aFile, "--synthetic"], failed, `open the store ${aFile} failed: it is not a directory`],
        [["prune", ...store, ...teacher, "--scheme", "3:2"], refused, flag("scheme", "3:2", "an N:M scheme with 1 ≤ N ≤ M, e.g. 1:2")],
        // A strategy's option, checked by its own Schema as the command line is parsed.
        [["finetune", ...store, ...teacher, "--kept", "1,2", "--alpha-kd", "-1"], refused, flag("alpha-kd", "-1", "a value greater than or equal to 0 (the option alphaKd)")],
        [["pretrain", ...store, "--data", noData, "--steps", "0"], refused, flag("steps", "0", "an integer ≥ 1")],
        [["prune", ...store, ...teacher, "--scheme", "-1:2"], refused, flag("scheme", "-1:2", "an N:M scheme with 1 ≤ N ≤ M, e.g. 1:2")],
        [["store", "verify", "--store", root, "--log-level", "error"], done, ""],
        // Siblings with the same problem.
        [["prune", ...store, ...teacher, "--scheme", "1:2", "--keep", "3"], failed, "--scheme: invalid pruning target for a 4-block model: scheme 1:2 keeps 2 blocks, not 3"],
        [["prune", ...store, ...teacher, "--method", "nonesuch", "--keep", "2"], failed, /^no pruner named "nonesuch"; known: /],
        [["prune", ...store, ...teacher, "--keep", "2", "--calibration", "0"], refused, flag("calibration", "0", "an integer ≥ 1")],
        [["finetune", ...store, ...teacher, "--kept", "1,9"], failed, "--kept: block 9 is not one of the teacher's 4 blocks (0..3)"],
        [["finetune", ...store, ...teacher, "--kept", "2,1"], refused, flag("kept", "2,1", "comma-separated increasing integers ≥ 0, e.g. 1,3,5")],
        [["finetune", ...store, ...teacher, "--keep", "9"], failed, "--keep: 9 blocks of a 4-block teacher"],
        [["finetune", ...store, ...teacher, "--group-size", "2", "--alignment", "fixed"], failed, "--group-size: the decision's groups do not apply to --alignment fixed"],
        [["finetune", ...store, ...teacher, "--ema-decay", "1.5"], refused, flag("ema-decay", "1.5", "a number in [0, 1]")],
        [["pretrain", ...store, "--data", noData, "--lr", "0"], refused, flag("lr", "0", "a number > 0")],
        [["data", "latents", ...store, "--data", noData, "--shard-size", "0"], refused, flag("shard-size", "0", "an integer ≥ 1")],
        [["sample", ...store, "--model", `${root}/tiny.safetensors`, "--per-class", "0"], refused, flag("per-class", "0", "an integer ≥ 1")],
        [["sample", ...store, "--model", `${root}/tiny.safetensors`, "--classes", "1,x"], refused, flag("classes", "1,x", "comma-separated integers ≥ 0, e.g. 1,3,5")],
        [["eval", ...store, "--model-key", up.model.key, ...evalFlags, "--n", "0"], refused, flag("n", "0", "an integer ≥ 1")],
        [["eval", ...store, "--model-key", up.model.key, ...evalFlags, "--n", "4", "--cfg", "0.5"], refused, flag("cfg", "0.5", "a number ≥ 1 (1: no guidance)")],
        [["eval", ...store, "--model-key", up.model.key, ...evalFlags, "--n", "4", "--replicates", "-1"], refused, flag("replicates", "-1", "an integer ≥ 0")],
        [["bench", "depth", "--rounds", "0"], refused, flag("rounds", "0", "an integer ≥ 1")],
        [["throughput", ...store, "--preset", "mini", "--repetitions", "0"], refused, flag("repetitions", "0", "an integer ≥ 1")],
        // Every numeric flag of every bench, checked as the others are.
        [["bench", "dit", "--batch", "-4"], refused, flag("batch", "-4", "an integer ≥ 1")],
        [["bench", "dit", "--profile", "-1"], refused, flag("profile", "-1", "an integer ≥ 0")],
        [["bench", "fid", "--dim", "0"], refused, flag("dim", "0", "an integer ≥ 1")],
        [["bench", "mar", "--cfg", "0.5"], refused, flag("cfg", "0.5", "a number ≥ 1 (1: no guidance)")],
        [["bench", "prune", "--scheme", "3:2"], refused, flag("scheme", "3:2", "an N:M scheme with 1 ≤ N ≤ M, e.g. 1:2")],
        [["bench", "prune", "--updates", "lora,none"], refused, flag("updates", "lora,none", "comma-separated names out of lora, frozen, full")],
        [["bench", "depth", "--depths", "28,0"], refused, flag("depths", "28,0", "comma-separated integers ≥ 1, e.g. 28,14")],
        [["bench", "depth", "--widths", "0.5,1"], refused, flag("widths", "0.5,1", "comma-separated numbers between 0 and 1, e.g. 0.25,0.5, or none")],
        [["bench", "store", "--mib", "0"], refused, flag("mib", "0", "an integer ≥ 1")],
        [["bench", "train", "--keep", "0"], refused, flag("keep", "0", "an integer ≥ 1")],
        [["bench", "compute", "--budget-s", "0"], refused, flag("budget-s", "0", "an integer ≥ 1")],
        [["bench", "paper", "--repetitions", "-2"], refused, flag("repetitions", "-2", "an integer ≥ 1")],
        [["bench", "matmul", "--repetitions", "0"], refused, flag("repetitions", "0", "an integer ≥ 1")],
        [["checkpoint", "import", ditFile, "--out", `${root}/x.safetensors`, "--depth", "0"], refused, flag("depth", "0", "an integer ≥ 1")],
        [["repro", ...store, "--concurrency", "0"], refused, flag("concurrency", "0", "an integer ≥ 1")],
        [["repro", ...store, "--tables", "1,6"], refused, flag("tables", "1,6", "comma-separated names out of all, 1, 2, 3, 4, 5, 7, 8, F4, X, I")],
        [["repro", ...store, "--synthetic", "--data", noData], failed, "preset quick: --synthetic and --data: give one (the synthetic dataset needs no folder)"],
        [["repro", ...store, "--preset", "mini", "--data", noData], failed, new RegExp(`^preset mini: --data ${noData} does not hold Fashion-MNIST`)],
        [["repro", ...store, "--preset", "small", "--data", noData], failed, new RegExp(`^preset small: --data ${noData} does not hold Fashion-MNIST`)],
        [["eval", ...store, "--model-key", up.model.key, ...evalFlags, "--steps", "4", "--steps", "0"], refused, "--steps is given more than once; give it once"]
      ]
      const counted = yield* check(cases, cli)

      // A read-only store: one message before anything runs.
      const readOnlyCases: ReadonlyArray<Case> = [
        [["repro", "--backend", "wasm", "--store", `${root}/ro`, "--synthetic"], failed, new RegExp(`^write to the store ${root}/ro failed: it is not writable \\(EROFS: `)]
      ]
      const readOnlyCount = yield* check(readOnlyCases, (args) => Effect.provide(cli(args), readOnly))
      assert.strictEqual(counted + readOnlyCount, 61)

      // Nothing above computed anything but the NaN file's model-file artifact (its evaluation was refused):
      // the teacher's 3 artifacts and the evaluation fixtures' 4, and that one.
      const verified = yield* cli(["store", "verify", "--store", root])
      assert.strictEqual(verified.lines.at(-1), "\n8 artifacts and 0 checkpoints checked, 0 corrupt")
    }).pipe(Effect.provide(NodeServices.layer))), 240_000)

  it.live("an edited manifest is reported by store verify and recomputed by the next run", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-edit-" })
      const keys = yield* teacherIn(root)
      const noData = yield* fs.makeTempDirectoryScoped({ prefix: "cli-edit-no-data-" })
      const prune = [
        "prune", "--backend", "wasm", "--store", root, "--data", noData, "--teacher", keys.teacher, "--latents", keys.latents,
        "--method", "oracle", "--keep", "2", "--calibration", "8"
      ]
      const first = yield* cli(prune)
      assert.isTrue(first.ok, first.failure)
      const row = first.lines[0]!.split("\n")[2]!
      const key = row.split(/\s+/)[1]!
      const at = `${root}/artifacts/${key}/manifest.json`
      const original = yield* fs.readFileString(at)
      const loss = JSON.parse(original).output.calibrationLoss as number
      const edits: ReadonlyArray<readonly [string, string, string]> = [
        ["output.calibrationLoss", `"calibrationLoss": ${loss}`, `"calibrationLoss": ${loss + 0.1}`],
        ["output.kept", `"kept": [\n      0,`, `"kept": [\n      1,`],
        ["config", `"keep": 2`, `"keep": 3`],
        ["inputs", `"teacher": "${keys.teacher}"`, `"teacher": "${keys.latents}"`],
        ["metrics", `"metrics": {`, `"metrics": { "fid": 1,`]
      ]
      for (const [field, from, to] of edits) {
        assert.include(original, from, field)
        yield* fs.writeFileString(at, original.replace(from, to))
        const verify = yield* cli(["store", "verify", "--store", root])
        assert.strictEqual(verify.code, failed, field)
        assert.strictEqual(verify.message, `1 corrupt in the store: ${key}`, field)
        assert.include(verify.lines, `BAD ${key}: manifest.json was edited after it was written: its digest does not match its fields`, field)
        // The next run recomputes it: the same decision and loss as before the edit.
        const again = yield* cli(prune)
        assert.isTrue(again.ok, again.failure)
        // The same row but its last column, the stage's wall time.
        const untimed = (r: string) => r.split(/\s{2,}/).slice(0, -1).join("  ")
        assert.strictEqual(untimed(again.lines[0]!.split("\n")[2]!), untimed(row), field)
        assert.strictEqual(JSON.parse(yield* fs.readFileString(at)).output.calibrationLoss, loss, field)
        assert.strictEqual((yield* cli(["store", "verify", "--store", root])).code, done, field)
      }

      // A checkpoint whose manifest was edited (adamStep 2 → 3): reported, not resumed from.
      const killed = yield* Effect.exit(Stage.run(Killed, {}, {}).pipe(Effect.provide(Layer.mergeAll(ArtifactStore.layer(root), Compute.cpu, Logger.layer([])))))
      assert.strictEqual(killed._tag, "Failure")
      const checkpointKey = yield* Stage.key(Killed, {}, {})
      const checkpoint = `${root}/checkpoints/${checkpointKey}/0000000002/manifest.json`
      const text = yield* fs.readFileString(checkpoint)
      assert.include(text, `"adamStep": 2`)
      yield* fs.writeFileString(checkpoint, text.replace(`"adamStep": 2`, `"adamStep": 3`))
      const verify = yield* cli(["store", "verify", "--store", root])
      assert.strictEqual(verify.message, `1 corrupt in the store: ${checkpointKey} checkpoint 2`)
      assert.include(verify.lines, `BAD ${checkpointKey} checkpoint 2: manifest.json was edited after it was written: its digest does not match its fields`)
    }).pipe(Effect.provide(NodeServices.layer))), 120_000)

  it("the binary prints a typed failure as one line, its trace only under --log-level debug", () => {
    const bin = fileURLToPath(new URL("./bin.ts", import.meta.url))
    const plain = spawnSync(process.execPath, [bin, "store", "verify", "--store", "/no/such/store"], { encoding: "utf8" })
    assert.strictEqual(plain.status, failed)
    assert.strictEqual(plain.stderr, "error: read the store /no/such/store failed: no such directory\n")
    const debug = spawnSync(process.execPath, [bin, "--log-level", "debug", "store", "verify", "--store", "/no/such/store"], { encoding: "utf8" })
    assert.strictEqual(debug.status, failed)
    const lines = debug.stderr.split("\n")
    assert.strictEqual(lines[0], "error: read the store /no/such/store failed: no such directory")
    assert.isTrue(lines.some((l) => /^\s+at /.test(l)), debug.stderr)
    const usage = spawnSync(process.execPath, [bin, "throughput", "--batch", "-4"], { encoding: "utf8" })
    assert.strictEqual(usage.status, refused)
    assert.strictEqual(usage.stderr, `error: Invalid value for flag --batch: "-4". Expected: an integer ≥ 1\n`)
  }, 60_000)
})
