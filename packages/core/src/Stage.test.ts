import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, FileSystem, Layer, Logger, Schedule, Schema } from "effect"
import { HostTensor } from "@tinyfusion/tensor"
import { ArtifactStore } from "./ArtifactStore.ts"
import * as Manifest from "./Manifest.ts"
import * as Retry from "./Retry.ts"
import * as Stage from "./Stage.ts"

/** How many times each stage's effect ran in this test file. */
const runs = new Map<string, number>()
const count = (name: string) => Effect.sync(() => void runs.set(name, (runs.get(name) ?? 0) + 1))
const ran = (name: string) => runs.get(name) ?? 0

const Source = Stage.make({
  name: "source",
  module: import.meta.url,
  config: Schema.Struct({ n: Schema.Int, start: Schema.Number }),
  output: Schema.Struct({ sum: Schema.Number }),
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      yield* count("source")
      const values = Float32Array.from({ length: config.n }, (_, i) => config.start + i)
      yield* ctx.writeTensors("values.safetensors", { values: HostTensor.float32([config.n], values) })
      yield* ctx.writeJson("meta.json", { n: config.n })
      yield* ctx.metric("n", config.n)
      return { sum: values.reduce((a, b) => a + b, 0) }
    })
})

const Scale = Stage.make({
  name: "scale",
  module: import.meta.url,
  config: Schema.Struct({ factor: Schema.Number }),
  inputs: { source: Source.output },
  output: Schema.Struct({ sum: Schema.Number }),
  run: (config, { source }, ctx) =>
    Effect.gen(function*() {
      yield* count("scale")
      const { values } = (yield* source.tensors("values.safetensors")) as { values: HostTensor.HostTensor }
      const scaled = Float32Array.from(values.data, (v) => v * config.factor)
      yield* ctx.writeTensors("values.safetensors", new Map([["values", HostTensor.float32(values.shape, scaled)]]))
      return { sum: source.output.sum * config.factor }
    })
})

const Other = Stage.make({
  name: "other",
  module: import.meta.url,
  config: Schema.Struct({ label: Schema.String }),
  output: Schema.Struct({ label: Schema.String }),
  run: (config) => Effect.as(count("other"), { label: config.label })
})

/** Keeps the `keep` largest values of its source, as a pruner keeps blocks. */
const Decide = Stage.make({
  name: "decide",
  module: import.meta.url,
  config: Schema.Struct({ keep: Schema.Int }),
  inputs: { source: Source.output },
  output: Schema.Struct({ kept: Schema.Array(Schema.Int), calibrationLoss: Schema.Finite }),
  run: (config, { source }, ctx) =>
    Effect.gen(function*() {
      yield* count("decide")
      const { values } = (yield* source.tensors("values.safetensors")) as { values: HostTensor.HostTensor }
      yield* ctx.metric("fid", 4.444)
      return { kept: [...values.data.keys()].slice(-config.keep), calibrationLoss: 0.322 }
    })
})

const captured: Array<string> = []
const capture = Logger.layer([Logger.make(({ message }) => captured.push(String(message)))])

const withStore = <A, E>(f: (root: string) => Effect.Effect<A, E, ArtifactStore | FileSystem.FileSystem>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const root = yield* fs.makeTempDirectoryScoped({ prefix: "stage-test-" })
    captured.length = 0
    runs.clear()
    return yield* f(root).pipe(Effect.provide(ArtifactStore.layer(root)))
  })).pipe(
    Effect.provide(Layer.merge(NodeServices.layer, capture)),
    Effect.provideService(Retry.Policy, Schedule.recurs(3))
  )

// Live: lock polls and retries sleep on the real clock.
describe("Stage", () => {
  it.live("a rerun is a cache hit with the same output, files and manifest", () =>
    withStore(() =>
      Effect.gen(function*() {
        const first = yield* Stage.run(Source, { n: 4, start: 1 }, {})
        const second = yield* Stage.run(Source, { n: 4, start: 1 }, {})
        assert.isFalse(first.cached)
        assert.isTrue(second.cached)
        assert.strictEqual(ran("source"), 1)
        assert.strictEqual(second.key, first.key)
        assert.deepStrictEqual(second.output, { sum: 10 })
        assert.deepStrictEqual(second.manifest, first.manifest)
        assert.deepStrictEqual(second.manifest.metrics, { n: 4 })
        assert.deepStrictEqual(second.manifest.config, { n: 4, start: 1 })
        assert.strictEqual(second.manifest.backend, null)
        const { values } = (yield* second.tensors("values.safetensors")) as { values: HostTensor.HostTensor }
        assert.deepStrictEqual([...values.data], [1, 2, 3, 4])
        assert.deepStrictEqual(yield* second.json("meta.json", Schema.Struct({ n: Schema.Int })), { n: 4 })
        assert.include(captured, "cache hit")
      })))

  it.live("an upstream config change invalidates downstream and nothing else", () =>
    withStore(() =>
      Effect.gen(function*() {
        const pipeline = (start: number, factor: number) =>
          Effect.gen(function*() {
            const source = yield* Stage.run(Source, { n: 3, start }, {})
            const scaled = yield* Stage.run(Scale, { factor }, { source })
            const other = yield* Stage.run(Other, { label: "x" }, {})
            return { source, scaled, other }
          })
        const a = yield* pipeline(0, 2)
        assert.deepStrictEqual([ran("source"), ran("scale"), ran("other")], [1, 1, 1])
        assert.deepStrictEqual(a.scaled.output, { sum: 6 })
        assert.deepStrictEqual(a.scaled.manifest.inputs, { source: a.source.key })

        // Upstream change: source and scale recompute under new keys; other is untouched.
        const b = yield* pipeline(1, 2)
        assert.deepStrictEqual([ran("source"), ran("scale"), ran("other")], [2, 2, 1])
        assert.notStrictEqual(b.source.key, a.source.key)
        assert.notStrictEqual(b.scaled.key, a.scaled.key)
        assert.strictEqual(b.other.key, a.other.key)
        assert.deepStrictEqual(b.scaled.output, { sum: 12 })

        // Downstream change: only scale recomputes.
        const c = yield* pipeline(1, 3)
        assert.deepStrictEqual([ran("source"), ran("scale"), ran("other")], [2, 3, 1])
        assert.strictEqual(c.source.key, b.source.key)

        // Going back: everything is a cache hit.
        const d = yield* pipeline(0, 2)
        assert.deepStrictEqual([ran("source"), ran("scale"), ran("other")], [2, 3, 1])
        assert.strictEqual(d.scaled.key, a.scaled.key)
        assert.isTrue(d.source.cached && d.scaled.cached && d.other.cached)
      })))

  it.live("a corrupt artifact is reported and recomputed; its dependents keep their keys", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const source = yield* Stage.run(Source, { n: 3, start: 0 }, {})
        yield* Stage.run(Scale, { factor: 2 }, { source })
        const file = `${root}/artifacts/${source.key}/values.safetensors`
        const bytes = Uint8Array.from(yield* fs.readFile(file))
        bytes[bytes.length - 2]! ^= 0x40
        yield* fs.writeFile(file, bytes)
        const again = yield* Stage.run(Source, { n: 3, start: 0 }, {})
        assert.isFalse(again.cached)
        assert.strictEqual(again.key, source.key)
        assert.isTrue(captured.some((m) => /corrupt, recomputing: file values.safetensors has the wrong sha256/.test(m)))
        const scaled = yield* Stage.run(Scale, { factor: 2 }, { source: again })
        assert.isTrue(scaled.cached)
        assert.deepStrictEqual([ran("source"), ran("scale")], [2, 1])

        yield* fs.truncate(`${root}/artifacts/${source.key}/manifest.json`, 25)
        const third = yield* Stage.run(Source, { n: 3, start: 0 }, {})
        assert.isFalse(third.cached)
        assert.isTrue(captured.some((m) => /corrupt, recomputing: manifest.json does not decode/.test(m)))
      })))

  it.live("every field of a manifest is covered: an edited output, metric, config or input is corrupt and recomputed", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const source = yield* Stage.run(Source, { n: 4, start: 1 }, {})
        const other = yield* Stage.run(Source, { n: 3, start: 0 }, {})
        const first = yield* Stage.run(Decide, { keep: 2 }, { source })
        const at = `${root}/artifacts/${first.key}/manifest.json`
        // As a person would edit it: the value changed, the rest of the file as it was.
        const edits: ReadonlyArray<readonly [string, string, string, RegExp]> = [
          ["output.calibrationLoss", `"calibrationLoss": 0.322`, `"calibrationLoss": 0.422`, /edited after it was written/],
          ["output.kept", `"kept": [\n      2,`, `"kept": [\n      1,`, /edited after it was written/],
          ["metrics.fid", `"fid": 4.444`, `"fid": 3.444`, /edited after it was written/],
          ["config", `"keep": 2`, `"keep": 3`, /edited after it was written/],
          ["inputs", source.key, other.key, /edited after it was written/]
        ]
        for (const [field, from, to, reason] of edits) {
          const text = yield* fs.readFileString(at)
          assert.include(text, from, field)
          yield* fs.writeFileString(at, text.replace(from, to))
          captured.length = 0
          const again = yield* Stage.run(Decide, { keep: 2 }, { source })
          assert.isFalse(again.cached, field)
          assert.isTrue(captured.some((m) => /corrupt, recomputing: manifest.json was/.test(m) && reason.test(m)), field)
          assert.deepStrictEqual(again.output, first.output, field)
          assert.deepStrictEqual(again.manifest.metrics, first.manifest.metrics, field)
        }
        // An editor who also recomputes the digest: a config or inputs that no longer give the key are still caught.
        for (const [field, edit] of [["config", { config: { keep: 3 } }], ["inputs", { inputs: { source: other.key } }]] as const) {
          const { digest: _, ...fields } = JSON.parse(yield* fs.readFileString(at))
          const changed = { ...fields, ...edit }
          yield* fs.writeFileString(at, JSON.stringify({ ...changed, digest: Manifest.sha256(Manifest.canonicalJson(changed)) }))
          captured.length = 0
          assert.isFalse((yield* Stage.run(Decide, { keep: 2 }, { source })).cached, field)
          assert.isTrue(captured.some((m) => new RegExp(`config and inputs give the key decide-\\w+, not ${first.key}`).test(m)), field)
        }
        assert.strictEqual(ran("decide"), 8)
      })))

  it.live("provideWhenComputing: the service is made only when the stage computes, never for a cache hit", () =>
    withStore(() =>
      Effect.gen(function*() {
        class Images extends Context.Service<Images, { readonly values: ReadonlyArray<number> }>()("test/Images") {}
        const Sum = Stage.make({
          name: "sum",
          module: import.meta.url,
          config: Schema.Struct({}),
          output: Schema.Struct({ sum: Schema.Number }),
          run: () =>
            Effect.gen(function*() {
              const images = yield* Images
              return { sum: images.values.reduce((a, b) => a + b, 0) }
            })
        })
        let opened = 0
        const lazy = Stage.provideWhenComputing(Sum, Images, Effect.sync(() => (opened++, { values: [1, 2, 3] })))
        assert.deepStrictEqual([lazy.name, lazy.code], [Sum.name, Sum.code])
        const first = yield* Stage.run(lazy, {}, {})
        const again = yield* Stage.run(lazy, {}, {})
        assert.deepStrictEqual([first.output.sum, first.cached, again.cached, opened], [6, false, true, 1])
        assert.strictEqual(first.key, yield* Stage.key(Sum, {}, {}))
        // Unreachable data fails only a stage that must compute.
        const missing = Stage.provideWhenComputing(Sum, Images, Effect.fail("no images here"))
        assert.isTrue((yield* Stage.run(missing, {}, {})).cached)
        yield* (yield* ArtifactStore).remove(first.dir)
        assert.strictEqual(yield* Effect.flip(Stage.run(missing, {}, {})), "no images here")
      })))

  it.live("a manifest whose output no longer fits the stage's Schema is recomputed", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const first = yield* Stage.run(Other, { label: "a" }, {})
        const at = `${root}/artifacts/${first.key}/manifest.json`
        // A stage whose output Schema changed: the manifest is intact, its output no longer fits.
        const { digest: _, ...fields } = JSON.parse(yield* fs.readFileString(at))
        const changed = { ...fields, output: { label: 7 } }
        yield* fs.writeFileString(at, JSON.stringify({ ...changed, digest: Manifest.sha256(Manifest.canonicalJson(changed)) }))
        const again = yield* Stage.run(Other, { label: "a" }, {})
        assert.isFalse(again.cached)
        assert.isTrue(captured.some((m) => /output does not decode/.test(m)))
      })))

  it.live("configs: unknown and mistyped fields are named", () =>
    withStore(() =>
      Effect.gen(function*() {
        const misspelt = yield* Effect.flip(Stage.decodeConfig(Source, { n: 3, strat: 0 }))
        assert.strictEqual(misspelt._tag, "InvalidConfig")
        assert.match(misspelt.message, /invalid config for stage source: .*\["strat"\]/)
        assert.match(misspelt.message, /missing .*\["start"\]|\["start"\].*missing/i)
        const mistyped = yield* Effect.flip(Stage.decodeConfig(Source, { n: 2.5, start: 0 }))
        assert.match(mistyped.message, /Expected an integer.*\["n"\]/)
        assert.deepStrictEqual(yield* Stage.decodeConfig(Source, { n: 2, start: 0 }), { n: 2, start: 0 })
        // A typed config that slipped past the compiler is caught before anything runs.
        const bad = yield* Effect.flip(Stage.run(Source, { n: 1.5, start: 0 }, {}))
        assert.match(bad.message, /\["n"\]/)
        assert.strictEqual(ran("source"), 0)
      })))

  it.live("an output that violates the stage's Schema fails and commits nothing", () =>
    withStore(() =>
      Effect.gen(function*() {
        const Broken = Stage.make({
          name: "broken",
          module: import.meta.url,
          config: Schema.Struct({}),
          output: Schema.Struct({ x: Schema.Int }),
          run: () => Effect.succeed({ x: 0.5 })
        })
        const error = yield* Effect.flip(Stage.run(Broken, {}, {}))
        assert.strictEqual(error._tag, "InvalidOutput")
        const store = yield* ArtifactStore
        assert.deepStrictEqual(yield* store.list({ hash: true }), [])
      })))

  it.live("transient failures are retried under the policy; others are not", () =>
    withStore(() =>
      Effect.gen(function*() {
        let calls = 0
        const Flaky = Stage.make({
          name: "flaky",
          module: import.meta.url,
          config: Schema.Struct({ failures: Schema.Int, transient: Schema.Boolean }),
          output: Schema.Struct({ calls: Schema.Int }),
          run: (config) =>
            Effect.gen(function*() {
              calls += 1
              if (calls <= config.failures) {
                return yield* (config.transient
                  ? new Retry.Transient({ operation: "read shard", cause: new Error("EIO") })
                  : Effect.fail(new Error("bad data")))
              }
              return { calls }
            })
        })
        const ok = yield* Stage.run(Flaky, { failures: 2, transient: true }, {})
        assert.deepStrictEqual(ok.output, { calls: 3 })
        assert.strictEqual(ok.manifest.timings.attempts, 3)
        assert.strictEqual(captured.filter((m) => /transient failure/.test(m)).length, 2)

        calls = 0
        const exhausted = yield* Effect.flip(Stage.run(Flaky, { failures: 10, transient: true }, {}))
        assert.instanceOf(exhausted, Retry.Transient)
        assert.strictEqual(calls, 4)

        calls = 0
        const permanent = yield* Effect.flip(Stage.run(Flaky, { failures: 1, transient: false }, {}))
        assert.match(String(permanent), /bad data/)
        assert.strictEqual(calls, 1)
      })))

  it.live("two fibers running one key compute it once", () =>
    withStore(() =>
      Effect.gen(function*() {
        const Slow = Stage.make({
          name: "slow",
          module: import.meta.url,
          config: Schema.Struct({}),
          output: Schema.Struct({}),
          run: () => Effect.andThen(count("slow"), Effect.as(Effect.sleep("300 millis"), {}))
        })
        const both = yield* Effect.all([Stage.run(Slow, {}, {}), Stage.run(Slow, {}, {})], { concurrency: 2 })
        assert.strictEqual(ran("slow"), 1)
        assert.deepStrictEqual(both.map((a) => a.cached).sort(), [false, true])
        assert.strictEqual(both[0].key, both[1].key)
      })))

  it.live("open: a committed artifact by key, verified, feeds any port its output fits; missing, corrupt and unsafe keys are named", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const made = yield* Stage.run(Source, { n: 3, start: 2 }, {})
        const opened = yield* Stage.open(made.key)
        assert.isTrue(opened.cached)
        assert.deepStrictEqual(opened.output, { sum: 9 })
        assert.deepStrictEqual(opened.manifest, made.manifest)
        // An opened artifact feeds a downstream stage as a computed one does.
        const scaled = yield* Stage.run(Scale, { factor: 2 }, { source: opened })
        assert.strictEqual(scaled.manifest.inputs["source"], made.key)
        // An artifact whose output the port does not decode is named with its producer.
        const other = yield* Stage.run(Other, { label: "x" }, {})
        const mismatch = yield* Effect.flip(Stage.run(Scale, { factor: 2 }, { source: other }))
        assert.strictEqual(mismatch._tag, "InputMismatch")
        assert.match(mismatch.message, /stage scale: input source \(other artifact other-\w+\) does not fit: .*\["sum"\]/)

        const reason = (key: string) => Effect.flip(Stage.open(key)).pipe(Effect.map((e) => e.message))
        assert.match(yield* reason("source-000000000000000000000000"), new RegExp(`source-0+: nothing committed under this key in ${root}`))
        assert.match(yield* reason("../etc"), /not a key/)
        const fs = yield* FileSystem.FileSystem
        yield* fs.writeFileString(`${made.dir}/meta.json`, "{}")
        assert.match(yield* reason(made.key), /meta.json/)
      })))

  it("stage names must be path-safe", () => {
    assert.throws(
      () => Stage.make({ name: "a/b", module: import.meta.url, config: Schema.Struct({}), output: Schema.Struct({}), run: () => Effect.succeed({}) }),
      /stage name "a\/b"/
    )
  })
})
