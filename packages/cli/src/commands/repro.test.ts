import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Bootstrap, Metrics } from "@tinyfusion/eval"
import { Claims, type Estimates, Paper, Report } from "@tinyfusion/experiments"
import { cli } from "../fixtures/Commands.ts"

const bin = path.join(import.meta.dirname, "..", "bin.ts")

/** The failure of `tinyfusion …args` run in this process. */
const failure = (args: ReadonlyArray<string>) => Effect.map(cli(args), (r) => r.failure)

/** `tinyfusion repro --synthetic …args` in a child process; SIGKILLed as soon as `killWhen` holds, when given. */
const repro = (store: string, killWhen?: () => boolean, args: ReadonlyArray<string> = []) =>
  Effect.callback<{ readonly code: number | null; readonly killed: boolean; readonly stderr: string; readonly stdout: string }>((resume) => {
    const child = spawn(process.execPath, [bin, "repro", "--synthetic", "--backend", "wasm", "--store", store, "--log-format", "json", ...args], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let killed = false
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const poll = killWhen === undefined ? undefined : setInterval(() => {
      if (!killed && killWhen()) {
        killed = true
        child.kill("SIGKILL")
      }
    }, 100)
    child.on("close", (code) => {
      if (poll !== undefined) clearInterval(poll)
      resume(Effect.succeed({ code, killed, stderr, stdout }))
    })
  })

/** The keys each JSON log line says were reused ("cache hit") or computed. */
const stageLog = (stderr: string) => {
  const hits = new Set<string>()
  const computed = new Set<string>()
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue
    const entry = JSON.parse(line) as { message: unknown; annotations?: Record<string, unknown> }
    const message = Array.isArray(entry.message) ? entry.message.join(" ") : String(entry.message)
    const key = entry.annotations?.["key"]
    if (typeof key !== "string") continue
    if (message.startsWith("cache hit")) hits.add(key)
    if (message === "computing") computed.add(key)
  }
  return { hits, computed }
}

const committed = (store: string) => {
  const dir = path.join(store, "artifacts")
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((k) => fs.existsSync(path.join(dir, k, "manifest.json"))) : []
}

interface Manifest {
  readonly stage: string
  readonly output: Record<string, unknown>
}

const manifest = (store: string, key: string) => JSON.parse(fs.readFileSync(path.join(store, "artifacts", key, "manifest.json"), "utf8")) as Manifest

/** A run's numbers read straight from its artifacts: manifests and the evaluation's stored replicates (the runner's own reading is what is under test). */
const fromArtifacts = (store: string, seed: number | undefined, keys: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const metrics: Record<string, number | boolean> = {}
    let replicates: Estimates.Run["replicates"]
    const scores = Object.keys(Metrics.Scores.fields) as ReadonlyArray<keyof Metrics.Results>
    for (const key of keys) {
      const m = manifest(store, key)
      const o = m.output
      if (m.stage === "prune") {
        if (typeof o["calibrationLoss"] === "number") metrics["calibrationLoss"] = o["calibrationLoss"]
        Object.assign(metrics, o["headline"])
      }
      if (m.stage === "recovery") {
        Object.assign(metrics, o["headline"])
        if (o["diverged"] !== undefined) metrics["diverged"] = true
      }
      if (m.stage === "evaluation") {
        for (const name of scores) metrics[name] = o[name] as number
        replicates = yield* Bootstrap.decode(fs.readFileSync(path.join(store, "artifacts", key, Bootstrap.file)))
      }
    }
    return { ...(seed === undefined ? {} : { seed }), metrics, ...(replicates === undefined ? {} : { replicates }) } satisfies Estimates.Run
  })

describe("tinyfusion repro", () => {
  it.live("quick end to end: planned, killed mid-way, rerun from the store's artifacts; the report's numbers are the stored ones, the plan all stored", () =>
    Effect.gen(function*() {
      const store = fs.mkdtempSync(path.join(os.tmpdir(), "repro-"))
      const recoveries = () => committed(store).some((k) => k.startsWith("recovery-"))
      const plan = () => cli(["repro", "--synthetic", "--backend", "wasm", "--store", store, "--plan"])

      // The plan of an empty store: every stage of the cells' graphs to run, nothing run to say so.
      const before = yield* plan()
      assert.isTrue(before.ok, before.failure)
      const [, count] = /(\d+) stages: 0 stored, (\d+) to run \(0 partly done\)/.exec(before.text) ?? []
      assert.isDefined(count, before.text)
      assert.deepStrictEqual(committed(store), [])

      // Killed once the first recovery is committed: the shared stages, a pruning and a recovery are done.
      const first = yield* repro(store, recoveries)
      assert.isTrue(first.killed, `the run ended before it could be killed: ${first.stderr.slice(-2000)}`)
      const killed = committed(store)
      assert.isTrue(killed.length >= 6, `committed before the kill: ${killed}`)

      const second = yield* repro(store)
      assert.strictEqual(second.code, 0, second.stderr.slice(-3000))
      const log = stageLog(second.stderr)
      for (const key of killed) {
        assert.isTrue(log.hits.has(key), `${key} is a cache hit`)
        assert.isFalse(log.computed.has(key), `${key} was computed again`)
      }
      assert.isAbove(log.computed.size, 0)
      const reportDir = path.join(store, "reports", "quick")
      const markdown = fs.readFileSync(path.join(reportDir, "report.md"), "utf8")

      // A third run reuses everything and writes the same report.
      const third = yield* repro(store)
      assert.strictEqual(third.code, 0, third.stderr.slice(-3000))
      assert.strictEqual(stageLog(third.stderr).computed.size, 0)
      assert.strictEqual(fs.readFileSync(path.join(reportDir, "report.md"), "utf8"), markdown)
      assert.match(third.stdout, /57 cells, 0 failed/)

      // Tables and verdicts, recomputed from the stored outputs, are the ones in the report.
      const stored = JSON.parse(fs.readFileSync(path.join(reportDir, "results.json"), "utf8")) as {
        cells: Record<string, { runs: ReadonlyArray<{ seed?: number; artifacts: ReadonlyArray<string> }>; itPerSRounds?: ReadonlyArray<number> }>
      }
      // Every cell's it/s is its shape's, from the run's one sampling-speed measurement.
      const speedKeys = committed(store).filter((k) => k.startsWith("sampling-speed-"))
      assert.strictEqual(speedKeys.length, 1)
      const shapes = manifest(store, speedKeys[0]!).output["shapes"] as ReadonlyArray<{ parameters: number; itPerS: ReadonlyArray<number> }>
      const results = new Map<string, Estimates.CellResult>()
      for (const [cell, c] of Object.entries(stored.cells)) {
        const runs = yield* Effect.forEach(c.runs, (r) => fromArtifacts(store, r.seed, r.artifacts))
        const shape = shapes.find((s) => JSON.stringify(s.itPerS) === JSON.stringify(c.itPerSRounds))
        if (c.itPerSRounds !== undefined) assert.isDefined(shape, cell)
        results.set(cell, { runs, ...(shape === undefined ? {} : { speed: { itPerS: shape.itPerS, parameters: shape.parameters } }) })
      }
      assert.strictEqual(results.size, 57)
      assert.deepStrictEqual(results.get("t1/tinydit-d14")!.speed, results.get("f4/depth-14")!.speed, "one shape, one figure")
      assert.isNumber(results.get("t1/tinydit-d14-kd")!.runs[0]!.metrics.fid)
      assert.strictEqual(results.get("t1/tinydit-d14-kd")!.runs[0]!.replicates!.fid!.length, 30)
      assert.isNumber(results.get("t1/tinydit-d14-kd")!.runs[0]!.metrics.initDistillLoss)
      assert.isNumber(results.get("t3/learnable")!.runs[0]!.metrics.calibrationLoss)
      for (const rows of [Paper.table1, Paper.table2, Paper.table3, Paper.table4, Paper.table5, Paper.table7, Paper.table8]) {
        assert.include(markdown, Report.markdown([Report.compareTable(rows, results)]).trimEnd())
      }
      const net = committed(store).find((k) => k.startsWith("feature-net-"))!
      const netOutput = manifest(store, net).output as { accuracy: number; testImages: number; model: { classes: number } }
      const instrument = Claims.instrument(results, { accuracy: netOutput.accuracy, testImages: netOutput.testImages, classes: netOutput.model.classes })
      assert.include(markdown, instrument.summary)
      for (const { claim, judgement } of Claims.judgeAll(results, instrument)) {
        assert.include(markdown, `| ${claim.text} | ${claim.source} | ${Report.verdictText(judgement)} | ${judgement.evidence} |`)
        // On the synthetic data the metrics cannot tell samples apart: no claim is reproduced.
        assert.notStrictEqual(judgement.verdict, "reproduced", claim.id)
      }
      assert.isFalse(instrument.works, instrument.summary)
      assert.match(markdown, /^# TinyFusion reproduction — preset quick\n\nThese verdicts are not evidence\./)
      const html = fs.readFileSync(path.join(reportDir, "report.html"), "utf8")
      assert.match(html, /^<!doctype html>/)
      assert.notMatch(html, /src="(?!data:)/)
      for (const figure of ["figure4-speedup", "figure5-calibration-loss", "figure6-decisions-1-2", "figure6-decisions-2-4"]) {
        assert.deepStrictEqual([...fs.readFileSync(path.join(reportDir, "figures", `${figure}.png`)).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47])
        assert.include(markdown, `(figures/${figure}.png)`)
      }
      assert.isTrue(fs.existsSync(path.join(reportDir, "samples", "t1-teacher.png")))
      assert.isTrue(fs.existsSync(path.join(reportDir, "samples", "i-untrained.png")))
      // Now the plan has every stage stored, under the keys the results name.
      const after = yield* plan()
      assert.match(after.text, new RegExp(`${count} stages: ${count} stored, 0 to run`))
      for (const cell of Object.values(stored.cells)) {
        for (const run of cell.runs) for (const key of run.artifacts) assert.match(after.text, new RegExp(`${key} +stored`))
      }
      // The store's run record keeps the results from gc.
      const record = JSON.parse(fs.readFileSync(path.join(store, "runs", "repro-quick.json"), "utf8")) as { keys: ReadonlyArray<string> }
      assert.includeMembers([...record.keys], [...stored.cells["t1/teacher"]!.runs[0]!.artifacts, speedKeys[0]!])
    }).pipe(Effect.provide(NodeServices.layer)), 20 * 60_000)

  it.live("a cell failing on every attempt under the local workers: the other cells finish, the report names it, repro exits 1 naming it", () =>
    Effect.gen(function*() {
      const store = fs.mkdtempSync(path.join(os.tmpdir(), "repro-fail-"))
      const args = ["--tables", "X", "--workers", "2"]
      const planned = yield* cli(["repro", "--synthetic", "--backend", "wasm", "--store", store, "--tables", "X", "--plan"])
      const recovery = /recovery-[0-9a-f]+/.exec(planned.text)?.[0]
      assert.isDefined(recovery, planned.text)
      // A file where the recovery of x/weight-norm-d14 keeps its checkpoints: listing them fails (ENOTDIR) on every attempt, in any worker.
      fs.mkdirSync(path.join(store, "checkpoints"))
      fs.writeFileSync(path.join(store, "checkpoints", recovery!), "")
      const run = yield* repro(store, undefined, args)
      assert.strictEqual(run.code, 1, run.stderr.slice(-3000))
      assert.include(run.stderr, "error: cell x/weight-norm-d14: no result (see the report's failed cells)")
      assert.match(run.stdout, /report\.md, report\.html: 3 cells, 1 failed/)

      // The other cells have their results; the failed one is in the report with its stage and reason.
      const out = path.join(store, "reports", "quick-tables-X")
      const results = JSON.parse(fs.readFileSync(path.join(out, "results.json"), "utf8")) as {
        cells: Record<string, unknown>
        failures: ReadonlyArray<{ cell: string; reason: string }>
      }
      assert.deepStrictEqual(Object.keys(results.cells).sort(), ["i/unrecovered", "i/untrained", "t1/teacher"])
      assert.deepStrictEqual(results.failures.map((f) => f.cell), ["x/weight-norm-d14"])
      assert.match(results.failures[0]!.reason, new RegExp(`^recovery ${recovery}: list .*ENOTDIR`))
      assert.match(fs.readFileSync(path.join(out, "report.md"), "utf8"), /## Cells that failed[\s\S]*\| x\/weight-norm-d14 \| recovery /)
      const keys = committed(store)
      assert.isTrue(keys.some((k) => k.startsWith("prune-export-")), `${keys}`)
      assert.notInclude(keys, recovery)

      // The parent's one view over both workers ends with the counts: three cells done, one failed, one node failed.
      const views = run.stderr.split("\n").filter((l) => l.startsWith("{")).flatMap((l) => {
        const progress = (JSON.parse(l) as { annotations?: { progress?: { cells: unknown; nodes: { failed: number } } } }).annotations?.progress
        return progress === undefined ? [] : [progress]
      })
      assert.deepStrictEqual(views.at(-1)?.cells, { total: 4, done: 3, running: 0, failed: 1 })
      assert.strictEqual(views.at(-1)?.nodes.failed, 1)
    }).pipe(Effect.provide(NodeServices.layer)), 10 * 60_000)

  it.effect("bad tables, presets without their inputs and bad counts fail naming the problem", () =>
    Effect.gen(function*() {
      const store = fs.mkdtempSync(path.join(os.tmpdir(), "repro-bad-"))
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--synthetic", "--tables", "1,6"]), /Invalid value for flag --tables: "1,6"\. Expected: comma-separated names out of all, 1, 2, 3, 4, 5, 7, 8, F4, X, I/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--preset", "paper"]), /preset paper: needs --data DIR/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--preset", "mini", "--synthetic"]), /preset mini: runs on Fashion-MNIST only/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--concurrency", "0"]), /Invalid value for flag --concurrency: "0"\. Expected: an integer ≥ 1/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--synthetic", "--queue", "http://localhost/q"]), /^error: queue http:\/\/localhost\/q: a http: URL; expected postgres:\/\/USER:PASSWORD@HOST:PORT\/DATABASE$/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--synthetic", "--queue", "postgres://me:secret@127.0.0.1:1/q"]), /^error: queue postgres:\/\/me@127\.0\.0\.1:1\/q: cannot connect .*ECONNREFUSED.*: is PostgreSQL running there\?$/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--executor", "in-process", "--workers", "2"]), /--workers is the local executor's/)
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--executor", "local", "--queue", "postgres://h/q"]), /--queue runs the stages on the queue's workers/)
      assert.match(yield* failure(["worker", "--backend", "wasm", "--store", store, "--queue", "postgres://me:secret@127.0.0.1:1/q"]), /^error: queue postgres:\/\/me@127\.0\.0\.1:1\/q: cannot connect/)
      const missing = path.join(store, "no-fashion")
      assert.match(yield* failure(["repro", "--backend", "wasm", "--store", store, "--preset", "mini", "--data", missing]), /--data .*no-fashion does not hold Fashion-MNIST/)
      assert.deepStrictEqual(committed(store), [])
    }).pipe(Effect.provide(NodeServices.layer)), 60_000)
})
