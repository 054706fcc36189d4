/**
 * The store and the loop across real processes: the proxy pipeline of
 * fixtures/ProxyTraining.ts runs in child processes on the pinned Node, which
 * are killed with SIGKILL mid-training, run concurrently, or given a bad config.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, type Path } from "effect"
import { HostTensor, Rng, Safetensors } from "@tinyfusion/tensor"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { ArtifactStore } from "./ArtifactStore.ts"
import type * as Manifest from "./Manifest.ts"

const main = fileURLToPath(new URL("./fixtures/main.ts", import.meta.url))
const data = { seed: 0, batches: 4, tokens: 16, width: 16 }
const train = { seed: 0, layers: 4, steps: 60, every: 10, lr: 0.01 }

interface Outcome {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly output: string
  /** The last training step a progress line reported. */
  readonly lastStep: number
  readonly result: { readonly key: string; readonly cached: boolean } | undefined
}

/** Runs the pipeline in a child process; SIGKILLs it once progress reaches `killAt`. */
const child = (store: string, options: { readonly killAt?: number; readonly trainConfig?: unknown } = {}) =>
  Effect.callback<Outcome, never, never>((resume) => {
    const proc = spawn(process.execPath, [main, store, JSON.stringify(data), JSON.stringify(options.trainConfig ?? train)], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    let lastStep = -1
    const watch = (chunk: Buffer) => {
      output += chunk.toString()
      for (const m of chunk.toString().matchAll(/proxy-train (\d+)\/\d+/g)) lastStep = Math.max(lastStep, Number(m[1]))
      if (options.killAt !== undefined && lastStep >= options.killAt && proc.exitCode === null) proc.kill("SIGKILL")
    }
    proc.stdout.on("data", watch)
    proc.stderr.on("data", watch)
    proc.on("close", (code, signal) => {
      const line = output.split("\n").find((l) => l.startsWith("RESULT "))
      resume(Effect.succeed({ code, signal, output, lastStep, result: line === undefined ? undefined : JSON.parse(line.slice(7)) }))
    })
    return Effect.sync(() => proc.kill("SIGKILL"))
  })

const inTemp = <A, E>(f: (dir: string) => Effect.Effect<A, E, FileSystem.FileSystem | Path.Path>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped({ prefix: "resume-test-" }))
  })).pipe(Effect.provide(NodeServices.layer))

/** The trained parameters and the manifest of the run's artifact. */
const trained = (store: string, key: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const manifest: Manifest.Manifest = JSON.parse(yield* fs.readFileString(`${store}/artifacts/${key}/manifest.json`))
    const file = yield* Safetensors.decode(yield* fs.readFile(`${store}/artifacts/${key}/params.safetensors`))
    return { manifest, params: file.tensors }
  })

describe("resume across processes", () => {
  it.live("SIGKILL at random steps, rerun: the final tensors are bit-identical to an uninterrupted run", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const reference = yield* child(`${dir}/reference`)
        assert.strictEqual(reference.code, 0, reference.output)
        const expected = yield* trained(`${dir}/reference`, reference.result!.key)
        assert.strictEqual(expected.manifest.metrics["resumedFrom"], 0)
        // One kill point per window: before the first checkpoint, and two later ones.
        // Random on every run; the seed is in every failure message to replay it.
        const seed = Date.now() % 1_000_000
        const windows = [[2, 9], [11, 34], [36, 56]] as const
        const kills = windows.map(([lo, hi], i) => Rng.integers(Rng.stream(seed, "kill"), i, 1, lo, hi + 1)[0]!)
        for (const [i, killAt] of kills.entries()) {
          const store = `${dir}/killed-${i}`
          const killed = yield* child(store, { killAt })
          assert.strictEqual(killed.signal, "SIGKILL", `seed ${seed}, kill at ${killAt}: ${killed.output}`)
          assert.isUndefined(killed.result)
          const rerun = yield* child(store)
          assert.strictEqual(rerun.code, 0, rerun.output)
          assert.strictEqual(rerun.result!.key, reference.result!.key)
          assert.isFalse(rerun.result!.cached)
          // The dead process's lock did not block the rerun, which resumed from a checkpoint at or after the kill's last one.
          const got = yield* trained(store, rerun.result!.key)
          const resumedFrom = got.manifest.metrics["resumedFrom"]!
          assert.strictEqual(resumedFrom % train.every, 0)
          assert.isAtLeast(resumedFrom, Math.floor(killAt / train.every) * train.every, `seed ${seed}, kill at ${killAt}`)
          assert.isAtMost(resumedFrom, killed.lastStep)
          assert.deepStrictEqual([...got.params.keys()], [...expected.params.keys()])
          for (const [name, tensor] of expected.params) {
            assert.isTrue(HostTensor.bitEqual(got.params.get(name)!, tensor), `seed ${seed}, kill at ${killAt}: ${name} differs`)
          }
          const listed = yield* Effect.gen(function*() {
            return yield* (yield* ArtifactStore).list({ hash: true })
          }).pipe(Effect.provide(ArtifactStore.layer(store)))
          assert.deepStrictEqual(listed.map((a) => a.inspection._tag), ["Valid", "Valid"])
        }
      })), 120_000)

  it.live("two processes on one key: one computes, the other waits and reuses its artifact", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const [a, b] = yield* Effect.all([child(dir), child(dir)], { concurrency: 2 })
        assert.strictEqual(a.code, 0, a.output)
        assert.strictEqual(b.code, 0, b.output)
        assert.strictEqual(a.result!.key, b.result!.key)
        assert.deepStrictEqual([a.result!.cached, b.result!.cached].sort(), [false, true])
        const waiter = a.result!.cached ? a : b
        assert.match(waiter.output, /waiting for pid \d+ on .*proxy-train/)
        assert.match(waiter.output, /cache hit \(computed by another process meanwhile\)/)
        assert.strictEqual((yield* fs.readDirectory(`${dir}/artifacts`)).length, 2)
        assert.deepStrictEqual(yield* fs.readDirectory(`${dir}/locks`), [])
      })), 60_000)

  it.live("a config with a wrong field exits non-zero with a message naming the field", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const bad = yield* child(dir, { trainConfig: { ...train, learning_rate: 0.1 } })
        assert.strictEqual(bad.code, 1)
        assert.match(bad.output, /invalid config for stage proxy-train: Expected no excess property at \["learning_rate"\]/)
        assert.isFalse(yield* (yield* FileSystem.FileSystem).exists(`${dir}/artifacts`))
      })), 60_000)
})
