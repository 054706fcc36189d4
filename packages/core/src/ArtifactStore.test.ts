import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Schema } from "effect"
import { HostTensor } from "@tinyfusion/tensor"
import { spawnSync } from "node:child_process"
import * as os from "node:os"
import { ArtifactStore, type Inspection } from "./ArtifactStore.ts"
import * as Manifest from "./Manifest.ts"

/** Runs `f` on a fresh store in a temporary directory. */
const withStore = <A, E>(f: (root: string) => Effect.Effect<A, E, ArtifactStore | FileSystem.FileSystem>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const root = yield* fs.makeTempDirectoryScoped({ prefix: "store-test-" })
    return yield* f(root).pipe(Effect.provide(ArtifactStore.layer(root)))
  })).pipe(Effect.provide(NodeServices.layer))

const base = (key: string, inputs: Record<string, string> = {}): Omit<Manifest.Manifest, "files"> => ({
  format: Manifest.format,
  key,
  stage: "test",
  code: "test",
  config: null,
  inputs,
  output: { ok: true },
  metrics: {},
  timings: { startedAt: new Date(0).toISOString(), seconds: 0, attempts: 1 },
  backend: null,
  createdAt: new Date(0).toISOString(),
  host: "test"
})

const tree = {
  blocks: [{ w: HostTensor.float32([2, 2], new Float32Array([1, 2, 3, 4])) }],
  ids: HostTensor.int32([3], new Int32Array([7, -1, 0]))
}

/** Commits an artifact of `key` with a tensor file and a JSON file. */
const put = (key: string, inputs: Record<string, string> = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* ArtifactStore
    const staging = yield* store.staging
    yield* staging.writeTensors("t.safetensors", tree)
    yield* staging.writeJson("info.json", { key })
    return yield* store.commit(staging, store.artifactDir(key), base(key, inputs))
  }))

const reasonOf = (i: Inspection) => (i._tag === "Corrupt" ? i.reason : i._tag)

describe("ArtifactStore", () => {
  it.effect("commit writes files and a manifest with sizes, sha256 and tensor shapes; inspect verifies them", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        assert.deepStrictEqual(yield* store.inspect("a"), { _tag: "Missing" })
        const manifest = yield* put("a")
        const bytes = yield* fs.readFile(`${root}/artifacts/a/t.safetensors`)
        assert.deepStrictEqual(manifest.files[0], {
          name: "t.safetensors",
          bytes: bytes.byteLength,
          sha256: Manifest.sha256(bytes),
          tensors: { "blocks.0.w": { dtype: "F32", shape: [2, 2] }, ids: { dtype: "I32", shape: [3] } }
        })
        const seen = yield* store.inspect("a")
        assert.strictEqual(seen._tag, "Valid")
        assert.deepStrictEqual(seen._tag === "Valid" ? seen.manifest : undefined, manifest)
        const json = yield* store.readFile(`${root}/artifacts/a`, manifest, "info.json")
        assert.deepStrictEqual(JSON.parse(new TextDecoder().decode(json)), { key: "a" })
        // Nothing is left behind in the scratch directory.
        assert.deepStrictEqual(yield* fs.readDirectory(`${root}/tmp`), [])
      })))

  it.effect("a staging directory that is never committed leaves no artifact", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        yield* Effect.scoped(Effect.gen(function*() {
          const staging = yield* store.staging
          yield* staging.writeJson("half.json", 1)
        }))
        assert.deepStrictEqual(yield* store.inspect("a"), { _tag: "Missing" })
        assert.deepStrictEqual(yield* fs.readDirectory(`${root}/tmp`), [])
      })))

  it.effect("every kind of damage is Corrupt with a reason naming it", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const damage = [
          ["missing file", (dir: string) => fs.remove(`${dir}/info.json`), /file info.json is missing/],
          ["flipped byte", (dir: string) =>
            Effect.flatMap(fs.readFile(`${dir}/t.safetensors`), (b) => {
              const copy = Uint8Array.from(b)
              copy[copy.length - 1]! ^= 1
              return fs.writeFile(`${dir}/t.safetensors`, copy)
            }), /t.safetensors has the wrong sha256/],
          ["truncated file", (dir: string) => fs.truncate(`${dir}/t.safetensors`, 10), /t.safetensors has 10 bytes, the manifest says/],
          ["truncated manifest", (dir: string) => fs.truncate(`${dir}/manifest.json`, 40), /manifest.json does not decode/],
          ["missing manifest", (dir: string) => fs.remove(`${dir}/manifest.json`), /manifest.json is missing/]
        ] as const
        for (const [what, harm, reason] of damage) {
          yield* put("a")
          yield* harm(`${root}/artifacts/a`)
          assert.match(reasonOf(yield* store.inspect("a")), reason, what)
        }
        // A manifest copied under another key does not pass for it.
        yield* put("a")
        yield* fs.copy(`${root}/artifacts/a`, `${root}/artifacts/b`)
        assert.match(reasonOf(yield* store.inspect("b")), /manifest is for key a/)
      })))

  it.effect("a cheap inspection checks the manifest and sizes; only hashing sees a same-size change", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        yield* put("a")
        const file = `${root}/artifacts/a/t.safetensors`
        const bytes = Uint8Array.from(yield* fs.readFile(file))
        bytes[bytes.length - 1]! ^= 1
        yield* fs.writeFile(file, bytes)
        assert.strictEqual((yield* store.inspect("a", { hash: false }))._tag, "Valid")
        assert.match(reasonOf(yield* store.inspect("a")), /wrong sha256/)
        yield* fs.truncate(file, 12)
        assert.match(reasonOf(yield* store.inspect("a", { hash: false })), /has 12 bytes/)
        assert.deepStrictEqual((yield* store.list({ hash: false })).map((l) => [l.key, l.inspection._tag, l.bytes]), [["a", "Corrupt", 0]])
      })))

  it.effect("readFile refuses a file changed after the manifest was written", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const manifest = yield* put("a")
        yield* fs.writeFileString(`${root}/artifacts/a/info.json`, `{"key":"b"}\n`)
        const error = yield* Effect.flip(store.readFile(`${root}/artifacts/a`, manifest, "info.json"))
        assert.strictEqual(error._tag, "CorruptArtifact")
        const absent = yield* Effect.flip(store.readFile(`${root}/artifacts/a`, manifest, "nope.bin"))
        assert.match(absent.message, /no file nope.bin; it has t.safetensors, info.json/)
      })))

  it.effect("file names that could escape the directory or clash are refused", () =>
    withStore(() =>
      Effect.scoped(Effect.gen(function*() {
        const staging = yield* (yield* ArtifactStore).staging
        for (const name of ["../x", "a/b", "", ".hidden", "manifest.json"]) {
          const e = yield* Effect.flip(staging.writeBytes(name, new Uint8Array(1)))
          assert.match(e.message, /is not allowed/, name)
        }
        yield* staging.writeBytes("once.bin", new Uint8Array(1))
        assert.match((yield* Effect.flip(staging.writeBytes("once.bin", new Uint8Array(1)))).message, /written twice/)
      }))))

  it.effect("commit replaces a previous artifact of the same key", () =>
    withStore(() =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        yield* put("a")
        const second = yield* Effect.scoped(Effect.gen(function*() {
          const staging = yield* store.staging
          yield* staging.writeBytes("other.bin", new Uint8Array([1, 2, 3]))
          return yield* store.commit(staging, store.artifactDir("a"), base("a"))
        }))
        const seen = yield* store.inspect("a")
        assert.deepStrictEqual(seen._tag === "Valid" ? seen.manifest.files.map((f) => f.name) : [], ["other.bin"])
        assert.deepStrictEqual(second.files.map((f) => f.bytes), [3])
      })))

  it.effect("gc keeps what runs name and their inputs, transitively; dry run removes nothing", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        yield* put("up")
        yield* put("mid", { x: "up" })
        yield* put("down", { y: "mid" })
        yield* put("orphan")
        yield* put("orphan-child", { x: "orphan" })
        yield* store.keep("exp1", ["down"])
        yield* fs.makeDirectory(`${root}/checkpoints/unfinished/0000000010`, { recursive: true })
        yield* fs.makeDirectory(`${root}/checkpoints/down/0000000010`, { recursive: true })
        // Scratch of a dead writer on this host, and of a live one.
        const dead = spawnSync(process.execPath, ["-e", ""]).pid
        yield* fs.makeDirectory(`${root}/tmp/stage.${os.hostname()}.${dead}.abc`, { recursive: true })
        yield* fs.makeDirectory(`${root}/tmp/stage.${os.hostname()}.${process.pid}.def`, { recursive: true })
        // Another host's scratch: kept while recent.
        yield* fs.makeDirectory(`${root}/tmp/stage.elsewhere.1.ghi`, { recursive: true })
        const planned = yield* store.gc({ dryRun: true })
        const names = planned.map((r) => `${r.what} ${r.path.slice(root.length + 1)}`).sort()
        assert.deepStrictEqual(names, [
          "artifact artifacts/orphan",
          "artifact artifacts/orphan-child",
          "checkpoints checkpoints/down",
          "checkpoints checkpoints/unfinished",
          `scratch tmp/stage.${os.hostname()}.${dead}.abc`
        ])
        assert.deepStrictEqual((yield* fs.readDirectory(`${root}/artifacts`)).sort(), ["down", "mid", "orphan", "orphan-child", "up"])
        yield* store.gc({ dryRun: false })
        assert.deepStrictEqual((yield* fs.readDirectory(`${root}/artifacts`)).sort(), ["down", "mid", "up"])
        assert.deepStrictEqual(yield* fs.readDirectory(`${root}/checkpoints`), [])
        assert.deepStrictEqual(yield* store.gc({ dryRun: true }), [])
        assert.deepStrictEqual((yield* store.runs).map((r) => [r.name, r.keys]), [["exp1", ["down"]]])
      })))

  it.effect("gc keeps the checkpoints of a kept key still being computed, and stops at a corrupt kept artifact", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        yield* store.keep("exp", ["training", "done"])
        yield* fs.makeDirectory(`${root}/checkpoints/training/0000000005`, { recursive: true })
        assert.deepStrictEqual(yield* store.gc({ dryRun: true }), [])
        yield* put("done")
        yield* put("up")
        yield* put("done", { x: "up" })
        yield* fs.truncate(`${root}/artifacts/done/manifest.json`, 10)
        const refused = yield* Effect.flip(store.gc({ dryRun: false }))
        assert.match(refused.message, /artifact done is corrupt .* gc cannot tell its inputs/)
        assert.isTrue(yield* fs.exists(`${root}/artifacts/up`))
      })))

  it.effect("run records are validated when read", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        yield* store.keep("ok", ["a"])
        yield* fs.writeFileString(`${root}/runs/bad.json`, JSON.stringify({ name: "bad", keys: "a" }))
        const error = yield* Effect.flip(store.runs)
        assert.match(error.message, /decode run record .*bad.json/)
        assert.isTrue(Schema.is(Schema.String)(error.reason))
      })))
})
