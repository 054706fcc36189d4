/**
 * Latent extraction: every training image and its horizontal mirror are
 * encoded (a posterior sample times the scale factor, as the reference's
 * extract_features) into shards of `shardSize` images:
 * shard-00000.safetensors holds `latents` [n, 2, h, w, c] (copy 0 the
 * image, copy 1 its mirror) and `labels` [n].
 *
 * Shards go to a `ShardStore` that keeps a shard whole or not at all (a
 * folder with atomic renames, or the stage's checkpoints), so a killed run
 * leaves only whole shards; a rerun keeps every shard that decodes with the
 * expected shapes and fingerprint and encodes only the rest. The sampling
 * noise of a shard is drawn from the stream "latents/sample" at the shard
 * index, so a resumed extraction writes the same bits.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Compute, type ComputeError, HostTensor, Rng, Safetensors, tf } from "@tinyfusion/tensor"
import type * as Autoencoder from "./Autoencoder.ts"
import type { DatasetError } from "./Dataset.ts"
import * as Batches from "./Batches.ts"
import * as Images from "./Images.ts"

export class LatentShardsError extends Schema.TaggedError<LatentShardsError>()("LatentShardsError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `latent shards at ${this.path}: ${this.reason}`
  }
}

export const Manifest = Schema.Struct({
  format: Schema.Literal("tinyfusion-latents/1"),
  count: Schema.Int,
  classes: Schema.Int,
  latentShape: Schema.Tuple([Schema.Int, Schema.Int, Schema.Int]),
  scale: Schema.Number,
  fingerprint: Schema.String,
  shards: Schema.Array(Schema.Struct({ file: Schema.String, first: Schema.Int, count: Schema.Int }))
})
export type Manifest = typeof Manifest.Type

export const manifestFile = "latents.json"
export const shardFile = (index: number): string => `shard-${String(index).padStart(5, "0")}.safetensors`

export interface Options {
  /** Read `batchSize` images at a time: an extraction holds one batch of images and one shard of latents. */
  readonly set: Images.Source
  readonly classes: number
  readonly shardSize: number
  readonly batchSize: number
  readonly seed: number
  /** The latent scale factor (1/std); stored latents are multiplied by it. */
  readonly scale: number
  readonly latentShape: readonly [number, number, number]
  /** Identifies the encoder and data (e.g. a stage key); shards with another are re-encoded. */
  readonly fingerprint: string
  /** The encoder: images [N,H,W,C] in [-1, 1] → posterior. */
  readonly encode: (images: tf.Tensor4D) => Autoencoder.Posterior
  /** Told of each shard, whether it was encoded now or kept from an earlier run. */
  readonly onShard?: (index: number, encoded: boolean) => Effect.Effect<void>
}

const failAt = (at: string) => (e: unknown) => new LatentShardsError({ path: at, reason: e instanceof Error ? e.message : String(e) })

/** Writes bytes so that `file` is either absent or complete: temporary file, fsync, rename. */
export const writeAtomic = (file: string, bytes: Uint8Array): Effect.Effect<void, LatentShardsError> =>
  Effect.tryPromise({
    try: async () => {
      const partial = `${file}.partial`
      const handle = await fs.open(partial, "w")
      try {
        await handle.writeFile(bytes)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await fs.rename(partial, file)
    },
    catch: failAt(file)
  })

/** Where finished shards are kept; `read` gives undefined for a shard not (wholly) there. */
export interface ShardStore<E> {
  readonly read: (index: number) => Effect.Effect<Uint8Array | undefined, E>
  readonly write: (index: number, bytes: Uint8Array) => Effect.Effect<void, E>
}

/** Shards as files of a folder, each written atomically. */
export const directory = (dir: string): ShardStore<LatentShardsError> => ({
  read: (index) =>
    Effect.tryPromise(() => fs.readFile(path.join(dir, shardFile(index)))).pipe(
      Effect.map((b): Uint8Array | undefined => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)),
      Effect.orElseSucceed(() => undefined)
    ),
  write: (index, bytes) => writeAtomic(path.join(dir, shardFile(index)), bytes)
})

interface Expected {
  readonly count: number
  readonly latentShape: readonly [number, number, number]
  readonly fingerprint: string
}

/** The shard's arrays if its bytes decode with the expected shapes and fingerprint. */
const validate = (bytes: Uint8Array | undefined, expected: Expected) =>
  Effect.gen(function*() {
    if (bytes === undefined) return undefined
    const decoded = yield* Safetensors.decode(bytes).pipe(Effect.option)
    if (decoded._tag === "None") return undefined
    const latents = decoded.value.tensors.get("latents")
    const labels = decoded.value.tensors.get("labels")
    const [h, w, c] = expected.latentShape
    const ok = decoded.value.metadata["fingerprint"] === expected.fingerprint &&
      latents?.dtype === "float32" && latents.shape.join() === [expected.count, 2, h, w, c].join() &&
      labels?.dtype === "int32" && labels.shape.join() === String(expected.count)
    return ok ? { latents: latents.data as Float32Array, labels: labels.data as Int32Array } : undefined
  })

/** Encodes the images [first, first + count) and their mirrors: latents [count, 2, h, w, c]. */
const encodeImages = Effect.fnUntraced(function*(options: Options, index: number, first: number, count: number): Effect.fn.Return<Float32Array, DatasetError | ComputeError, Compute> {
  const compute = yield* Compute
  const [h, w, c] = options.latentShape
  const per = h * w * c
  const noise = Rng.normal(Rng.stream(options.seed, "latents/sample"), index, count * 2 * per)
  const latents = new Float32Array(count * 2 * per)
  const imageShape = [options.set.height, options.set.width, options.set.channels] as const
  for (let start = 0; start < count; start += options.batchSize) {
    const n = Math.min(options.batchSize, count - start)
    const batch = Batches.range(yield* options.set.read(first + start, n), 0, n)
    const mirrored = Images.flipHorizontal(batch.images, batch.shape)
    // Rows 0..n−1 originals, n..2n−1 mirrors; noise in the stored [image, copy] order.
    const eps = new Float32Array(2 * n * per)
    for (let i = 0; i < n; i++) {
      for (const copy of [0, 1]) eps.set(noise.subarray(((start + i) * 2 + copy) * per, ((start + i) * 2 + copy + 1) * per), (copy * n + i) * per)
    }
    const z = yield* compute.scoped(Effect.gen(function*() {
      const x = tf.concat([tf.tensor4d(batch.images, [n, ...imageShape]), tf.tensor4d(mirrored, [n, ...imageShape])]) as tf.Tensor4D
      const posterior = options.encode(x)
      const sampled = tf.add(posterior.mean, tf.mul(tf.exp(tf.mul(posterior.logvar, 0.5)), tf.tensor4d(eps, [2 * n, h, w, c])))
      return yield* compute.read(tf.mul(sampled, options.scale))
    }))
    for (let i = 0; i < n; i++) {
      for (const copy of [0, 1]) latents.set(z.subarray((copy * n + i) * per, (copy * n + i + 1) * per), ((start + i) * 2 + copy) * per)
    }
  }
  return latents
})

/** A shard's file: latents [count, 2, h, w, c] (each image and its mirror) and labels, with the fingerprint of what made them. */
export const encodeShard = (
  shard: { readonly latents: Float32Array; readonly labels: Int32Array; readonly first: number },
  latentShape: readonly [number, number, number],
  fingerprint: string
): Uint8Array =>
  Safetensors.encode([
    ["latents", HostTensor.float32([shard.labels.length, 2, ...latentShape], shard.latents)],
    ["labels", HostTensor.int32([shard.labels.length], shard.labels)]
  ], { metadata: { fingerprint, first: String(shard.first) } })

/** Extracts (or finishes extracting) the latent shards of a set into a shard store; returns their manifest. */
export const extract = Effect.fn("LatentShards.extract")(function*<E>(
  options: Options,
  store: ShardStore<E>
): Effect.fn.Return<Manifest, E | DatasetError | ComputeError, Compute> {
  const shards: Array<Manifest["shards"][number]> = []
  const [h, w, c] = options.latentShape
  for (let index = 0, first = 0; first < options.set.count; index++, first += options.shardSize) {
    const count = Math.min(options.shardSize, options.set.count - first)
    const existing = yield* validate(yield* store.read(index), { count, latentShape: options.latentShape, fingerprint: options.fingerprint })
    if (existing === undefined) {
      const latents = yield* encodeImages(options, index, first, count)
      yield* store.write(index, encodeShard({ latents, labels: options.set.labels.slice(first, first + count), first }, options.latentShape, options.fingerprint))
    }
    if (options.onShard) yield* options.onShard(index, existing === undefined)
    shards.push({ file: shardFile(index), first, count })
  }
  return {
    format: "tinyfusion-latents/1",
    count: options.set.count,
    classes: options.classes,
    latentShape: [h, w, c],
    scale: options.scale,
    fingerprint: options.fingerprint,
    shards
  } satisfies Manifest
})

/** Extraction into a folder: its shards, then latents.json, which `load` reads. */
export const extractTo = Effect.fn("LatentShards.extractTo")(function*(dir: string, options: Options) {
  yield* Effect.tryPromise({ try: () => fs.mkdir(dir, { recursive: true }), catch: failAt(dir) })
  const manifest = yield* extract(options, directory(dir))
  yield* writeAtomic(path.join(dir, manifestFile), new TextEncoder().encode(JSON.stringify(manifest, null, 2)))
  return manifest
})

export interface Loaded {
  readonly manifest: Manifest
  /** [count, 2, h, w, c] */
  readonly latents: Float32Array
  readonly labels: Int32Array
}

/** Reads a finished extraction back, checking every shard against the manifest. */
export const load = Effect.fn("LatentShards.load")(function*(dir: string): Effect.fn.Return<Loaded, LatentShardsError> {
  const at = path.join(dir, manifestFile)
  const text = yield* Effect.tryPromise({ try: () => fs.readFile(at, "utf8"), catch: failAt(at) })
  const manifest = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: failAt(at) }).pipe(
    Effect.flatMap(Schema.decodeUnknownEffect(Manifest)),
    Effect.mapError((e) => (e._tag === "LatentShardsError" ? e : new LatentShardsError({ path: at, reason: e.message })))
  )
  const covered = manifest.shards.reduce((n, s) => (s.first === n ? n + s.count : -1), 0)
  if (covered !== manifest.count) {
    return yield* new LatentShardsError({ path: at, reason: `shards do not cover images 0..${manifest.count - 1} in order` })
  }
  const per = manifest.latentShape.reduce((a, b) => a * b, 1)
  const latents = new Float32Array(manifest.count * 2 * per)
  const labels = new Int32Array(manifest.count)
  for (const shard of manifest.shards) {
    const file = path.join(dir, shard.file)
    const bytes = yield* Effect.tryPromise(() => fs.readFile(file)).pipe(Effect.orElseSucceed(() => undefined))
    const read = yield* validate(bytes && new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { count: shard.count, latentShape: manifest.latentShape, fingerprint: manifest.fingerprint })
    if (read === undefined) {
      return yield* new LatentShardsError({ path: file, reason: `missing, truncated or not the ${shard.count}-image shard the manifest lists` })
    }
    latents.set(read.latents, shard.first * 2 * per)
    labels.set(read.labels, shard.first)
  }
  return { manifest, latents, labels }
})
