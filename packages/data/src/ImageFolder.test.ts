import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import jpeg from "jpeg-js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Compute, ParamTree } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"
import * as ImageFolder from "./ImageFolder.ts"
import * as Images from "./Images.ts"
import * as LatentShards from "./LatentShards.ts"
import * as Png from "./Png.ts"

/** A class-per-folder set of 7 images of other sizes than the crop: 4 PNGs (RGB and grey) and 3 JPEGs. */
const writeFolder = () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "stream-folder-"))
  const pattern = (w: number, h: number, c: number, seed: number) =>
    Uint8Array.from({ length: w * h * c }, (_, i) => (i * (seed + 3) + seed * 17) % 256)
  fs.mkdirSync(path.join(root, "cat"))
  fs.mkdirSync(path.join(root, "dog"))
  for (const [i, [w, h, c]] of [[12, 10, 3], [9, 14, 3], [8, 8, 1], [20, 11, 3]].entries()) {
    fs.writeFileSync(path.join(root, "cat", `${i}.png`), Png.encode(Png.raster(w, h, c as 1 | 3, pattern(w, h, c, i))))
  }
  for (const [i, [w, h]] of [[16, 12], [10, 10], [13, 17]].entries()) {
    const rgba = Buffer.from(pattern(w, h, 4, 10 + i))
    fs.writeFileSync(path.join(root, "dog", `${i}.jpg`), jpeg.encode({ data: rgba, width: w, height: h }, 90).data)
  }
  return root
}

/** The source with every read recorded: where it started, how many images it asked for and got. */
const recorded = (source: Images.Source) => {
  const reads: Array<readonly [start: number, asked: number, got: number]> = []
  const spy: Images.Source = {
    ...source,
    read: (start, count) => Effect.tap(source.read(start, count), (set) => Effect.sync(() => void reads.push([start, count, set.count])))
  }
  return { spy, reads }
}

const config: Autoencoder.Config = { imageSize: 8, imageChannels: 3, channels: [4, 8], latentChannels: 2, klWeight: 1e-4 }
/** Extraction of a source in shards of 3, batches of 2, through an untrained tiny autoencoder. */
const extraction = (set: Images.Source, params: ParamTree.ParamTree, onShard?: LatentShards.Options["onShard"]): LatentShards.Options => ({
  set,
  classes: 2,
  shardSize: 3,
  batchSize: 2,
  seed: 4,
  scale: 0.7,
  latentShape: Autoencoder.latentShape(config),
  fingerprint: "tiny-ae",
  encode: (x) => Autoencoder.encode(params, x),
  ...(onShard ? { onShard } : {})
})
const shardFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith("shard-")).sort()
/** The files of `a` that differ from `b`'s, byte for byte. */
const differing = (a: string, b: string, files: ReadonlyArray<string>) =>
  files.filter((file) => !fs.readFileSync(path.join(a, file)).equals(fs.readFileSync(path.join(b, file))))

describe("ImageFolder.open: a folder read in batches", () => {
  it.effect("latents from the streamed folder are the in-memory set's bit for bit; reads never exceed the batch; a resumed extraction reads only what it encodes", () =>
    Effect.gen(function*() {
      const root = writeFolder()
      const { source, classNames } = yield* ImageFolder.open({ root, size: 8 })
      assert.deepStrictEqual(classNames, ["cat", "dog"])
      assert.deepStrictEqual([source.count, source.height, source.width, source.channels], [7, 8, 8, 3])
      assert.deepStrictEqual([...source.labels], [0, 0, 0, 0, 1, 1, 1])
      assert.isUndefined(source.held)
      // The whole folder in memory, as the in-memory path held it.
      const whole = yield* Images.load(source)
      assert.strictEqual(whole.pixels.length, 7 * 8 * 8 * 3)
      const again = yield* source.read(3, 3)
      assert.deepStrictEqual([...again.pixels], [...whole.pixels.subarray(3 * 192, 6 * 192)])
      assert.deepStrictEqual([...again.labels], [0, 1, 1])

      const params = Autoencoder.init(config, 0)
      const options = (set: Images.Source, onShard?: LatentShards.Options["onShard"]) => extraction(set, params, onShard)
      const inMemory = fs.mkdtempSync(path.join(os.tmpdir(), "latents-held-"))
      yield* LatentShards.extractTo(inMemory, options(Images.fromSet(whole)))
      const streamed = fs.mkdtempSync(path.join(os.tmpdir(), "latents-streamed-"))
      const { spy, reads } = recorded(source)
      yield* LatentShards.extractTo(streamed, options(spy))
      assert.deepStrictEqual(shardFiles(streamed), ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"])
      assert.deepStrictEqual(differing(inMemory, streamed, [...shardFiles(inMemory), LatentShards.manifestFile]), [])
      // Shards of 3, 3 and 1 in batches of 2: every image read once, in order, at most 2 at a time.
      assert.deepStrictEqual(reads, [[0, 2, 2], [2, 1, 1], [3, 2, 2], [5, 1, 1], [6, 1, 1]])

      // Killed after shard 0: the rerun reads the images of shards 1 and 2 only, and writes the same bits.
      const resumed = fs.mkdtempSync(path.join(os.tmpdir(), "latents-resumed-"))
      const killed = yield* Effect.exit(LatentShards.extractTo(resumed, options(source, (index) => (index === 0 ? Effect.interrupt : Effect.void))))
      assert.isTrue(Exit.hasInterrupts(killed))
      const second = recorded(source)
      yield* LatentShards.extractTo(resumed, options(second.spy))
      assert.deepStrictEqual(second.reads, [[3, 2, 2], [5, 1, 1], [6, 1, 1]])
      assert.deepStrictEqual(differing(inMemory, resumed, shardFiles(inMemory)), [])
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a corrupt image stops its batch naming the file; shards before it are kept, and the run resumes once it is replaced", () =>
    Effect.gen(function*() {
      const root = writeFolder()
      fs.writeFileSync(path.join(root, "dog", "1.jpg"), "truncated")
      const { source } = yield* ImageFolder.open({ root, size: 8 })
      const params = Autoencoder.init(config, 1)
      const options = extraction(source, params)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "latents-corrupt-"))
      const failed = yield* Effect.flip(LatentShards.extractTo(dir, options))
      assert.strictEqual(failed._tag, "DatasetError")
      assert.match(failed.message, /^image folder at \/.*\/dog\/1\.jpg: not a decodable JPEG: /)
      // Image 5 is in shard 1: shard 0 is whole, nothing else written.
      assert.deepStrictEqual(shardFiles(dir), ["shard-00000.safetensors"])
      fs.writeFileSync(path.join(root, "dog", "1.jpg"), jpeg.encode({ data: Buffer.alloc(10 * 10 * 4, 90), width: 10, height: 10 }, 90).data)
      const manifest = yield* LatentShards.extractTo(dir, options)
      assert.deepStrictEqual(manifest.shards.map((s) => [s.first, s.count]), [[0, 3], [3, 3], [6, 1]])
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
