/**
 * A stage is a named, versioned step of the pipeline: a config Schema, the
 * upstream stages it reads, an output Schema and the effect that computes it.
 *
 * `Stage.run(stage, config, inputs)` derives the key from (name, version,
 * Schema-encoded config, input keys). A committed artifact of that key that
 * verifies is a cache hit; one that does not is reported and recomputed.
 * Computing holds the key's lock, so a second process on the same store
 * waits and then reuses the result. Transient failures are retried (see
 * `Retry`); a retried attempt resumes from the stage's newest checkpoint.
 */
import { type Context as EffectContext, Effect, Option, Ref, Schema } from "effect"
import { Compute, HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import { ArtifactStore, CorruptArtifact, type Inspection, type Staging } from "./ArtifactStore.ts"
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

/** What a stage's effect gets besides its config and inputs. */
export interface Context {
  readonly stage: string
  readonly version: number
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

export type Inputs = Readonly<Record<string, Any>>

// The config and output codecs carry their encoded forms; a stage's effect
// has its own errors and services.
export interface Stage<in out C, in out CE, in out O, in out OE, in out I extends Inputs, out E, out R> {
  readonly name: string
  readonly version: number
  readonly config: Schema.Codec<C, CE>
  readonly output: Schema.Codec<O, OE>
  readonly inputs: I
  readonly run: (config: C, inputs: InputArtifacts<I>, ctx: Context) => Effect.Effect<O, E, R>
}

// The widest stage, for constraints.
export type Any = Stage<any, any, any, any, any, any, any>

export type ConfigOf<S> = S extends Stage<infer C, infer _CE, infer _O, infer _OE, infer _I, infer _E, infer _R> ? C : never
export type OutputOf<S> = S extends Stage<infer _C, infer _CE, infer O, infer _OE, infer _I, infer _E, infer _R> ? O : never
export type InputArtifacts<I extends Inputs> = { readonly [K in keyof I]: Artifact<OutputOf<I[K]>> }

/** Defines a stage. Names are path-safe (letters, digits, `.`, `_`, `-`). */
export const make = <C, CE, O, OE, E, R, I extends Inputs = {}>(options: {
  readonly name: string
  readonly version: number
  readonly config: Schema.Codec<C, CE>
  readonly output: Schema.Codec<O, OE>
  readonly inputs?: I
  readonly run: (config: C, inputs: InputArtifacts<I>, ctx: Context) => Effect.Effect<O, E, R>
}): Stage<C, CE, O, OE, I, E, R> => {
  if (Option.isNone(Schema.decodeUnknownOption(Manifest.SafeName)(options.name))) {
    throw new Error(`stage name ${JSON.stringify(options.name)} must be letters, digits, '.', '_' or '-'`)
  }
  return { ...options, inputs: options.inputs ?? ({} as I) }
}

const parseOptions = { onExcessProperty: "error", errors: "all" } as const

const describe = (message: string) => message.replace(/\s*\n\s*/g, " ")

/**
 * Decodes a config from outside (a JSON file, flags). Unknown fields are
 * rejected, so a misspelt field is named rather than silently ignored.
 */
export const decodeConfig = <C, CE>(stage: Stage<C, CE, any, any, any, any, any>, input: unknown) =>
  Schema.decodeUnknownEffect(stage.config)(input, parseOptions).pipe(
    Effect.mapError((e) => new InvalidConfig({ stage: stage.name, issue: describe(e.message) }))
  )

const encodeConfig = <C, CE>(stage: Stage<C, CE, any, any, any, any, any>, config: C) =>
  Schema.encodeUnknownEffect(stage.config)(config, parseOptions).pipe(
    Effect.mapError((e) => new InvalidConfig({ stage: stage.name, issue: describe(e.message) }))
  )

/** The key a run of `stage` with this config and these input keys has. */
export const key = Effect.fn("Stage.key")(function*<C, CE>(
  stage: Stage<C, CE, any, any, any, any, any>,
  config: C,
  inputKeys: Readonly<Record<string, string>>
) {
  const encoded = yield* encodeConfig(stage, config)
  return Manifest.keyOf({ stage: stage.name, version: stage.version, config: encoded, inputs: inputKeys })
})

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
  stage: { readonly name: string; readonly version: number; readonly output: Schema.Codec<O, OE> },
  key: string
) =>
  Effect.gen(function*() {
    const seen: Inspection = yield* store.inspect(key)
    if (seen._tag !== "Valid") return seen
    const { manifest } = seen
    if (manifest.stage !== stage.name || manifest.version !== stage.version || manifest.checkpoint !== undefined) {
      return { _tag: "Corrupt", reason: `manifest is for ${manifest.stage} v${manifest.version}` } as const
    }
    const output = yield* Effect.result(Schema.decodeUnknownEffect(stage.output)(manifest.output))
    if (output._tag === "Failure") {
      return { _tag: "Corrupt", reason: `output does not decode: ${describe(output.failure.message)}` } as const
    }
    return { _tag: "Found", manifest, output: output.success } as const
  })

/**
 * The committed artifact of `stage` under `key` (a key given on a command
 * line, a run record's key), verified as a cache hit is. Fails with
 * ArtifactNotFound naming the reason when there is none, when it was made
 * by another stage or version, or when it does not verify.
 */
export const open = Effect.fn("Stage.open")(function*<O, OE>(
  stage: { readonly name: string; readonly version: number; readonly output: Schema.Codec<O, OE> },
  key: string
): Effect.fn.Return<Artifact<O>, ArtifactNotFound | StoreError, ArtifactStore> {
  const store = yield* ArtifactStore
  if (Option.isNone(Schema.decodeUnknownOption(Manifest.SafeName)(key))) {
    return yield* new ArtifactNotFound({ stage: stage.name, key, reason: "not a key (letters, digits, '.', '_' or '-')" })
  }
  const found = yield* lookup(store, stage, key)
  if (found._tag === "Missing") {
    return yield* new ArtifactNotFound({ stage: stage.name, key, reason: `nothing committed under this key in ${store.root}` })
  }
  if (found._tag === "Corrupt") return yield* new ArtifactNotFound({ stage: stage.name, key, reason: found.reason })
  return artifact(store, store.artifactDir(key), found.manifest, found.output, true)
})

/**
 * Runs a stage, or reuses its verified artifact. Fails with InvalidConfig
 * when the config does not encode under the stage's Schema.
 */
export const run = Effect.fn("Stage.run")(function*<C, CE, O, OE, I extends Inputs, E, R>(
  stage: Stage<C, CE, O, OE, I, E, R>,
  config: C,
  inputs: InputArtifacts<NoInfer<I>>
): Effect.fn.Return<Artifact<O>, E | InvalidConfig | InvalidOutput | StoreError, R | ArtifactStore> {
  const store = yield* ArtifactStore
  for (const [name, upstream] of Object.entries(stage.inputs)) {
    const given = (inputs as Record<string, Artifact<unknown>>)[name]
    if (given === undefined || given.manifest.stage !== upstream.name) {
      return yield* Effect.die(new Error(`stage ${stage.name}: input ${name} must be an artifact of ${upstream.name}`))
    }
  }
  const encoded = yield* encodeConfig(stage, config)
  const inputKeys = Object.fromEntries(Object.entries(inputs as Record<string, Artifact<unknown>>).map(([k, a]) => [k, a.key]))
  const key = Manifest.keyOf({ stage: stage.name, version: stage.version, config: encoded, inputs: inputKeys })
  const dir = store.artifactDir(key)
  return yield* Effect.gen(function*() {
    const first = yield* lookup(store, stage, key)
    if (first._tag === "Found") {
      yield* Effect.logInfo("cache hit")
      return artifact(store, dir, first.manifest, first.output, true)
    }
    if (first._tag === "Corrupt") yield* Effect.logWarning(`existing artifact is corrupt, recomputing: ${first.reason}`)
    return yield* Effect.scoped(Effect.gen(function*() {
      yield* store.lock(key)
      const again = yield* lookup(store, stage, key)
      if (again._tag === "Found") {
        yield* Effect.logInfo("cache hit (computed by another process meanwhile)")
        return artifact(store, dir, again.manifest, again.output, true)
      }
      yield* Effect.logInfo("computing")
      const attempts = yield* Ref.make(1)
      const startedAt = new Date()
      const manifest = yield* Retry.transient(
        build(store, stage, config, inputs, { key, encoded, inputKeys, startedAt, attempts }),
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

const build = <C, CE, O, OE, I extends Inputs, E, R>(
  store: ArtifactStore["Service"],
  stage: Stage<C, CE, O, OE, I, E, R>,
  config: C,
  inputs: InputArtifacts<I>,
  info: {
    readonly key: string
    readonly encoded: CE
    readonly inputKeys: Record<string, string>
    readonly startedAt: Date
    readonly attempts: Ref.Ref<number>
  }
) =>
  Effect.scoped(Effect.gen(function*() {
    const staging = yield* store.staging
    const metrics: Record<string, number | null> = {}
    const ctx: Context = {
      stage: stage.name,
      version: stage.version,
      key: info.key,
      writeTensors: staging.writeTensors,
      writeJson: staging.writeJson,
      writeBytes: staging.writeBytes,
      writeFile: staging.writeFile,
      metric: (name, value) => Effect.sync(() => void (metrics[name] = Number.isFinite(value) ? value : null))
    }
    const output = yield* stage.run(config, inputs, ctx)
    const encodedOutput = yield* Schema.encodeUnknownEffect(stage.output)(output).pipe(
      Effect.mapError((e) => new InvalidOutput({ stage: stage.name, issue: describe(e.message) }))
    )
    const compute = yield* Effect.serviceOption(Compute)
    const manifest = yield* store.commit(staging, store.artifactDir(info.key), {
      format: Manifest.format,
      key: info.key,
      stage: stage.name,
      version: stage.version,
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
 * dataset on disk. Name, version and keys are the stage's own.
 */
export const provideWhenComputing = <C, CE, O, OE, I extends Inputs, E, R, Id, S, E2, R2>(
  stage: Stage<C, CE, O, OE, I, E, R>,
  tag: EffectContext.Key<Id, S>,
  service: Effect.Effect<NoInfer<S>, E2, R2>
): Stage<C, CE, O, OE, I, E | E2, Exclude<R, Id> | R2> => ({
  ...stage,
  run: (config, inputs, ctx) => Effect.provideServiceEffect(stage.run(config, inputs, ctx), tag, service)
})
