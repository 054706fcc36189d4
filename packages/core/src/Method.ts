/**
 * A method a stage runs by name — a pruner, a recovery strategy — that
 * describes itself: its options Schema (with defaults: what a config's
 * `options` may hold, what CLI flags it takes), its evidence Schema (what it
 * reports beside its result), and its module, whose code joins the key of
 * the stage that runs it (Stage `select`). Adding one is one file: the
 * method value, and a layer that registers it.
 *
 * A registry is a Context reference whose default holds the built-in
 * methods, so nothing needs providing to use them; `layer` adds methods to
 * whatever registry is current, so layers stack.
 */
import { Context, Effect, Layer, Schema, SchemaAST } from "effect"

export interface Method<O, V> {
  /** The name configs, grids and flags use. */
  readonly name: string
  /** One line for listings and help. */
  readonly description: string
  /** The defining module (its `import.meta.url`). */
  readonly module: string
  /** The method's options: a Struct whose every field has a default. */
  readonly options: Schema.Codec<O, any> & { readonly fields: { readonly [name: string]: Schema.Codec<any, any> } }
  /** What the method reports beside its result; its top-level numbers are headline figures (see `headline`). */
  readonly evidence: Schema.Codec<V, any>
}

export type Any = Method<any, any>

export class UnknownMethod extends Schema.TaggedError<UnknownMethod>()("UnknownMethod", {
  /** What kind of method: "pruner", "recovery strategy". */
  kind: Schema.String,
  name: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `no ${this.kind} named "${this.name}"; known: ${this.known.join(", ")}`
  }
}

export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  kind: Schema.String,
  method: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid options for ${this.kind} ${this.method}: ${this.issue}`
  }
}

export interface Registry<M extends Any> {
  readonly kind: string
  /** The built-in methods, by name. */
  readonly builtin: ReadonlyMap<string, M>
  /** Their modules: what a stage running them leaves out of its own code (Stage.make's `exclude`), to count only the one chosen. */
  readonly modules: ReadonlyArray<string>
  /** The current methods by name (the built-in ones unless a layer added more). */
  readonly current: Context.Reference<ReadonlyMap<string, M>>
  /** Adds methods to the current registry (a method with a known name replaces it). */
  readonly layer: (methods: ReadonlyArray<M>) => Layer.Layer<never>
  readonly get: (name: string) => Effect.Effect<M, UnknownMethod>
}

const byName = <M extends Any>(methods: ReadonlyArray<M>): ReadonlyMap<string, M> => new Map(methods.map((m) => [m.name, m]))

/** A registry of `kind`, holding `builtin` by default. */
export const registry = <M extends Any>(key: string, kind: string, builtin: ReadonlyArray<M>): Registry<M> => {
  const defaults = byName(builtin)
  const current = Context.Reference<ReadonlyMap<string, M>>(key, { defaultValue: () => defaults })
  return {
    kind,
    builtin: defaults,
    modules: builtin.map((m) => m.module),
    current,
    layer: (methods) => Layer.effect(current, Effect.map(current, (known) => new Map([...known, ...byName(methods)]))),
    get: (name) =>
      Effect.flatMap(current, (known) => {
        const method = known.get(name)
        return method === undefined ? Effect.fail(new UnknownMethod({ kind, name, known: [...known.keys()].sort() })) : Effect.succeed(method)
      })
  }
}

/** A field of an options Schema: what it is (for help), and its default (as a config would hold it). */
export const option = <S extends Schema.Top>(schema: S, value: S["Encoded"], description: string) =>
  Schema.withDecodingDefaultKey(Effect.succeed(value))(schema.annotate({ description }) as S)

const parseOptions = { onExcessProperty: "error", errors: "all" } as const

/** A method's options from a config or flags: unknown fields are named, missing ones take their defaults. */
export const options = <O>(kind: string, method: Method<O, any>, given: unknown): Effect.Effect<O, InvalidOptions> =>
  Schema.decodeUnknownEffect(method.options)(given ?? {}, parseOptions).pipe(
    Effect.mapError((e) => new InvalidOptions({ kind, method: method.name, issue: e.message.replace(/\s*\n\s*/g, " ") }))
  )

/** The options as a config stores them: decoded and encoded again, so defaults are explicit and equal options have equal keys. */
export const canonicalOptions = <O>(kind: string, method: Method<O, any>, given: unknown): Effect.Effect<Schema.Json, InvalidOptions> =>
  Effect.flatMap(options(kind, method, given), (decoded) =>
    Schema.encodeUnknownEffect(method.options)(decoded).pipe(
      Effect.map((encoded) => encoded as Schema.Json),
      Effect.mapError((e) => new InvalidOptions({ kind, method: method.name, issue: e.message }))
    ))

/**
 * The `select` of a stage whose config names a method of `registry` and its
 * options (Stage.make): the options in canonical form, and the method's
 * module in the key.
 */
export const select = <M extends Any, C extends { readonly options: { readonly [name: string]: Schema.Json } }>(
  registry: Registry<M>,
  name: (config: C) => string
) =>
(config: C): Effect.Effect<{ readonly config: C; readonly code: ReadonlyArray<{ readonly module: string }> }, UnknownMethod | InvalidOptions> =>
  Effect.gen(function*() {
    const method = yield* registry.get(name(config))
    const options = (yield* canonicalOptions(registry.kind, method, config.options)) as C["options"]
    return { config: { ...config, options }, code: [{ module: method.module }] }
  })

/** One option of a method: its name, what it is, and its default (encoded; undefined: the option must be given), for listings and flags. */
export interface Option {
  readonly name: string
  readonly description: string | undefined
  readonly default: unknown
}

/** The options a method takes, in declaration order. */
export const describeOptions = (method: Any): ReadonlyArray<Option> =>
  Object.entries(method.options.fields).map(([name, field]) => {
    const alone = Schema.Struct({ [name]: field })
    const defaults = Schema.decodeUnknownOption(alone)({})
    return {
      name,
      description: SchemaAST.resolveDescription(field.ast),
      default: defaults._tag === "Some" ? (Schema.encodeUnknownSync(alone)(defaults.value) as Record<string, unknown>)[name] : undefined
    }
  })

/**
 * The headline figures of an evidence value (encoded): its top-level finite
 * numbers, e.g. the learnable pruner's confidence or a recovery's initial
 * distillation loss. Stages record them as metrics, and report them, under
 * these names.
 */
export const headline = (evidence: unknown): Readonly<Record<string, number>> =>
  typeof evidence === "object" && evidence !== null && !Array.isArray(evidence)
    ? Object.fromEntries(Object.entries(evidence).filter((e): e is [string, number] => typeof e[1] === "number" && Number.isFinite(e[1])))
    : {}
