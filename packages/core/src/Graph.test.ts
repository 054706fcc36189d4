import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger, Schema } from "effect"
import { ArtifactStore } from "./ArtifactStore.ts"
import { project, workspace } from "./fixtures/Workspace.ts"
import * as Graph from "./Graph.ts"
import * as Stage from "./Stage.ts"

/** How many times each stage's effect ran in the current test. */
const runs = new Map<string, number>()
const count = (name: string) => Effect.sync(() => void runs.set(name, (runs.get(name) ?? 0) + 1))
const ran = (...names: ReadonlyArray<string>) => names.map((n) => runs.get(n) ?? 0)

const Sum = Schema.Struct({ sum: Schema.Number })

/** source → scale, and an unrelated stage; each stage's code is the module given. */
const stages = (modules: { readonly source: string; readonly scale: string; readonly other: string }) => {
  const Source = Stage.make({
    name: "source",
    module: modules.source,
    config: Schema.Struct({ n: Schema.Int }),
    output: Sum,
    run: (config) => Effect.as(count("source"), { sum: (config.n * (config.n - 1)) / 2 })
  })
  const Scale = Stage.make({
    name: "scale",
    module: modules.scale,
    config: Schema.Struct({ factor: Schema.Number }),
    inputs: { source: Sum },
    output: Sum,
    run: (config, { source }) => Effect.as(count("scale"), { sum: source.output.sum * config.factor })
  })
  const Other = Stage.make({
    name: "other",
    module: modules.other,
    config: Schema.Struct({}),
    output: Schema.Struct({}),
    run: () => Effect.as(count("other"), {})
  })
  return { Source, Scale, Other }
}

const here = stages({ source: import.meta.url, scale: import.meta.url, other: import.meta.url })

const withStore = <A, E>(f: Effect.Effect<A, E, ArtifactStore | FileSystem.FileSystem>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const root = yield* fs.makeTempDirectoryScoped({ prefix: "graph-test-" })
    runs.clear()
    return yield* f.pipe(Effect.provide(ArtifactStore.layer(root)))
  })).pipe(Effect.provide(Layer.merge(NodeServices.layer, Logger.layer([]))))

describe("Graph", () => {
  it.live("keys are known before running, each key runs once per runner, and the plan says what is stored", () =>
    withStore(Effect.gen(function*() {
      const { Source, Scale, Other } = here
      const source = Graph.node(Source, { n: 4 }, {}, "shared")
      const double = Graph.node(Scale, { factor: 2 }, { source }, "cell a")
      const triple = Graph.node(Scale, { factor: 3 }, { source }, "cell b")
      const other = Graph.node(Other, {}, {})
      const runner = yield* Graph.runner
      const planned = yield* runner.plan([double, triple, other])
      assert.deepStrictEqual(planned.map((s) => [s.stage, s.labels, s.status._tag]), [
        ["source", ["shared"], "ToRun"],
        ["scale", ["cell a"], "ToRun"],
        ["scale", ["cell b"], "ToRun"],
        ["other", [], "ToRun"]
      ])
      assert.deepStrictEqual(planned[1]!.inputs, { source: planned[0]!.key })

      const [a, b] = yield* Effect.all([runner.run(double), runner.run(triple)], { concurrency: 2 })
      assert.deepStrictEqual([a.output.sum, b.output.sum], [12, 18])
      assert.deepStrictEqual(ran("source", "scale"), [1, 2])
      assert.strictEqual(a.key, planned[1]!.key)
      assert.strictEqual(yield* runner.key(double), a.key)
      // Stage.run on the same stage, config and inputs has the graph's key.
      const direct = yield* Stage.run(Scale, { factor: 2 }, { source: yield* runner.artifact(source) })
      assert.isTrue(direct.cached)
      assert.strictEqual(direct.key, a.key)

      const again = yield* (yield* Graph.runner).plan([double, triple, other])
      assert.deepStrictEqual(again.map((s) => s.status._tag), ["Stored", "Stored", "Stored", "ToRun"])
    })))

  it.effect("downstream counts, for each key, the distinct keys that wait on it; nodes of one key count once", () =>
    Effect.gen(function*() {
      const { Source, Scale, Other } = here
      const source = Graph.node(Source, { n: 4 }, {})
      const double = Graph.node(Scale, { factor: 2 }, { source })
      const sameDouble = Graph.node(Scale, { factor: 2 }, { source })
      const triple = Graph.node(Scale, { factor: 3 }, { source })
      const chain = Graph.node(Scale, { factor: 5 }, { source: sameDouble })
      const other = Graph.node(Other, {}, {})
      const runner = yield* Graph.runner
      const counts = yield* Graph.downstream(runner, [double, triple, chain, other])
      const of = (node: Graph.Node<unknown, unknown, unknown>) => Effect.map(runner.key(node), (key) => counts.get(key))
      assert.deepStrictEqual(
        [yield* of(source), yield* of(double), yield* of(triple), yield* of(chain), yield* of(other)],
        [3, 1, 0, 0, 0]
      )
      assert.strictEqual(counts.size, 5)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.live("a node described as data runs in another runner (another process) under the same key, its inputs by key", () =>
    withStore(Effect.gen(function*() {
      const { Source, Scale } = here
      const scaled = Graph.node(Scale, { factor: 5 }, { source: Graph.node(Source, { n: 3 }, {}) })
      const first = yield* Graph.runner
      const description = yield* first.describe(scaled)
      const made = yield* first.run(scaled)
      const wire = Schema.encodeSync(Schema.fromJsonString(Graph.Description))(description)
      const rebuilt = yield* Graph.fromDescription([Source, Scale], Schema.decodeSync(Schema.fromJsonString(Graph.Description))(wire))
      const elsewhere = yield* (yield* Graph.runner).run(rebuilt)
      assert.strictEqual(elsewhere.key, made.key)
      assert.isTrue(elsewhere.cached)
      assert.deepStrictEqual(elsewhere.output, { sum: 15 })
      const unknown = yield* Effect.flip(Graph.fromDescription([Source], description))
      assert.strictEqual(unknown.message, "no stage named scale in the registry; known: source")
      // An existing input that is not what the port needs is named.
      const misfit = yield* Effect.flip((yield* Graph.runner).run(Graph.node(Scale, { factor: 1 }, { source: Graph.existing(made.key.replace("scale", "other")) })))
      assert.strictEqual(misfit._tag, "ArtifactNotFound")
    })))

  it.live("a stage's key covers its code: changing it reruns exactly it and what reads it; comments and tests change nothing", () =>
    withStore(Effect.gen(function*() {
      // Each stage's code is a module of a throwaway workspace; editing the workspace is editing the stage.
      const version = (files: Readonly<Record<string, string>>) => {
        const at = workspace(files)
        return stages({ source: at("packages/app/src/Stage.ts"), scale: at("packages/app/src/Types.ts"), other: at("packages/lib/src/Unused.ts") })
      }
      const pipeline = (s: ReturnType<typeof stages>) =>
        Effect.gen(function*() {
          const runner = yield* Graph.runner
          const scaled = yield* runner.run(Graph.node(s.Scale, { factor: 2 }, { source: Graph.node(s.Source, { n: 3 }, {}) }))
          const other = yield* runner.run(Graph.node(s.Other, {}, {}))
          return { scaled: scaled.key, other: other.key }
        })
      const edit = (file: string, f: (text: string) => string) => ({ ...project, [file]: f(project[file]!) })

      const first = yield* pipeline(version(project))
      assert.deepStrictEqual(ran("source", "scale", "other"), [1, 1, 1])
      // The source stage's code changes: it and scale (downstream) rerun, other does not.
      const second = yield* pipeline(version(edit("packages/app/src/Stage.ts", (t) => t.replace("+ Local.k", "- Local.k"))))
      assert.deepStrictEqual(ran("source", "scale", "other"), [2, 2, 1])
      assert.notStrictEqual(second.scaled, first.scaled)
      assert.strictEqual(second.other, first.other)
      // A module the source imports changes: the same.
      yield* pipeline(version(edit("packages/lib/src/Used.ts", (t) => t.replace("x + 1", "x + 3"))))
      assert.deepStrictEqual(ran("source", "scale", "other"), [3, 3, 1])
      // Only scale's code changes (the source imports that module for a type only): only scale reruns.
      yield* pipeline(version(edit("packages/app/src/Types.ts", (t) => `${t}export const defaults = { n: 1 }\n`)))
      assert.deepStrictEqual(ran("source", "scale", "other"), [3, 4, 1])
      // Comments, a test file and the README: every key stays, nothing reruns.
      const same = yield* pipeline(version({
        ...edit("packages/app/src/Stage.ts", (t) => t.replace("// the computation", "// the computation, documented")),
        "packages/app/src/Stage.test.ts": "run(3)\n",
        "README.md": "# renamed\n"
      }))
      assert.deepStrictEqual(same, first)
      assert.deepStrictEqual(ran("source", "scale", "other"), [3, 4, 1])
    })))
})
