/**
 * `bench executors`: the suite's wall time on each executor, each run a
 * fresh `tinyfusion repro` on an empty store: 1 and N local worker
 * processes, and, with `--queue`, N `tinyfusion worker` processes on a
 * PostgreSQL queue (started before the clock starts, stopped after).
 */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"

const bin = path.join(import.meta.dirname, "..", "..", "bin.ts")

/** `tinyfusion …args` to its end: its wall time; fails with its stderr's tail when it fails. */
const tinyfusion = (args: ReadonlyArray<string>) =>
  Effect.callback<number, Error>((resume) => {
    const started = performance.now()
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)))
    child.on("close", (code) =>
      resume(code === 0 ? Effect.succeed((performance.now() - started) / 1000) : Effect.fail(new Error(`tinyfusion ${args.join(" ")} exited ${code}: ${stderr}`))))
  })

/** `tinyfusion worker` processes for the scope. */
const workers = (n: number, queue: string, store: string, backend: string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      Array.from({ length: n }, () =>
        spawn(process.execPath, [bin, "worker", "--queue", queue, "--store", store, "--backend", backend], { stdio: "ignore" }))
    ),
    (children) =>
      Effect.forEach(children, (c) =>
        Effect.callback<void>((resume) => {
          if (c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
          c.once("exit", () => resume(Effect.void))
          c.kill("SIGTERM")
        }), { discard: true })
  )

export const executors = Command.make(
  "executors",
  {
    tables: Flag.String("tables").pipe(Flag.withDefault("all"), Flag.withDescription("The grids to run (repro --tables)")),
    workers: CheckedFlags.count("workers").pipe(Flag.withDefault(os.availableParallelism()), Flag.withDescription("Workers of the parallel runs")),
    queue: Flag.String("queue").pipe(Flag.optional, Flag.withDescription("Also time the same number of workers on this PostgreSQL queue")),
    backend: Flag.String("backend-of-runs").pipe(Flag.withDefault("wasm"), Flag.withDescription("The runs' --backend")),
    synthetic: Flag.Boolean("synthetic").pipe(Flag.withDefault(false), Flag.withDescription("Run on the synthetic dataset (repro --synthetic)"))
  },
  (o) =>
    Effect.gen(function*() {
      const load = os.loadavg()
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-executors-"))
      const repro = (name: string, extra: ReadonlyArray<string>) => [
        "repro",
        "--tables",
        o.tables,
        "--backend",
        o.backend,
        "--store",
        path.join(root, name),
        ...(o.synthetic ? ["--synthetic"] : []),
        ...extra
      ]
      const rows: Array<{ readonly executor: string; readonly seconds: number }> = []
      const time = (executor: string, run: Effect.Effect<number, Error>) =>
        Effect.gen(function*() {
          yield* Console.error(`timing ${executor}…`)
          rows.push({ executor, seconds: yield* run })
        })
      yield* time("local, 1 worker", tinyfusion(repro("local-1", ["--workers", "1"])))
      yield* time(`local, ${o.workers} workers`, tinyfusion(repro(`local-${o.workers}`, ["--workers", String(o.workers)])))
      if (o.queue._tag === "Some") {
        const queue = o.queue.value
        const store = path.join(root, "postgres")
        fs.mkdirSync(store)
        yield* time(
          `postgres, ${o.workers} workers`,
          Effect.scoped(Effect.andThen(workers(o.workers, queue, store, o.backend), tinyfusion(repro("postgres", ["--queue", queue]))))
        )
      }
      const one = rows[0]!.seconds
      const local = rows[1]!.seconds
      yield* Console.log(`the suite (tables ${o.tables}, ${o.backend}) from an empty store; load average before: ${load.map((l) => l.toFixed(2)).join(" ")}`)
      yield* Console.log(Table.render(
        ["executor", "wall s", `× local 1`, `÷ local ${o.workers}`],
        rows.map((r) => [r.executor, Table.fixed(r.seconds, 1), Table.fixed(one / r.seconds, 2), Table.fixed(r.seconds / local, 3)])
      ))
      fs.rmSync(root, { recursive: true, force: true })
    })
).pipe(Command.withDescription("Time the suite on 1 and N local worker processes and, with --queue, N workers on PostgreSQL"))
