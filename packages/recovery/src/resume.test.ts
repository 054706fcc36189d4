/**
 * Pre-training and recovery across real processes: the fixture pipeline
 * (fixtures/main.ts) runs in child processes on the pinned Node and is
 * killed with SIGKILL mid-pretraining, then mid-recovery; the run that
 * finishes writes the bytes an uninterrupted run writes — on wasm, and on
 * webgpu where a Vulkan device exists.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect, FileSystem } from "effect"
import { type BackendName, Rng, WebGpuFixture } from "@tinyfusion/tensor"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const main = fileURLToPath(new URL("./fixtures/main.ts", import.meta.url))

interface Outcome {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly output: string
  readonly result: { readonly teacher: string; readonly recovered: string } | undefined
}

/** How each child runs: its backend, and the length of both loops and their checkpoint interval. */
interface Setting {
  readonly backend: BackendName
  readonly steps: number
  readonly checkpointEvery: number
}

/** Runs the pipeline in a child; SIGKILLs it once `stage` reports step `step`. */
const child = (setting: Setting, store: string, kill?: { readonly stage: string; readonly step: number }) =>
  Effect.callback<Outcome>((resume) => {
    const loop = { steps: setting.steps, checkpointEvery: setting.checkpointEvery }
    const proc = spawn(process.execPath, [main, store, setting.backend, JSON.stringify({ pretrain: loop, recovery: loop })], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    const watch = (chunk: Buffer) => {
      output += chunk.toString()
      if (kill === undefined || proc.exitCode !== null) return
      for (const m of chunk.toString().matchAll(/(\w+) (\d+)\/\d+ /g)) {
        if (m[1] === kill.stage && Number(m[2]) >= kill.step) proc.kill("SIGKILL")
      }
    }
    proc.stdout.on("data", watch)
    proc.stderr.on("data", watch)
    proc.on("close", (code, signal) => {
      const line = output.split("\n").find((l) => l.startsWith("RESULT "))
      resume(Effect.succeed({ code, signal, output, result: line === undefined ? undefined : JSON.parse(line.slice(7)) }))
    })
    return Effect.sync(() => proc.kill("SIGKILL"))
  })

/**
 * An uninterrupted run, then one killed in pretraining and in recovery at
 * random steps after the first checkpoint and rerun: the same keys, and
 * bit-identical weights, EMA and loss curve.
 */
const killAndResume = (setting: Setting) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "recovery-resume-" })
    const reference = yield* child(setting, `${dir}/reference`)
    assert.strictEqual(reference.code, 0, reference.output)
    const keys = reference.result!

    // After the first checkpoint and before the last step; random on every run, the seed in every message.
    const seed = Date.now() % 1_000_000
    const { steps, checkpointEvery: every } = setting
    const [inPretrain, inRecovery] = [0, 1].map((i) => Rng.integers(Rng.stream(seed, "kill"), i, 1, every + 2, steps - 4)[0]!) as [number, number]
    const store = `${dir}/killed`
    const first = yield* child(setting, store, { stage: "pretrain", step: inPretrain })
    assert.strictEqual(first.signal, "SIGKILL", `seed ${seed}: ${first.output}`)
    const second = yield* child(setting, store, { stage: "recovery", step: inRecovery })
    assert.strictEqual(second.signal, "SIGKILL", `seed ${seed}: ${second.output}`)
    const last = yield* child(setting, store)
    assert.strictEqual(last.code, 0, last.output)
    assert.deepStrictEqual(last.result, keys)

    const manifest = (key: string) => Effect.map(fs.readFileString(`${store}/artifacts/${key}/manifest.json`), JSON.parse)
    for (const key of [keys.teacher, keys.recovered]) {
      const m = yield* manifest(key)
      assert.strictEqual(m.backend.name, setting.backend)
      assert.isAtLeast(m.metrics["resumedFrom"], every, `seed ${seed}`)
      for (const file of ["model.safetensors", "ema.safetensors", "loss.json"]) {
        const want = yield* fs.readFile(`${dir}/reference/artifacts/${key}/${file}`)
        const got = yield* fs.readFile(`${store}/artifacts/${key}/${file}`)
        assert.isTrue(Buffer.from(want).equals(Buffer.from(got)), `seed ${seed}: ${key}/${file} differs`)
      }
    }
  })).pipe(Effect.provide(NodeServices.layer))

describe("resume across processes", () => {
  it.live("SIGKILL mid-pretraining and mid-recovery, rerun: teacher and student are bit-identical to an uninterrupted run", () =>
    killAndResume({ backend: "wasm", steps: 30, checkpointEvery: 10 }), 240_000)

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    // Shorter loops: a step on lavapipe costs about what 15 do on wasm.
    it.live("the same, on webgpu: its checkpoints resume to the bits of an uninterrupted run", () =>
      killAndResume({ backend: "webgpu", steps: 12, checkpointEvery: 4 }), 400_000)
  })
})
