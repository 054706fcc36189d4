/**
 * The manifest of an artifact or a checkpoint: what produced it (stage,
 * code fingerprint, encoded config, input keys), what it holds (every file with its
 * size and sha256) and how it went (metrics, timings, backend). It is
 * validated by Schema when written and when read, and written last: its
 * presence marks a complete directory.
 */
import { Schema } from "effect"
import { createHash } from "node:crypto"

/** The on-disk format of manifests; bump when the layout changes (2: a code fingerprint instead of a version number). */
export const format = 2

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

export const Manifest = Schema.Struct({
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
  `${parts.stage}-${
    sha256(canonicalJson({ stage: parts.stage, code: parts.code, config: parts.config, inputs: parts.inputs })).slice(0, keyDigits)
  }`

export const manifestName = "manifest.json"
