/**
 * The declared pipeline: a node is a stage with its config and its input
 * nodes, a value built before anything runs. A grid cell, a CLI command and
 * a job are graphs of nodes; the same graph gives the keys (`key`), the
 * plan with what is stored (`plan`), and the artifacts (`run`).
 *
 * A runner runs each key once however many nodes reach it (cells share
 * their teacher, a pruning decision, …); across processes the store's
 * locks do the same. A node travels to another process as a `Description`
 * (stage name, encoded config, input keys): `fromDescription` rebuilds it
 * from a registry of stages, and running it there computes the same key.
 */
import { Deferred, Effect, Schema } from "effect"
import { ArtifactStore } from "./ArtifactStore.ts"
import * as Stage from "./Stage.ts"
import type { StoreError } from "./StoreError.ts"

/** A stage run as a value: its stage, config and inputs. O, E and R are the output, errors and services of running it. */
export interface Node<out O, out E = never, out R = never> {
  readonly _tag: "Node"
  readonly stage: Stage.Any
  readonly config: unknown
  readonly inputs: Readonly<Record<string, Input<unknown, unknown, unknown>>>
  /** What the node is for (e.g. the grid cell), in plans. */
  readonly label: string | undefined
  readonly "~types"?: { readonly output: O; readonly error: E; readonly requirements: R }
}

/** An artifact already in the store, by key (a key from the command line); its output is checked by the port it feeds. */
export interface Existing {
  readonly _tag: "Existing"
  readonly key: string
  readonly "~types"?: { readonly output: any; readonly error: never; readonly requirements: never }
}

export type Input<O, E = never, R = never> = Node<O, E, R> | Existing

/** The errors and services of running an input (none for an existing artifact beyond opening it). */
export type ErrorOf<I> = I extends Node<any, infer E, any> ? E : never
export type RequirementsOf<I> = I extends Node<any, any, infer R> ? R : never

type ErrorsOf<I> = { [K in keyof I]: ErrorOf<I[K]> }[keyof I]
type AllRequirementsOf<I> = { [K in keyof I]: RequirementsOf<I[K]> }[keyof I]

/** What running any node may fail with besides its stages' own errors. */
export type Failure = Stage.InvalidConfig | Stage.InvalidOutput | Stage.InputMismatch | Stage.ArtifactNotFound | StoreError

/** A node of `stage` with this config, its inputs given as nodes (or existing artifacts) whose outputs fit the ports. */
export const node = <
  C,
  CE,
  O,
  OE,
  P extends Stage.Ports,
  E,
  R,
  SE,
  const I extends { readonly [K in keyof P]: Input<P[K]["Type"], unknown, unknown> }
>(
  stage: Stage.Stage<C, CE, O, OE, P, E, R, SE>,
  config: NoInfer<C>,
  inputs: I,
  label?: string
): Node<O, E | SE | ErrorsOf<I>, R | AllRequirementsOf<I>> => ({ _tag: "Node", stage, config, inputs, label })

/** The artifact under `key`, as an input. */
export const existing = (key: string): Existing => ({ _tag: "Existing", key })

/** What a node is, as data another process can run: the stage's name, the encoded config and the input keys. */
export const Description = Schema.Struct({
  stage: Schema.String,
  config: Schema.Json,
  inputs: Schema.Record(Schema.String, Schema.String)
})
export type Description = typeof Description.Type

export class UnknownStage extends Schema.TaggedError<UnknownStage>()("UnknownStage", {
  stage: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `no stage named ${this.stage} in the registry; known: ${this.known.join(", ")}`
  }
}

/** One node of a plan: its key and stage, what it is for, its input keys and whether the store holds it. */
export interface Step {
  readonly key: string
  readonly stage: string
  readonly labels: ReadonlyArray<string>
  readonly inputs: Readonly<Record<string, string>>
  /** stored: a committed artifact (sizes checked); partial: checkpoints up to `step`; missing: an existing key the store lacks. */
  readonly status:
    | { readonly _tag: "Stored" }
    | { readonly _tag: "ToRun" }
    | { readonly _tag: "Partial"; readonly step: number }
    | { readonly _tag: "Missing" }
}

export interface Runner {
  /** The key of an input: an existing artifact's own, or the one its node's run will have. */
  readonly key: (input: Input<unknown, unknown, unknown>) => Effect.Effect<string, Stage.InvalidConfig | unknown>
  /** The artifact of a node: its inputs first, each key once per runner. */
  readonly run: <O, E, R>(node: Node<O, E, R>) => Effect.Effect<Stage.Artifact<O>, E | Failure, R | ArtifactStore>
  /** The artifact of any input (an existing one is opened and verified). */
  readonly artifact: <I extends Input<unknown, unknown, unknown>>(
    input: I
  ) => Effect.Effect<Stage.Artifact<unknown>, ErrorOf<I> | Failure, RequirementsOf<I> | ArtifactStore>
  /** Every node the given ones reach, inputs before the nodes that read them, each key once, with its status in the store. */
  readonly plan: (roots: ReadonlyArray<Input<unknown, unknown, unknown>>) => Effect.Effect<ReadonlyArray<Step>, unknown, ArtifactStore>
  /** The node as data (stage name, encoded config, input keys). */
  readonly describe: (node: Node<unknown, unknown, unknown>) => Effect.Effect<Description, unknown>
}

/**
 * How a runner computes a node once its inputs are committed: `here` runs
 * the stage in this process (a cache hit when the artifact is stored); an
 * executor may first have the node computed elsewhere from its description
 * (another process on the same store), after which `here` is a cache hit.
 */
export type Dispatch = (
  node: Node<unknown, unknown, unknown>,
  job: { readonly key: string; readonly description: Description; readonly inputs: Readonly<Record<string, Stage.Artifact<unknown>>> },
  here: Effect.Effect<Stage.Artifact<unknown>, unknown, unknown>
) => Effect.Effect<Stage.Artifact<unknown>, unknown, unknown>

/** A runner: keys and artifacts are computed once each for its lifetime, each node computed by `dispatch` (default: here). */
export const runnerWith = (dispatch: Dispatch = (_node, _job, here) => here): Effect.Effect<Runner> => Effect.sync(() => {
  const keys = new WeakMap<object, Stage.Prepared<unknown>>()
  const runs = new Map<string, Deferred.Deferred<Stage.Artifact<unknown>, unknown>>()

  const prepared = (n: Node<unknown, unknown, unknown>): Effect.Effect<Stage.Prepared<unknown>, unknown> =>
    Effect.suspend(() => {
      const known = keys.get(n)
      if (known !== undefined) return Effect.succeed(known)
      return Effect.gen(function*() {
        const inputKeys: Record<string, string> = {}
        for (const [name, input] of Object.entries(n.inputs)) inputKeys[name] = yield* key(input)
        const p = yield* Stage.prepare(n.stage, n.config, inputKeys)
        keys.set(n, p)
        return p
      })
    })

  const key = (input: Input<unknown, unknown, unknown>) =>
    input._tag === "Existing" ? Effect.succeed(input.key) : Effect.map(prepared(input), (p) => p.key)

  /** `compute` once per key: later callers wait for the first and share its exit. */
  const once = (k: string, compute: Effect.Effect<Stage.Artifact<unknown>, unknown, unknown>) =>
    Effect.suspend(() => {
      const known = runs.get(k)
      if (known !== undefined) return Deferred.await(known)
      const deferred = Deferred.makeUnsafe<Stage.Artifact<unknown>, unknown>()
      runs.set(k, deferred)
      return compute.pipe(Effect.onExit((exit) => Deferred.done(deferred, exit)))
    })

  const artifact = (input: Input<unknown, unknown, unknown>): Effect.Effect<Stage.Artifact<unknown>, unknown, unknown> => {
    if (input._tag === "Existing") return once(input.key, Stage.open(input.key))
    return Effect.gen(function*() {
      const k = yield* key(input)
      return yield* once(
        k,
        Effect.gen(function*() {
          const given: Record<string, Stage.Artifact<unknown>> = {}
          for (const [name, upstream] of Object.entries(input.inputs)) given[name] = yield* artifact(upstream)
          const made = yield* dispatch(input, { key: k, description: yield* describe(input), inputs: given }, Stage.run(input.stage, input.config, given))
          // The declared key and the run's must agree: the graph's keys are what gc and plans see.
          if (made.key !== k) return yield* Effect.die(new Error(`stage ${input.stage.name}: declared key ${k}, ran as ${made.key}`))
          return made
        })
      )
    })
  }

  const plan = (roots: ReadonlyArray<Input<unknown, unknown, unknown>>) =>
    Effect.gen(function*() {
      const store = yield* ArtifactStore
      const steps = new Map<string, { stage: string; labels: Array<string>; inputs: Record<string, string>; existing: boolean }>()
      const visit = (input: Input<unknown, unknown, unknown>): Effect.Effect<void, unknown> =>
        Effect.gen(function*() {
          const k = yield* key(input)
          const seen = steps.get(k)
          if (input._tag === "Existing") {
            if (seen === undefined) steps.set(k, { stage: "(given)", labels: [], inputs: {}, existing: true })
            return
          }
          if (seen !== undefined) {
            if (input.label !== undefined && !seen.labels.includes(input.label)) seen.labels.push(input.label)
            return
          }
          for (const upstream of Object.values(input.inputs)) yield* visit(upstream)
          const p = yield* prepared(input)
          steps.set(k, { stage: input.stage.name, labels: input.label === undefined ? [] : [input.label], inputs: { ...p.inputKeys }, existing: false })
        })
      for (const root of roots) yield* visit(root)
      const out: Array<Step> = []
      for (const [k, s] of steps) {
        const inspected = yield* store.inspect(k, { hash: false })
        const stored = inspected._tag === "Valid" && inspected.manifest.checkpoint === undefined
        const checkpoints = stored || s.existing ? [] : yield* store.checkpoints(k)
        const status: Step["status"] = stored
          ? { _tag: "Stored" }
          : s.existing
          ? { _tag: "Missing" }
          : checkpoints.length > 0
          ? { _tag: "Partial", step: Math.max(...checkpoints.map((c) => c.step)) }
          : { _tag: "ToRun" }
        out.push({ key: k, stage: stored && s.existing && inspected._tag === "Valid" ? inspected.manifest.stage : s.stage, labels: s.labels, inputs: s.inputs, status })
      }
      return out
    })

  const describe = (n: Node<unknown, unknown, unknown>) =>
    Effect.map(prepared(n), (p): Description => ({ stage: n.stage.name, config: p.encoded as Schema.Json, inputs: { ...p.inputKeys } }))

  return {
    key,
    run: artifact as Runner["run"],
    artifact: artifact as Runner["artifact"],
    plan,
    describe
  } satisfies Runner
})

/** A runner computing every node in this process. */
export const runner: Effect.Effect<Runner> = runnerWith()

/**
 * How much of a run waits on each node: for each key the roots reach, the
 * number of distinct keys that read its output, directly or through others.
 * A scheduler starts the node with the most first (a teacher before the
 * cells that prune it); a node whose key cannot be computed is left out.
 */
export const downstream = Effect.fn("Graph.downstream")(function*(
  runner: Runner,
  roots: ReadonlyArray<Input<unknown, unknown, unknown>>
) {
  const readers = new Map<string, Set<string>>()
  const seen = new Set<Input<unknown, unknown, unknown>>()
  const visit = (input: Input<unknown, unknown, unknown>): Effect.Effect<string | undefined> =>
    Effect.gen(function*() {
      const key = yield* runner.key(input).pipe(Effect.option)
      if (key._tag === "None") return undefined
      if (seen.has(input) || input._tag === "Existing") return key.value
      seen.add(input)
      if (!readers.has(key.value)) readers.set(key.value, new Set())
      for (const from of Object.values(input.inputs)) {
        const inputKey = yield* visit(from)
        if (inputKey === undefined) continue
        if (!readers.has(inputKey)) readers.set(inputKey, new Set())
        readers.get(inputKey)!.add(key.value)
      }
      return key.value
    })
  for (const root of roots) yield* visit(root)
  const counts = new Map<string, number>()
  for (const key of readers.keys()) {
    const reached = new Set<string>()
    const stack = [key]
    while (stack.length > 0) {
      for (const reader of readers.get(stack.pop()!) ?? []) {
        if (!reached.has(reader)) {
          reached.add(reader)
          stack.push(reader)
        }
      }
    }
    counts.set(key, reached.size)
  }
  return counts as ReadonlyMap<string, number>
})

/**
 * The node a description names: the stage found by name among `stages` (a
 * registry: every stage a worker may be asked to run), its config decoded,
 * its inputs the artifacts of the described keys.
 */
export const fromDescription = Effect.fn("Graph.fromDescription")(function*<S extends Stage.Any>(
  stages: ReadonlyArray<S>,
  description: Description
): Effect.fn.Return<Node<Stage.OutputOf<S>, Stage.ErrorOf<S>, Stage.RequirementsOf<S>>, UnknownStage | Stage.InvalidConfig> {
  const stage = stages.find((s) => s.name === description.stage)
  if (stage === undefined) return yield* new UnknownStage({ stage: description.stage, known: stages.map((s) => s.name).sort() })
  const config: unknown = yield* Stage.decodeConfig(stage, description.config)
  const inputs = Object.fromEntries(Object.entries(description.inputs).map(([name, k]) => [name, existing(k)]))
  return { _tag: "Node", stage, config, inputs, label: undefined }
})
