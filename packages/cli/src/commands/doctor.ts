/**
 * `tinyfusion doctor`: what this machine can run. Node version, the backends
 * that initialise (and why the others do not), which one `auto` picks, and a
 * short matmul and training-step benchmark on each that works.
 */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import * as os from "node:os"
import { Benchmark, backendNames, Compute } from "@tinyfusion/tensor"
import * as Table from "../Table.ts"

const probe = Effect.gen(function*() {
  const compute = yield* Compute
  const mm = yield* Benchmark.matmul(256, { warmup: 1, repetitions: 3 })
  const train = yield* Benchmark.proxyTraining({ layers: 8, tokens: 256, width: 64 }, { warmup: 1, repetitions: 3 })
  return { device: compute.device, gflops: mm.gflops, stepMs: train.ms }
})

export const doctor = Command.make("doctor", {}, () =>
  Effect.gen(function*() {
    const cpus = os.cpus()
    yield* Console.log(`Node ${process.version} (${process.platform} ${process.arch}), ${cpus.length} CPUs: ${cpus[0]?.model.trim() ?? "unknown"}`)
    yield* Console.log(`Memory ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB\n`)
    const rows = yield* Effect.forEach(backendNames, (name) =>
      probe.pipe(
        Effect.provide(Compute.layer(name)),
        Effect.map((r) => [name, r.device, Table.fixed(r.gflops, 2), Table.fixed(r.stepMs, 1)]),
        Effect.catchTags({
          BackendUnavailable: (e) => Effect.succeed([name, `unavailable: ${e.reason}`, "-", "-"]),
          ComputeError: (e) => Effect.succeed([name, `failed: ${e.message}`, "-", "-"])
        })
      ))
    yield* Console.log(Table.render(["backend", "device", "matmul 256² GFLOP/s", "train step ms (8×256×64)"], rows))
    const picked = yield* Effect.gen(function*() {
      const c = yield* Compute
      return { backend: c.backend, skipped: c.skipped }
    }).pipe(Effect.provide(Compute.auto))
    yield* Console.log(`\nauto picks ${picked.backend}`)
    for (const s of picked.skipped) yield* Console.log(`  passed over ${s.backend}: ${s.reason}`)
  })
).pipe(Command.withDescription("Show the Node version, the compute backends that work here and a short benchmark of each"))
