import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Compute, ParamTree, tf } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"
import * as Batches from "./Batches.ts"
import * as Images from "./Images.ts"
import { LatentDataset } from "./LatentDataset.ts"
import * as LatentShards from "./LatentShards.ts"
import * as Synthetic from "./Synthetic.ts"

const config: Autoencoder.Config = { imageSize: 8, imageChannels: 1, channels: [4, 8], latentChannels: 2, klWeight: 1e-4 }
const set = Images.fromSet(Synthetic.images({ classes: 3, count: 10, size: 8, channels: 1, seed: 5 }, "train"))
const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "latents-"))

/** Extraction options around an untrained tiny autoencoder; `encodes` counts encoder calls. */
const setup = (params: ParamTree.ParamTree, onShard?: LatentShards.Options["onShard"]) => {
  const counter = { encodes: 0 }
  const options: LatentShards.Options = {
    set,
    classes: 3,
    shardSize: 3,
    batchSize: 2,
    seed: 9,
    scale: 1.5,
    latentShape: Autoencoder.latentShape(config),
    fingerprint: "tiny-ae",
    encode: (x) => {
      counter.encodes++
      return Autoencoder.encode(params, x)
    },
    ...(onShard ? { onShard } : {})
  }
  return { counter, options }
}

const files = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith("shard-")).sort()

describe("LatentShards", () => {
  it.effect("a killed extraction resumes without re-encoding finished shards and writes the same bits", () =>
    Effect.gen(function*() {
      const params = Autoencoder.init(config, 0)
      const whole = tempDir()
      const first = setup(params)
      yield* LatentShards.extractTo(whole, first.options)
      // Shards of 3, 3, 3 and 1 images in batches of 2: 2 + 2 + 2 + 1 encoder calls.
      assert.strictEqual(first.counter.encodes, 7)
      assert.deepStrictEqual(files(whole), ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors", "shard-00003.safetensors"])

      // First attempt: killed (interrupted) right after shard 1 is in place.
      const resumed = tempDir()
      const killed = yield* Effect.exit(LatentShards.extractTo(resumed, setup(params, (index) => (index === 1 ? Effect.interrupt : Effect.void)).options))
      assert.isTrue(Exit.hasInterrupts(killed))
      assert.deepStrictEqual(files(resumed), ["shard-00000.safetensors", "shard-00001.safetensors"])
      assert.isFalse(fs.existsSync(path.join(resumed, LatentShards.manifestFile)))
      // What a kill during the next write leaves: a partial temporary file; and a corrupt shard for good measure.
      fs.writeFileSync(path.join(resumed, "shard-00002.safetensors.partial"), "half a shard")
      fs.writeFileSync(path.join(resumed, "shard-00003.safetensors"), fs.readFileSync(path.join(whole, "shard-00003.safetensors")).subarray(0, 50))

      const log: Array<[number, boolean]> = []
      const second = setup(params, (index, encoded) => Effect.sync(() => void log.push([index, encoded])))
      const manifest = yield* LatentShards.extractTo(resumed, second.options)
      assert.deepStrictEqual(log, [[0, false], [1, false], [2, true], [3, true]])
      // Only shards 2 and 3 are encoded: 2 + 1 calls.
      assert.strictEqual(second.counter.encodes, 3)
      assert.deepStrictEqual(manifest.shards.map((s) => [s.first, s.count]), [[0, 3], [3, 3], [6, 3], [9, 1]])
      for (const file of files(whole)) {
        assert.isTrue(fs.readFileSync(path.join(whole, file)).equals(fs.readFileSync(path.join(resumed, file))), file)
      }
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("copy 0 is the image, copy 1 its mirror, scaled; a changed fingerprint re-encodes; a truncated shard fails to load", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const params = Autoencoder.init(config, 1)
      const dir = tempDir()
      const { options } = setup(params)
      // A near-deterministic posterior (σ = e^−15) makes each latent scale · mean.
      const sharp = { ...options, encode: (x: tf.Tensor4D) => ({ ...Autoencoder.encode(params, x), logvar: tf.fill([x.shape[0], 4, 4, 2], -30) as tf.Tensor4D }) }
      yield* LatentShards.extractTo(dir, sharp)
      const loaded = yield* LatentShards.load(dir)
      assert.deepStrictEqual([...loaded.labels], [...set.labels])
      const batch = Batches.range(set.held!, 4, 1)
      const x = tf.tensor4d(batch.images, [...batch.shape])
      const mean = yield* compute.read(Autoencoder.encode(params, x).mean)
      const mirror = yield* compute.read(Autoencoder.encode(params, tf.tensor4d(Images.flipHorizontal(batch.images, batch.shape), [...batch.shape])).mean)
      const per = 32
      for (let i = 0; i < per; i++) {
        assert.closeTo(loaded.latents[(4 * 2) * per + i]!, 1.5 * mean[i]!, 1e-4)
        assert.closeTo(loaded.latents[(4 * 2 + 1) * per + i]!, 1.5 * mirror[i]!, 1e-4)
      }

      const log: Array<boolean> = []
      yield* LatentShards.extractTo(dir, { ...sharp, fingerprint: "another-ae", onShard: (_, encoded) => Effect.sync(() => void log.push(encoded)) })
      assert.deepStrictEqual(log, [true, true, true, true])

      const shard = path.join(dir, "shard-00001.safetensors")
      fs.writeFileSync(shard, fs.readFileSync(shard).subarray(0, 100))
      const broken = yield* Effect.flip(LatentShards.load(dir))
      assert.match(broken.message, /shard-00001\.safetensors: missing, truncated or not the 3-image shard the manifest lists/)
      fs.writeFileSync(path.join(dir, LatentShards.manifestFile), "{\"format\": \"something else\"}")
      assert.match((yield* Effect.flip(LatentShards.load(dir))).message, /latents\.json/)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})

describe("LatentDataset", () => {
  it.effect("deterministic batches over a shuffled order, each item the copy its mirror flag names", () =>
    Effect.gen(function*() {
      const params = Autoencoder.init(config, 2)
      const dir = tempDir()
      yield* LatentShards.extractTo(dir, setup(params).options)
      const loaded = yield* LatentShards.load(dir)
      const data = yield* Effect.provide(Effect.gen(function*() {
        return yield* LatentDataset
      }), LatentDataset.fromDirectory(dir))
      assert.deepStrictEqual([data.count, data.classes, data.scale, ...data.latentShape], [10, 3, 1.5, 4, 4, 2])
      const options = { seed: 4, batchSize: 4 }
      const a = data.batch(options, 3)
      assert.deepStrictEqual([...a.latents], [...data.batch(options, 3).latents])
      assert.deepStrictEqual(a.shape, [4, 4, 4, 2])
      const indices = Batches.indices(10, { ...options, flip: false }, 3)
      indices.forEach((index, i) => {
        const copy = a.mirrored[i] ? 1 : 0
        assert.strictEqual(a.labels[i], set.labels[index])
        assert.deepStrictEqual([...a.latents.subarray(i * 32, (i + 1) * 32)], [...loaded.latents.subarray((index * 2 + copy) * 32, (index * 2 + copy + 1) * 32)])
      })
      const mirrors = Array.from({ length: 50 }, (_, step) => data.batch(options, step).mirrored.filter((m) => m).length).reduce((x, y) => x + y, 0)
      assert.isAbove(mirrors, 70)
      assert.isBelow(mirrors, 130)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
