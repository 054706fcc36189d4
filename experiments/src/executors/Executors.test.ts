import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { ArtifactStore } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PgBoss } from "pg-boss"
import * as Presets from "../presets.ts"
import * as Suite from "../runner.ts"
import * as Executor from "./Executor.ts"
import { jobId } from "./Job.ts"
import * as Local from "./Local.ts"
import * as Postgres from "./Postgres.ts"
import type * as View from "./View.ts"

// Table X (the weight-norm pruner: prune → export → recovery → evaluation, on the shared autoencoder,
// latents, teacher, feature network and reference) at the quick preset, with a recovery long enough
// to be killed in the middle of.
const quick = Presets.quick("synthetic")
const preset: Presets.Preset = { ...quick, recovery: { ...quick.recovery, steps: { ...quick.recovery.steps, "100K": 40 }, checkpointEvery: 4 } }
const data: Presets.DataSource = { _tag: "Synthetic" }
const bin = path.join(import.meta.dirname, "..", "..", "..", "packages", "cli", "src", "bin.ts")
const temp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

const suite = (store: string, executor: Layer.Layer<never, unknown>) =>
  Suite.run({ preset, tables: ["X"], out: path.join(store, "report"), dataset: "synthetic", concurrency: "unbounded" }).pipe(
    Effect.provide(Layer.merge(Presets.dataLayer(data), executor)),
    Effect.provide(ArtifactStore.layer(store))
  )

// One Compute layer per process (tfjs has one engine): the tests' requesters share it.
const withCompute = <A, E, R>(self: Effect.Effect<A, E, R>) => self.pipe(Effect.provide(Compute.layer("wasm")), Effect.provide(NodeServices.layer))

/**
 * What must be equal between two runs: each cell's runs (metrics but the wall-clock sampling speed, and
 * artifact keys) and every artifact's files and output; of the sampling-speed stage, which measures
 * wall-clock time, the key alone.
 */
const fingerprint = (store: string) => {
  const results = JSON.parse(fs.readFileSync(path.join(store, "report", "results.json"), "utf8")) as {
    cells: Record<string, { runs: ReadonlyArray<{ metrics: Record<string, unknown>; artifacts: ReadonlyArray<string> }> }>
  }
  const cells = Object.fromEntries(Object.entries(results.cells).map(([id, c]) => [
    id,
    c.runs.map((r) => {
      const { itPerS: _, ...metrics } = r.metrics
      return { metrics, artifacts: r.artifacts }
    })
  ]))
  const artifacts = Object.fromEntries(fs.readdirSync(path.join(store, "artifacts")).sort().map((key) => {
    const m = JSON.parse(fs.readFileSync(path.join(store, "artifacts", key, "manifest.json"), "utf8")) as { stage: string; files: unknown; output: unknown }
    return [key, m.stage === "sampling-speed" ? {} : { files: m.files, output: m.output }]
  }))
  return { cells, artifacts }
}

let baseline: ReturnType<typeof fingerprint> | undefined
const single = Effect.suspend(() => {
  if (baseline !== undefined) return Effect.succeed(baseline)
  const store = temp("executors-single-")
  return suite(store, Executor.inProcess).pipe(Effect.map(() => (baseline = fingerprint(store))))
})

describe("local workers", () => {
  it.live("two worker processes give the single process's metrics and artifact bytes", () =>
    Effect.gen(function*() {
      const expected = yield* single
      const store = temp("executors-local-")
      // What the parent's view is told of each node, as the workers' processes report it.
      const told: Array<{ readonly key: string; readonly update: View.Update }> = []
      const recording = Layer.effect(
        Executor.Executor,
        Effect.map(Executor.Executor, (local) => ({
          ...local,
          submit: (r: Executor.Request) => local.submit!({ ...r, report: (update) => Effect.andThen(Effect.sync(() => told.push({ key: r.key, update })), r.report(update)) })
        }))
      ).pipe(Layer.provide(Local.layer({ workers: 2, store, backend: "wasm", logFormat: "json", data })))
      const summary = yield* suite(store, recording)
      assert.deepStrictEqual(summary.failures, [])
      assert.isAbove(Object.keys(expected.artifacts).length, 8)
      assert.deepStrictEqual(fingerprint(store), expected)

      // Every node was taken by one of the two workers once, both worked, and each node's progress came from the worker that took it.
      const keys = Object.keys(expected.artifacts).sort()
      const started = told.flatMap((t) => (t.update._tag === "Started" ? [[t.key, t.update.worker] as const] : []))
      assert.deepStrictEqual(started.map(([k]) => k).sort(), keys)
      const worker = new Map(started)
      assert.deepStrictEqual(new Set(worker.values()), new Set(["worker 1", "worker 2"]))
      const progress = told.flatMap((t) => (t.update._tag === "Progress" ? [{ key: t.key, worker: t.update.worker, figures: t.update.figures }] : []))
      for (const p of progress) assert.strictEqual(p.worker, worker.get(p.key))
      // The recovery's 40 steps: its figures climb to 40 of 40, and the last one sent is the end.
      const recovery = keys.find((k) => k.startsWith("recovery-"))!
      const steps = progress.filter((p) => p.key === recovery).map((p) => p.figures)
      assert.isAtLeast(steps.length, 2)
      assert.isTrue(steps.every((f, i) => f.label === "recovery" && f.total === 40 && (i === 0 || f.done >= steps[i - 1]!.done)))
      assert.strictEqual(steps.at(-1)!.done, 40)
    }).pipe(withCompute), 15 * 60_000)

  it.effect("a free worker takes the waiting job of the highest priority, the earliest sent of equals; a withdrawn job never runs", () =>
    Effect.scoped(Effect.gen(function*() {
      const order: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const run = yield* Local.prioritised(["the only worker"], (server, job: string) =>
        Effect.gen(function*() {
          order.push(job)
          if (job === "first") yield* Deferred.await(gate)
          return { next: server, exit: job === "failing" ? Exit.fail(`${job} failed`) : Exit.void }
        }))
      const first = yield* Effect.forkChild(run("first", 0))
      while (order.length === 0) yield* Effect.yieldNow
      // Sent while the worker is busy: taken by priority, not in the order sent.
      const sent = [["low", 1], ["high", 5], ["failing", 3], ["high, later", 5]] as const
      const rest = yield* Effect.forEach(sent, ([job, priority]) => Effect.forkChild(Effect.exit(run(job, priority))))
      const withdrawn = yield* Effect.forkChild(run("withdrawn", 9))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(withdrawn)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      const exits = yield* Effect.forEach(rest, Fiber.join)
      assert.deepStrictEqual(order, ["first", "high", "high, later", "failing", "low"])
      assert.deepStrictEqual(exits.map(Exit.isSuccess), [true, true, false, true])
    })))

  it.live("a job that fails names its stage and reason; the worker goes on with the next", () =>
    Effect.scoped(Effect.gen(function*() {
      const store = temp("executors-fail-")
      const { run } = yield* Local.pool(1, { store, backend: "wasm", logFormat: "json" })
      const job = { key: "latents-0", node: { stage: "latents", config: {}, inputs: { autoencoder: "autoencoder-missing" } }, label: "t", data }
      const failed = yield* Effect.flip(run(job))
      assert.strictEqual(failed.stage, "latents")
      assert.match(failed.message, /^latents latents-0: /)
      const unknown = yield* Effect.flip(run({ ...job, node: { ...job.node, stage: "no-such-stage" } }))
      assert.match(unknown.reason, /no stage named no-such-stage in the registry/)
    }).pipe(Effect.provide(NodeServices.layer))), 120_000)
})

// PostgreSQL: .ci/run starts a throwaway cluster and exports its URL (scripts/postgres/throwaway.sh).
const pgUrl = process.env["TINYFUSION_TEST_PG"]
if (pgUrl === undefined && process.env["CI"] === undefined) {
  console.warn("skipping the Postgres executor's tests: TINYFUSION_TEST_PG is not set (scripts/postgres/throwaway.sh start DIR prints a URL)")
}
const settings: Postgres.Settings = { heartbeatSeconds: 10, monitorSeconds: 1, attempts: 3, pollMillis: 250 }

/** A fresh database on the test server, dropped with the scope. */
const database = Effect.acquireRelease(
  Effect.promise(async () => {
    if (pgUrl === undefined) throw new Error("TINYFUSION_TEST_PG is not set: CI's .ci/run starts a throwaway PostgreSQL and exports its URL")
    const name = `tinyfusion_test_${process.pid}_${Date.now()}`
    const admin = new PgBoss({ connectionString: pgUrl, supervise: false, schedule: false })
    await admin.start()
    await admin.getDb().executeSql(`CREATE DATABASE ${name}`)
    await admin.stop({ graceful: false })
    const url = new URL(pgUrl)
    url.pathname = `/${name}`
    return { url: url.toString(), name }
  }),
  ({ name }) =>
    Effect.promise(async () => {
      const admin = new PgBoss({ connectionString: pgUrl!, supervise: false, schedule: false })
      await admin.start()
      await admin.getDb().executeSql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await admin.stop({ graceful: false })
    })
)

interface Worker {
  readonly process: ChildProcess
  log: string
}

const startWorker = (url: string, store: string): Worker => {
  const child = spawn(process.execPath, [bin, "worker", "--queue", url, "--store", store, "--backend", "wasm", "--log-format", "json"], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  const worker: Worker = { process: child, log: "" }
  child.stdout!.on("data", (d) => (worker.log += d))
  child.stderr!.on("data", (d) => (worker.log += d))
  return worker
}

const stopWorker = (w: Worker) =>
  Effect.callback<void>((resume) => {
    if (w.process.exitCode !== null || w.process.signalCode !== null) return resume(Effect.void)
    w.process.once("exit", () => resume(Effect.void))
    w.process.kill("SIGTERM")
  })

/** The keys whose stage a worker's log says it computed (JSON log lines). */
const computedBy = (log: string) =>
  log.split("\n").filter((l) => l.startsWith("{")).flatMap((l) => {
    const entry = JSON.parse(l) as { message: unknown; annotations?: Record<string, unknown> }
    const message = Array.isArray(entry.message) ? entry.message.join(" ") : String(entry.message)
    return message === "computing" && typeof entry.annotations?.["key"] === "string" ? [entry.annotations["key"]] : []
  })

const parentOf = (pid: number) => Number(fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1])

describe.skipIf(pgUrl === undefined && process.env["CI"] === undefined)("the Postgres executor (pg-boss)", () => {
  it.live("two workers, one killed mid-recovery: another takes the job and resumes; two requesters share one job per node; the single process's results", () =>
    Effect.scoped(Effect.gen(function*() {
      const expected = yield* single
      const { url } = yield* database
      const store = temp("executors-pg-")
      // The queue with the test's short heartbeat, before any worker creates it with the default one.
      yield* Postgres.connect(url, "wasm", settings).pipe(Effect.scoped)
      const workers = [startWorker(url, store), startWorker(url, store)]
      yield* Effect.addFinalizer(() => Effect.forEach(workers, stopWorker, { discard: true }))

      // Kill -9 the worker whose compute process holds the recovery's lock, once it has checkpointed.
      let killed: Worker | undefined
      const watch = setInterval(() => {
        if (killed !== undefined) return
        const recoveries = fs.existsSync(path.join(store, "checkpoints"))
          ? fs.readdirSync(path.join(store, "checkpoints")).filter((k) => k.startsWith("recovery-") && fs.readdirSync(path.join(store, "checkpoints", k)).length > 1)
          : []
        for (const key of recoveries) {
          if (fs.existsSync(path.join(store, "artifacts", key))) continue
          const lock = path.join(store, "locks", `${key}.lock`)
          if (!fs.existsSync(lock)) continue
          const holder = parentOf((JSON.parse(fs.readFileSync(lock, "utf8")) as { pid: number }).pid)
          killed = workers.find((w) => w.process.pid === holder)
          killed?.process.kill("SIGKILL")
        }
      }, 100)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(watch)))

      const requester = Postgres.layer(url, { backend: "wasm", data, settings })
      const [first, second] = yield* Effect.all([suite(store, requester), suite(store, requester)], { concurrency: 2 })
      assert.deepStrictEqual(first.failures, [])
      assert.deepStrictEqual(second.failures, [])
      assert.isDefined(killed, "no worker was killed in the middle of the recovery")
      const survivor = workers.find((w) => w !== killed)!
      assert.match(survivor.log, /resuming from the checkpoint at step [1-9]/)
      assert.deepStrictEqual(fingerprint(store), expected)

      // One job per node however many requesters; every node computed once, the killed recovery twice.
      const keys = Object.keys(expected.artifacts)
      const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false })
      yield* Effect.promise(() => boss.start())
      const jobs = yield* Effect.promise(() => boss.findJobs(Postgres.queueName("wasm"), { limit: 1000 }))
      yield* Effect.promise(() => boss.stop({ graceful: false }))
      assert.deepStrictEqual(jobs.map((j) => j.id).sort(), keys.map(jobId).sort())
      assert.isTrue(jobs.every((j) => j.state === "completed"))
      const computed = [...computedBy(workers[0]!.log), ...computedBy(workers[1]!.log)].sort()
      const recovery = keys.find((k) => k.startsWith("recovery-"))!
      assert.deepStrictEqual(computed, [...keys, recovery].sort())
    }).pipe(withCompute)), 15 * 60_000)

  it.live("a job failing on every attempt is failed with its reason; bad URLs, an unreachable server and wrong credentials are one-line errors", () =>
    Effect.scoped(Effect.gen(function*() {
      const { url } = yield* database
      const store = temp("executors-pg-fail-")
      yield* Postgres.connect(url, "wasm", settings).pipe(Effect.scoped)
      const worker = startWorker(url, store)
      yield* Effect.addFinalizer(() => stopWorker(worker))
      const built = yield* Layer.build(Postgres.layer(url, { backend: "wasm", data, settings }))
      const submit = Context.get(built, Executor.Executor).submit!
      const states: Array<string> = []
      const report = (u: View.Update) => Effect.sync(() => void states.push(u._tag === "Queued" ? u.state : u._tag))
      const failed = yield* Effect.flip(submit({ key: "latents-0", node: { stage: "latents", config: {}, inputs: { autoencoder: "autoencoder-missing" } }, label: "t", priority: 0, report }))
      // The view was told of the job's states as the requester polled them: waiting, taken by a worker, waiting for its retry
      // (a failing attempt may come and go between two polls; the 1 s before a retry may not).
      assert.isTrue(states.every((s) => /^(created|Started|retry(, attempt [23])?)$/.test(s)), states.join(", "))
      assert.isTrue(states.some((s) => s.startsWith("retry")), states.join(", "))
      assert.match(failed.message, /^latents latents-0: .*\(after 3 attempts\)$/)

      const refused = (bad: string) => Effect.flip(Effect.scoped(Postgres.connect(bad, "wasm", settings)))
      assert.strictEqual((yield* refused("http://localhost/x")).message, "queue http://localhost/x: a http: URL; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
      assert.match((yield* refused("postgres://u:secret@127.0.0.1:1/x")).message, /^queue postgres:\/\/u@127\.0\.0\.1:1\/x: cannot connect .*ECONNREFUSED/)
      const wrong = new URL(url)
      wrong.password = "not-the-password"
      const denied = yield* refused(wrong.toString())
      assert.match(denied.message, /password authentication failed/)
      assert.notInclude(denied.message, "not-the-password")
      assert.notInclude(denied.message, "\n")
    })), 5 * 60_000)
})
