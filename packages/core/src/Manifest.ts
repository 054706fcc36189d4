/**
 * The manifest of an artifact or a checkpoint: what produced it (stage,
 * code fingerprint, encoded config, input keys), what it holds (every file with its
 * size and sha256) and how it went (metrics, timings, backend). It is
 * written last (its presence marks a complete directory) and carries the
 * sha256 of everything else it says (`digest`), so that no field can change
 * unseen: reading it (`decode`) checks the Schema, the digest and, for an
 * artifact, that its stage, code, config and inputs give its key.
 */
import { Schema } from "effect"
import { createHash } from "node:crypto"

/**
 * The on-disk format of manifests; bump when the layout changes. Format 1
 * had no digest, format 2 a version number where format 3 has the code's
 * fingerprint: older manifests are refused (their artifacts recomputed),
 * since nothing says they were not edited and their keys are not the code's.
 */
export const format = 3

/** What each older format lacked, for the reason an old manifest is refused. */
const lacked: Readonly<Record<number, string>> = {
  1: "written before manifests carried a digest",
  2: "written before keys covered the code that computes them"
}

/** File and stage names: safe as path components on every file system. */
export const SafeName = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]*$/))

export const TensorInfo = Schema.Struct({
  dtype: Schema.String,
  shape: Schema.Array(Schema.Int)
})

export const FileEntry = Schema.Struct({
  name: SafeName,
  bytes: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
  /** For safetensors files: each tensor's stored dtype and shape. */
  tensors: Schema.optional(Schema.Record(Schema.String, TensorInfo))
})
export type FileEntry = typeof FileEntry.Type

export const Backend = Schema.Struct({ name: Schema.String, device: Schema.String })

export const Timings = Schema.Struct({
  startedAt: Schema.String,
  seconds: Schema.Number,
  /** 1 + the number of transient failures retried. */
  attempts: Schema.Int
})

/** Every field of a manifest but its digest. */
export const Fields = Schema.Struct({
  format: Schema.Literal(format),
  key: Schema.String,
  stage: SafeName,
  /** The fingerprint of the code that computed it (packages/core Fingerprint). */
  code: Schema.String,
  config: Schema.Json,
  /** Input name → the key of the artifact it was. */
  inputs: Schema.Record(Schema.String, Schema.String),
  /** Present on checkpoints: the number of loop steps done. */
  checkpoint: Schema.optional(Schema.Struct({ step: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)) })),
  files: Schema.Array(FileEntry),
  /** The stage's output, encoded by the stage's output Schema. */
  output: Schema.Json,
  /** Figures recorded while running; non-finite values are stored as null. */
  metrics: Schema.Record(Schema.String, Schema.NullOr(Schema.Finite)),
  timings: Timings,
  backend: Schema.NullOr(Backend),
  createdAt: Schema.String,
  host: Schema.String
})
export type Fields = typeof Fields.Type

const Sha256 = Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/))

export const Manifest = Schema.Struct({
  ...Fields.fields,
  /** sha256 of the canonical JSON of every other field (`digestOf`). */
  digest: Sha256
})
export type Manifest = typeof Manifest.Type

/** JSON with object keys sorted at every level: equal values, equal bytes. */
export const canonicalJson = (value: unknown): string => JSON.stringify(sortKeys(value))

const sortKeys = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]))
  }
  return value
}

export const sha256 = (data: Uint8Array | string): string => createHash("sha256").update(data).digest("hex")

/** Hex digits of the sha256 kept in a key: 96 bits, far from any collision at our scale. */
const keyDigits = 24

/**
 * The key of a stage run: the stage name (for people reading `store ls`) and
 * the sha256 of (name, code fingerprint, encoded config, input keys). An
 * upstream change of config or code changes the upstream key, hence every
 * downstream key, and nothing else.
 */
export const keyOf = (parts: {
  readonly stage: string
  readonly code: string
  readonly config: unknown
  readonly inputs: Readonly<Record<string, string>>
}): string =>
  `${parts.stage}-${sha256(canonicalJson({ stage: parts.stage, code: parts.code, config: parts.config, inputs: parts.inputs })).slice(0, keyDigits)}`

export const manifestName = "manifest.json"

/** The digest of a manifest's fields: sha256 of their canonical JSON. */
export const digestOf = (fields: Fields): string => sha256(canonicalJson(fields))

/** The manifest of these fields, digest included. */
export const seal = (fields: Fields): Manifest => ({ ...fields, digest: digestOf(fields) })

const decodeManifest = Schema.decodeUnknownResult(Manifest, { onExcessProperty: "error" })

/**
 * A manifest's text, read back: the manifest, or why it cannot be trusted —
 * not JSON, another format, a field its Schema rejects (unknown fields
 * included), a digest that does not match its fields, or an artifact
 * (a manifest without `checkpoint`) whose stage, code, config and inputs
 * do not give its key.
 */
export const decode = (text: string): { readonly _tag: "Valid"; readonly manifest: Manifest } | { readonly _tag: "Invalid"; readonly reason: string } => {
  const invalid = (reason: string) => ({ _tag: "Invalid", reason } as const)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return invalid(`${manifestName} does not decode: ${(e as Error).message}`)
  }
  const found = typeof json === "object" && json !== null && "format" in json ? json.format : undefined
  if (found !== format) {
    return invalid(
      typeof found === "number" && lacked[found] !== undefined
        ? `${manifestName} is format ${found}, ${lacked[found]} (format ${format}): its stage must run again`
        : `${manifestName} does not decode: format ${JSON.stringify(found)}, expected ${format}`
    )
  }
  const decoded = decodeManifest(json)
  if (decoded._tag === "Failure") return invalid(`${manifestName} does not decode: ${oneLine(decoded.failure.message)}`)
  const { digest, ...fields } = decoded.success
  if (digestOf(fields) !== digest) return invalid(`${manifestName} was edited after it was written: its digest does not match its fields`)
  if (fields.checkpoint === undefined && keyOf(fields) !== fields.key) {
    return invalid(`${manifestName}'s stage, code, config and inputs give the key ${keyOf(fields)}, not ${fields.key}`)
  }
  return { _tag: "Valid", manifest: decoded.success }
}

/** A message on one line (Schema errors span several). */
export const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, " ")
