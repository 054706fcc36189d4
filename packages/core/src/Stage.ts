/**
 * A stage is a named step of the pipeline: a config Schema, input ports, an
 * output Schema and the effect that computes it.
 *
 * An input port is the Schema of what the stage needs of an upstream
 * artifact (a model, latents, a reference): any artifact whose output
 * decodes with it fits, whatever stage made it. `Stage.run(stage, config,
 * inputs)` derives the key from (name, the fingerprint of the stage's code
 * and of any code its config selects, the Schema-encoded config, the input
 * keys). A committed artifact of that key that verifies is a cache hit; one
 * that does not is reported and recomputed. Computing holds the key's lock,
 * so a second process on the same store waits and then reuses the result.
 * Transient failures are retried (see `Retry`); a retried attempt resumes
 * from the stage's newest checkpoint.
 */
import { type Context as EffectContext, Effect, Option, Ref, Schema } from "effect"
import { Compute, HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import { ArtifactStore, CorruptArtifact, type Inspection, type Staging } from "./ArtifactStore.ts"
import * as Fingerprint from "./Fingerprint.ts"
import * as Manifest from "./Manifest.ts"
import * as Retry from "./Retry.ts"
import type { StoreError } from "./StoreError.ts"
import * as os from "node:os"

/** A config that does not decode: the message names the field and what is wrong with it. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  stage: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid config for stage ${this.stage}: ${this.issue}`
  }
}

/** No usable artifact of a stage under a key: none committed, or one of another stage, or corrupt. */
export class ArtifactNotFound extends Schema.TaggedError<ArtifactNotFound>()("ArtifactNotFound", {
  stage: Schema.String,
  key: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `no ${this.stage} artifact ${this.key}: ${this.reason}`
  }
}

/** The stage returned a value its output Schema rejects (a bug in the stage). */
export class InvalidOutput extends Schema.TaggedError<InvalidOutput>()("InvalidOutput", {
  stage: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `stage ${this.stage} produced an output its Schema rejects: ${this.issue}`
  }
}

/** An input artifact whose output does not decode with the port's Schema: it is not what the stage needs. */
export class InputMismatch extends Schema.TaggedError<InputMismatch>()("InputMismatch", {
  stage: Schema.String,
  input: Schema.String,
  key: Schema.String,
  /** The stage that made the artifact. */
  producer: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `stage ${this.stage}: input ${this.input} (${this.producer} artifact ${this.key}) does not fit: ${this.issue}`
  }
}

/** What a stage's effect gets besides its config and inputs. */
export interface Context {
  readonly stage: string
  /** The fingerprint of the code computing it (see Fingerprint). */
  readonly code: string
  readonly key: string
  readonly writeTensors: Staging["writeTensors"]
  readonly writeJson: Staging["writeJson"]
  readonly writeBytes: Staging["writeBytes"]
  readonly writeFile: Staging["writeFile"]
  /** Records a figure in the manifest's metrics (the last value of a name wins). */
  readonly metric: (name: string, value: number) => Effect.Effect<void>
}

/** A committed, verified stage result. */
export interface Artifact<O> {
  readonly key: string
  readonly dir: string
  readonly manifest: Manifest.Manifest
  readonly output: O
  /** True when this call reused an existing artifact rather than computing it. */
  readonly cached: boolean
  readonly path: (name: string) => string
  readonly bytes: (name: string) => Effect.Effect<Uint8Array, StoreError | CorruptArtifact>
  readonly tensorMap: (
    name: string
  ) => Effect.Effect<ReadonlyMap<string, HostTensor.HostTensor>, StoreError | CorruptArtifact>
  /** The tensors of a safetensors file as a tree (dotted keys unflattened). */
  readonly tensors: (name: string) => Effect.Effect<HostTensor.HostTree, StoreError | CorruptArtifact>
  readonly json: <A, I>(name: string, schema: Schema.Codec<A, I>) => Effect.Effect<A, StoreError | CorruptArtifact>
}

/** Input ports: name → the Schema an upstream artifact's output must decode with. */
export type Ports = Readonly<Record<string, Schema.Codec<any, any>>>

/** The verified artifacts a stage's effect gets, their outputs decoded by the ports. */
export type InputArtifacts<P extends Ports> = { readonly [K in keyof P]: Artifact<P[K]["Type"]> }

/** What a caller gives: any artifact per port (its output is checked against the port when the stage runs). */
export type Given<P extends Ports> = { readonly [K in keyof P]: Artifact<unknown> }

/** What a config selects: the config as the key covers it, and the code it chooses. */
export interface Selected<C> {
  /** The config in canonical form (e.g. a method's options with their defaults filled in). */
  readonly config: C
  /** Code the config chooses (a pruner, a recovery strategy), which joins the stage's code in the key. */
  readonly code: ReadonlyArray<Fingerprint.Code>
}

// The config and output codecs carry their encoded forms; a stage's effect
// has its own errors and services, its `select` its own errors.
export interface Stage<in out C, in out CE, in out O, in out OE, in out P extends Ports, out E, out R, out SE = never> {
  readonly name: string
  /** The stage's module and what not to follow from it (see Fingerprint). */
  readonly code: Fingerprint.Code
  readonly config: Schema.Codec<C, CE>
  readonly output: Schema.Codec<O, OE>
  readonly inputs: P
  readonly select: (config: C) => Effect.Effect<Selected<C>, SE>
  readonly run: (config: C, inputs: InputArtifacts<P>, ctx: Context) => Effect.Effect<O, E, R>
}

// The widest stage, for constraints.
export type Any = Stage<any, any, any, any, any, any, any, any>

export type ConfigOf<S> = S extends Stage<infer C, infer _CE, infer _O, infer _OE, infer _P, infer _E, infer _R, infer _SE> ? C : never
export type OutputOf<S> = S extends Stage<infer _C, infer _CE, infer O, infer _OE, infer _P, infer _E, infer _R, infer _SE> ? O : never
export type ErrorOf<S> = S extends Stage<infer _C, infer _CE, infer _O, infer _OE, infer _P, infer E, infer _R, infer SE> ? E | SE : never
export type RequirementsOf<S> = S extends Stage<infer _C, infer _CE, infer _O, infer _OE, infer _P, infer _E, infer R, infer _SE> ? R : never

/**
 * Defines a stage. Names are path-safe (letters, digits, `.`, `_`, `-`);
 * `module` is the defining module's `import.meta.url`, whose code (and the
 * project code it imports) is part of every key of the stage.
 */
export const make = <C, CE, O, OE, E, R, P extends Ports = {}, SE = never>(options: {
  readonly name: string
  readonly module: string
  /** Modules not to follow from `module`: plugins of a registry, counted only when `select` chooses them. */
  readonly exclude?: ReadonlyArray<string>
  readonly config: Schema.Codec<C, CE>
  readonly output: Schema.Codec<O, OE>
  readonly inputs?: P
  readonly select?: (config: C) => Effect.Effect<Selected<C>, SE>
  readonly run: (config: C, inputs: InputArtifacts<P>, ctx: Context) => Effect.Effect<O, E, R>
}): Stage<C, CE, O, OE, P, E, R, SE> => {
  if (Option.isNone(Schema.decodeUnknownOption(Manifest.SafeName)(options.name))) {
    throw new Error(`stage name ${JSON.stringify(options.name)} must be letters, digits, '.', '_' or '-'`)
  }
  return {
    name: options.name,
    code: { module: options.module, ...(options.exclude === undefined ? {} : { exclude: options.exclude }) },
    config: options.config,
    output: options.output,
    inputs: options.inputs ?? ({} as P),
    select: options.select ?? ((config) => Effect.succeed({ config, code: [] })),
    run: options.run
  }
}

const parseOptions = { onExcessProperty: "error", errors: "all" } as const

const describe = (message: string) => message.replace(/\s*\n\s*/g, " ")

/**
 * Decodes a config from outside (a JSON file, flags). Unknown fields are
 * rejected, so a misspelt field is named rather than silently ignored.
 */
export const decodeConfig = <C, CE>(stage: Stage<C, CE, any, any, any, any, any, any>, input: unknown) =>
  Schema.decodeUnknownEffect(stage.config)(input, parseOptions).pipe(
    Effect.mapError((e) => new InvalidConfig({ stage: stage.name, issue: describe(e.message) }))
  )

const encodeConfig = <C, CE>(stage: Stage<C, CE, any, any, any, any, any, any>, config: C) =>
  Schema.encodeUnknownEffect(stage.config)(config, parseOptions).pipe(
    Effect.mapError((e) => new InvalidConfig({ stage: stage.name, issue: describe(e.message) }))
  )

/** A run of a stage resolved before it runs: its key, canonical config (and its encoding) and code fingerprint. */
export interface Prepared<C> {
  readonly key: string
  readonly config: C
  readonly encoded: unknown
  readonly code: string
  readonly inputKeys: Readonly<Record<string, string>>
}

/** Resolves a run of `stage`: the config's selected code and canonical form, its encoding, the code fingerprint and the key. */
export const prepare = Effect.fn("Stage.prepare")(function*<C, CE, SE>(
  stage: Stage<C, CE, any, any, any, any, any, SE>,
  config: C,
  inputKeys: Readonly<Record<string, string>>
): Effect.fn.Return<Prepared<C>, InvalidConfig | SE> {
  // A typed config that slipped past the compiler is caught before anything runs.
  yield* encodeConfig(stage, config)
  const selected = yield* stage.select(config)
  const encoded = yield* encodeConfig(stage, selected.config)
  const own = Fingerprint.of(stage.code)
  const code = selected.code.length === 0
    ? own
    : Manifest.sha256(JSON.stringify([own, ...selected.code.map(Fingerprint.of)])).slice(0, own.length)
  const key = Manifest.keyOf({ stage: stage.name, code, config: encoded, inputs: inputKeys })
  return { key, config: selected.config, encoded, code, inputKeys }
})

/** The key a run of `stage` with this config and these input keys has. */
export const key = <C, CE, SE>(
  stage: Stage<C, CE, any, any, any, any, any, SE>,
  config: C,
  inputKeys: Readonly<Record<string, string>>
): Effect.Effect<string, InvalidConfig | SE> => Effect.map(prepare(stage, config, inputKeys), (p) => p.key)

/** An Artifact view of a verified manifest directory. */
const artifact = <O>(
  store: ArtifactStore["Service"],
  dir: string,
  manifest: Manifest.Manifest,
  output: O,
  cached: boolean
): Artifact<O> => {
  const bytes = (name: string) => store.readFile(dir, manifest, name)
  const tensorMap = (name: string) =>
    Effect.flatMap(bytes(name), (raw) =>
      Safetensors.decode(raw).pipe(
        Effect.map((file) => file.tensors),
        Effect.mapError((e) => new CorruptArtifact({ key: manifest.key, path: `${dir}/${name}`, reason: e.message }))
      ))
  return {
    key: manifest.key,
    dir,
    manifest,
    output,
    cached,
    path: (name) => `${dir}/${name}`,
    bytes,
    tensorMap,
    tensors: (name) => Effect.map(tensorMap(name), (map) => ParamTree.unflatten(map)),
    json: (name, schema) =>
      Effect.flatMap(bytes(name), (raw) =>
        Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(new TextDecoder().decode(raw)).pipe(
          Effect.mapError((e) => new CorruptArtifact({ key: manifest.key, path: `${dir}/${name}`, reason: describe(e.message) }))
        ))
  }
}

/**
 * The stage's committed artifact for `key` if it verifies and its output
 * decodes; `Corrupt` with the reason otherwise.
 */
const lookup = <O, OE>(
  store: ArtifactStore["Service"],
  expected: { readonly stage: string; readonly code: string; readonly output: Schema.Codec<O, OE> },
  key: string
) =>
  Effect.gen(function*() {
    const seen: Inspection = yield* store.inspect(key)
    if (seen._tag !== "Valid") return seen
    const { manifest } = seen
    if (manifest.stage !== expected.stage || manifest.code !== expected.code || manifest.checkpoint !== undefined) {
      return { _tag: "Corrupt", reason: `manifest is for ${manifest.stage} (code ${manifest.code}), not ${expected.stage} (code ${expected.code})` } as const
    }
    const output = yield* Effect.result(Schema.decodeUnknownEffect(expected.output)(manifest.output))
    if (output._tag === "Failure") {
      return { _tag: "Corrupt", reason: `output does not decode: ${describe(output.failure.message)}` } as const
    }
    return { _tag: "Found", manifest, output: output.success } as const
  })

/**
 * The committed artifact under `key` (a key given on a command line, a run
 * record's key), whatever stage made it, verified as a cache hit is. Fails
 * with ArtifactNotFound naming the reason when there is none or when it
 * does not verify. Its output is checked where it is used (an input port).
 */
export const open = Effect.fn("Stage.open")(function*(
  key: string
): Effect.fn.Return<Artifact<unknown>, ArtifactNotFound | StoreError, ArtifactStore> {
  const store = yield* ArtifactStore
  if (Option.isNone(Schema.decodeUnknownOption(Manifest.SafeName)(key))) {
    return yield* new ArtifactNotFound({ stage: "any", key, reason: "not a key (letters, digits, '.', '_' or '-')" })
  }
  const seen = yield* store.inspect(key)
  if (seen._tag === "Missing") {
    return yield* new ArtifactNotFound({ stage: "any", key, reason: `nothing committed under this key in ${store.root}` })
  }
  if (seen._tag === "Corrupt") return yield* new ArtifactNotFound({ stage: "any", key, reason: seen.reason })
  if (seen.manifest.checkpoint !== undefined) return yield* new ArtifactNotFound({ stage: seen.manifest.stage, key, reason: "a checkpoint, not an artifact" })
  return artifact(store, store.artifactDir(key), seen.manifest, seen.manifest.output as unknown, true)
})

/** An artifact whose output decodes with a port's Schema, as the stage's effect gets it. */
const decodeInput = <A>(stage: string, input: string, port: Schema.Codec<A, any>, given: Artifact<unknown>): Effect.Effect<Artifact<A>, InputMismatch> =>
  Schema.decodeUnknownEffect(port)(given.manifest.output).pipe(
    Effect.map((output): Artifact<A> => ({ ...given, output })),
    Effect.mapError((e) =>
      new InputMismatch({ stage, input, key: given.key, producer: given.manifest.stage, issue: describe(e.message) })
    )
  )

/** An artifact seen through a port (outside a stage: a command reading an artifact by key); `at` names who reads it. */
export const as = <A>(port: Schema.Codec<A, any>, given: Artifact<unknown>, at: { readonly stage: string; readonly input: string }) =>
  decodeInput(at.stage, at.input, port, given)

/**
 * Runs a stage, or reuses its verified artifact. Fails with InvalidConfig
 * when the config does not encode under the stage's Schema, InputMismatch
 * when an input is not what its port needs.
 */
export const run = Effect.fn("Stage.run")(function*<C, CE, O, OE, P extends Ports, E, R, SE>(
  stage: Stage<C, CE, O, OE, P, E, R, SE>,
  config: C,
  given: Given<NoInfer<P>>
): Effect.fn.Return<Artifact<O>, E | SE | InvalidConfig | InvalidOutput | InputMismatch | StoreError, R | ArtifactStore> {
  const store = yield* ArtifactStore
  const inputs: Record<string, Artifact<unknown>> = {}
  for (const [name, port] of Object.entries(stage.inputs as Ports)) {
    const artifact = (given as Record<string, Artifact<unknown> | undefined>)[name]
    if (artifact === undefined) return yield* Effect.die(new Error(`stage ${stage.name}: no input ${name}`))
    inputs[name] = yield* decodeInput(stage.name, name, port, artifact)
  }
  const prepared = yield* prepare(stage, config, Object.fromEntries(Object.entries(inputs).map(([k, a]) => [k, a.key])))
  const { key } = prepared
  const expected = { stage: stage.name, code: prepared.code, output: stage.output }
  const dir = store.artifactDir(key)
  return yield* Effect.gen(function*() {
    const first = yield* lookup(store, expected, key)
    if (first._tag === "Found") {
      yield* Effect.logInfo("cache hit")
      return artifact(store, dir, first.manifest, first.output, true)
    }
    if (first._tag === "Corrupt") yield* Effect.logWarning(`existing artifact is corrupt, recomputing: ${first.reason}`)
    return yield* Effect.scoped(Effect.gen(function*() {
      yield* store.lock(key)
      const again = yield* lookup(store, expected, key)
      if (again._tag === "Found") {
        yield* Effect.logInfo("cache hit (computed by another process meanwhile)")
        return artifact(store, dir, again.manifest, again.output, true)
      }
      yield* Effect.logInfo("computing")
      const attempts = yield* Ref.make(1)
      const startedAt = new Date()
      const manifest = yield* Retry.transient(
        build(store, stage, inputs as InputArtifacts<P>, { ...prepared, startedAt, attempts }),
        Ref.update(attempts, (n) => n + 1)
      )
      yield* Effect.logInfo(`computed in ${manifest.timings.seconds.toFixed(1)} s`)
      const output = yield* Schema.decodeUnknownEffect(stage.output)(manifest.output).pipe(
        Effect.mapError((e) => new InvalidOutput({ stage: stage.name, issue: describe(e.message) }))
      )
      return artifact(store, dir, manifest, output, false)
    }))
  }).pipe(Effect.annotateLogs({ stage: stage.name, key }))
})

const build = <C, CE, O, OE, P extends Ports, E, R, SE>(
  store: ArtifactStore["Service"],
  stage: Stage<C, CE, O, OE, P, E, R, SE>,
  inputs: InputArtifacts<P>,
  info: Prepared<C> & {
    readonly startedAt: Date
    readonly attempts: Ref.Ref<number>
  }
) =>
  Effect.scoped(Effect.gen(function*() {
    const staging = yield* store.staging
    const metrics: Record<string, number | null> = {}
    const ctx: Context = {
      stage: stage.name,
      code: info.code,
      key: info.key,
      writeTensors: staging.writeTensors,
      writeJson: staging.writeJson,
      writeBytes: staging.writeBytes,
      writeFile: staging.writeFile,
      metric: (name, value) => Effect.sync(() => void (metrics[name] = Number.isFinite(value) ? value : null))
    }
    const output = yield* stage.run(info.config, inputs, ctx)
    const encodedOutput = yield* Schema.encodeUnknownEffect(stage.output)(output).pipe(
      Effect.mapError((e) => new InvalidOutput({ stage: stage.name, issue: describe(e.message) }))
    )
    const compute = yield* Effect.serviceOption(Compute)
    const manifest = yield* store.commit(staging, store.artifactDir(info.key), {
      format: Manifest.format,
      key: info.key,
      stage: stage.name,
      code: info.code,
      config: info.encoded as Schema.Json,
      inputs: info.inputKeys,
      output: encodedOutput as Schema.Json,
      metrics,
      timings: {
        startedAt: info.startedAt.toISOString(),
        seconds: (Date.now() - info.startedAt.getTime()) / 1000,
        attempts: yield* Ref.get(info.attempts)
      },
      backend: Option.match(compute, { onNone: () => null, onSome: (c) => ({ name: c.backend, device: c.device }) }),
      createdAt: new Date().toISOString(),
      host: os.hostname()
    })
    // The artifact supersedes its checkpoints.
    yield* store.removeCheckpoints(info.key)
    return manifest
  }))

/**
 * The stage with one service of its computation supplied by `service`, run
 * only when the stage computes: a cache hit never runs it. Commands open a
 * dataset this way, so a store whose data stages are all cached needs no
 * dataset on disk. Name, code and keys are the stage's own.
 */
export const provideWhenComputing = <C, CE, O, OE, P extends Ports, E, R, SE, Id, S, E2, R2>(
  stage: Stage<C, CE, O, OE, P, E, R, SE>,
  tag: EffectContext.Key<Id, S>,
  service: Effect.Effect<NoInfer<S>, E2, R2>
): Stage<C, CE, O, OE, P, E | E2, Exclude<R, Id> | R2, SE> => ({
  ...stage,
  run: (config, inputs, ctx) => Effect.provideServiceEffect(stage.run(config, inputs, ctx), tag, service)
})
