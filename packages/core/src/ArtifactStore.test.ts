import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, PlatformError, Schema } from "effect"
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

/** The fields of the test stage's artifact `name` (its key derived from them, as a stage's is). */
const base = (name: string, inputs: Record<string, string> = {}): Omit<Manifest.Fields, "files"> => ({
  format: Manifest.format,
  key: keyOf(name, inputs),
  stage: "test",
  code: "test",
  config: { name },
  inputs,
  output: { ok: true },
  metrics: {},
  timings: { startedAt: new Date(0).toISOString(), seconds: 0, attempts: 1 },
  backend: null,
  createdAt: new Date(0).toISOString(),
  host: "test"
})

const keyOf = (name: string, inputs: Record<string, string> = {}) => Manifest.keyOf({ stage: "test", code: "test", config: { name }, inputs })

const tree = {
  blocks: [{ w: HostTensor.float32([2, 2], new Float32Array([1, 2, 3, 4])) }],
  ids: HostTensor.int32([3], new Int32Array([7, -1, 0]))
}

/** Commits artifact `name` with a tensor file and a JSON file. */
const put = (name: string, inputs: Record<string, string> = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* ArtifactStore
    const staging = yield* store.staging
    yield* staging.writeTensors("t.safetensors", tree)
    yield* staging.writeJson("info.json", { name })
    return yield* store.commit(staging, store.artifactDir(keyOf(name, inputs)), base(name, inputs))
  }))

const reasonOf = (i: Inspection) => (i._tag === "Corrupt" ? i.reason : i._tag)

describe("ArtifactStore", () => {
  it.effect("commit writes files and a manifest with sizes, sha256 and tensor shapes; inspect verifies them", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const a = keyOf("a")
        assert.deepStrictEqual(yield* store.inspect(a), { _tag: "Missing" })
        const manifest = yield* put("a")
        const bytes = yield* fs.readFile(`${root}/artifacts/${a}/t.safetensors`)
        assert.deepStrictEqual(manifest.files[0], {
          name: "t.safetensors",
          bytes: bytes.byteLength,
          sha256: Manifest.sha256(bytes),
          tensors: { "blocks.0.w": { dtype: "F32", shape: [2, 2] }, ids: { dtype: "I32", shape: [3] } }
        })
        const seen = yield* store.inspect(a)
        assert.strictEqual(seen._tag, "Valid")
        assert.deepStrictEqual(seen._tag === "Valid" ? seen.manifest : undefined, manifest)
        // The digest covers every other field.
        const { digest, ...fields } = manifest
        assert.strictEqual(digest, Manifest.sha256(Manifest.canonicalJson(fields)))
        const json = yield* store.readFile(`${root}/artifacts/${a}`, manifest, "info.json")
        assert.deepStrictEqual(JSON.parse(new TextDecoder().decode(json)), { name: "a" })
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
        assert.deepStrictEqual(yield* store.inspect(keyOf("a")), { _tag: "Missing" })
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
        const a = keyOf("a")
        for (const [what, harm, reason] of damage) {
          yield* put("a")
          yield* harm(`${root}/artifacts/${a}`)
          assert.match(reasonOf(yield* store.inspect(a)), reason, what)
        }
        // A manifest copied under another key does not pass for it.
        yield* put("a")
        yield* fs.copy(`${root}/artifacts/${a}`, `${root}/artifacts/${keyOf("b")}`)
        assert.strictEqual(reasonOf(yield* store.inspect(keyOf("b"))), `manifest is for key ${a}`)
      })))

  it.effect("a manifest edited after it was written is Corrupt, and so is one of the old format", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const a = keyOf("a")
        const at = `${root}/artifacts/${a}/manifest.json`
        const resealed = (m: Record<string, unknown>) => {
          const { digest: _, ...fields } = m
          return { ...fields, digest: Manifest.sha256(Manifest.canonicalJson(fields)) }
        }
        const edits: ReadonlyArray<readonly [string, (m: Manifest.Manifest) => unknown, RegExp]> = [
          ["output, digest kept", (m) => ({ ...m, output: { ok: false } }), /was edited after it was written: its digest does not match/],
          ["metric added, digest kept", (m) => ({ ...m, metrics: { fid: 1 } }), /was edited after it was written/],
          ["file size, digest kept", (m) => ({ ...m, files: m.files.map((f) => ({ ...f, bytes: f.bytes + 1 })) }), /was edited after it was written/],
          ["config, digest recomputed", (m) => resealed({ ...m, config: { name: "b" } }), new RegExp(`give the key ${keyOf("b")}, not ${a}`)],
          ["inputs, digest recomputed", (m) => resealed({ ...m, inputs: { x: keyOf("up") } }), /stage, code, config and inputs give the key/],
          ["code, digest recomputed", (m) => resealed({ ...m, code: "other" }), /stage, code, config and inputs give the key/],
          ["unknown field, digest recomputed", (m) => resealed({ ...m, note: "hi" }), /does not decode: .*note/],
          ["checkpoint, digest recomputed", (m) => resealed({ ...m, checkpoint: { step: 1 } }), /is a checkpoint's, not an artifact's/],
          ["format 1", (m) => {
            const { digest: _, ...fields } = m
            return { ...fields, format: 1 }
          }, /is format 1, written before manifests carried a digest \(format 3\)/],
          ["format 2", (m) => {
            const { digest: _, code: __, ...fields } = m
            return { ...fields, format: 2, version: 1 }
          }, /is format 2, written before keys covered the code that computes them \(format 3\)/]
        ]
        for (const [what, edit, reason] of edits) {
          const manifest = yield* put("a")
          yield* fs.writeFileString(at, JSON.stringify(edit(manifest), null, 2))
          assert.match(reasonOf(yield* store.inspect(a)), reason, what)
        }
        // Whitespace and key order are not content.
        const manifest = yield* put("a")
        const reordered = Object.fromEntries(Object.entries(manifest).reverse())
        yield* fs.writeFileString(at, JSON.stringify(reordered))
        assert.deepStrictEqual(yield* store.inspect(a), { _tag: "Valid", manifest })
      })))

  it.effect("commit refuses a manifest whose fields do not give its key", () =>
    withStore(() =>
      Effect.scoped(Effect.gen(function*() {
        const store = yield* ArtifactStore
        const staging = yield* store.staging
        const error = yield* Effect.flip(store.commit(staging, store.artifactDir("a"), { ...base("a"), key: "a" }))
        assert.match(error.message, /^commit .* failed: manifest.json's stage, code, config and inputs give the key test-[0-9a-f]{24}, not a$/)
      }))))

  it.effect("before its first write the store removes the staging folders of dead processes", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const dead = spawnSync(process.execPath, ["-e", ""]).pid
        const left = [`stage.${os.hostname()}.${dead}.abc`, `stage.${os.hostname()}.${process.pid}.def`, "stage.elsewhere.1.ghi"]
        for (const name of left) yield* fs.makeDirectory(`${root}/tmp/${name}`, { recursive: true })
        yield* put("a")
        assert.deepStrictEqual((yield* fs.readDirectory(`${root}/tmp`)).sort(), left.slice(1).sort())
        // Checked once per store: a later dead folder waits for gc or the next process.
        yield* fs.makeDirectory(`${root}/tmp/${left[0]}`)
        yield* put("b")
        assert.isTrue(yield* fs.exists(`${root}/tmp/${left[0]}`))
        yield* store.writable
      })))

  it.effect("a store that cannot be written fails at its first write with one clear error", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "store-test-" })
      const file = `${dir}/file`
      yield* fs.writeFileString(file, "")
      const onFile = yield* Effect.flip(put("a").pipe(Effect.provide(ArtifactStore.layer(file))))
      assert.strictEqual(onFile.message, `write to the store ${file} failed: it is not a directory`)
      // Root may write anywhere: a read-only file system is a FileSystem that refuses every write.
      const denied = (method: string) =>
        Effect.fail(PlatformError.systemError({ _tag: "PermissionDenied", module: "FileSystem", method, cause: Object.assign(new Error("permission denied"), { code: "EROFS" }) }))
      const readOnly = Layer.effect(FileSystem.FileSystem, Effect.map(FileSystem.FileSystem, (real) => ({
        ...real,
        makeDirectory: () => denied("makeDirectory"),
        writeFile: () => denied("writeFile"),
        open: () => denied("open")
      } satisfies FileSystem.FileSystem)))
      const error = yield* Effect.flip(put("a").pipe(Effect.provide(ArtifactStore.layer(`${dir}/store`)), Effect.provide(readOnly)))
      assert.match(error.message, new RegExp(`^write to the store ${dir}/store failed: it is not writable \\(EROFS: `))
      assert.isFalse(error.transient)
    })).pipe(Effect.provide(NodeServices.layer)))

  it.effect("reading needs a store: an existing directory with a store's folders", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "store-test-" })
      yield* fs.writeFileString(`${dir}/file`, "")
      const readable = (root: string) =>
        Effect.gen(function*() {
          yield* (yield* ArtifactStore).readable
        }).pipe(Effect.provide(ArtifactStore.layer(root)))
      for (
        const [root, reason] of [
          [`${dir}/none`, "no such directory"],
          [`${dir}/file`, "it is not a directory"],
          [dir, "it holds none of artifacts/, checkpoints/, runs/, so it is not a store"]
        ]
      ) {
        assert.strictEqual((yield* Effect.flip(readable(root!))).message, `read the store ${root} failed: ${reason}`)
      }
      yield* put("a").pipe(Effect.provide(ArtifactStore.layer(dir)))
      yield* readable(dir)
    })).pipe(Effect.provide(NodeServices.layer)))

  it.effect("a cheap inspection checks the manifest and sizes; only hashing sees a same-size change", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const a = keyOf("a")
        yield* put("a")
        const file = `${root}/artifacts/${a}/t.safetensors`
        const bytes = Uint8Array.from(yield* fs.readFile(file))
        bytes[bytes.length - 1]! ^= 1
        yield* fs.writeFile(file, bytes)
        assert.strictEqual((yield* store.inspect(a, { hash: false }))._tag, "Valid")
        assert.match(reasonOf(yield* store.inspect(a)), /wrong sha256/)
        yield* fs.truncate(file, 12)
        assert.match(reasonOf(yield* store.inspect(a, { hash: false })), /has 12 bytes/)
        assert.deepStrictEqual((yield* store.list({ hash: false })).map((l) => [l.key, l.inspection._tag, l.bytes]), [[a, "Corrupt", 0]])
      })))

  it.effect("readFile refuses a file changed after the manifest was written", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const manifest = yield* put("a")
        const dir = `${root}/artifacts/${keyOf("a")}`
        yield* fs.writeFileString(`${dir}/info.json`, `{"name":"b"}\n`)
        const error = yield* Effect.flip(store.readFile(dir, manifest, "info.json"))
        assert.strictEqual(error._tag, "CorruptArtifact")
        const absent = yield* Effect.flip(store.readFile(dir, manifest, "nope.bin"))
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
          return yield* store.commit(staging, store.artifactDir(keyOf("a")), base("a"))
        }))
        const seen = yield* store.inspect(keyOf("a"))
        assert.deepStrictEqual(seen._tag === "Valid" ? seen.manifest.files.map((f) => f.name) : [], ["other.bin"])
        assert.deepStrictEqual(second.files.map((f) => f.bytes), [3])
      })))

  it.effect("gc keeps what runs name and their inputs, transitively; dry run removes nothing", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const up = (yield* put("up")).key
        const mid = (yield* put("mid", { x: up })).key
        const down = (yield* put("down", { y: mid })).key
        const orphan = (yield* put("orphan")).key
        const orphanChild = (yield* put("orphan-child", { x: orphan })).key
        yield* store.keep("exp1", [down])
        yield* fs.makeDirectory(`${root}/checkpoints/unfinished/0000000010`, { recursive: true })
        yield* fs.makeDirectory(`${root}/checkpoints/${down}/0000000010`, { recursive: true })
        // Scratch of a dead writer on this host, and of a live one.
        const dead = spawnSync(process.execPath, ["-e", ""]).pid
        yield* fs.makeDirectory(`${root}/tmp/stage.${os.hostname()}.${dead}.abc`, { recursive: true })
        yield* fs.makeDirectory(`${root}/tmp/stage.${os.hostname()}.${process.pid}.def`, { recursive: true })
        // Another host's scratch: kept while recent.
        yield* fs.makeDirectory(`${root}/tmp/stage.elsewhere.1.ghi`, { recursive: true })
        const planned = yield* store.gc({ dryRun: true })
        const names = planned.map((r) => `${r.what} ${r.path.slice(root.length + 1)}`).sort()
        assert.deepStrictEqual(names, [
          `artifact artifacts/${orphan}`,
          `artifact artifacts/${orphanChild}`,
          `checkpoints checkpoints/${down}`,
          "checkpoints checkpoints/unfinished",
          `scratch tmp/stage.${os.hostname()}.${dead}.abc`
        ].sort())
        assert.deepStrictEqual((yield* fs.readDirectory(`${root}/artifacts`)).sort(), [down, mid, orphan, orphanChild, up].sort())
        yield* store.gc({ dryRun: false })
        assert.deepStrictEqual((yield* fs.readDirectory(`${root}/artifacts`)).sort(), [down, mid, up].sort())
        assert.deepStrictEqual(yield* fs.readDirectory(`${root}/checkpoints`), [])
        assert.deepStrictEqual(yield* store.gc({ dryRun: true }), [])
        assert.deepStrictEqual((yield* store.runs).map((r) => [r.name, r.keys]), [["exp1", [down]]])
      })))

  it.effect("gc keeps the checkpoints of a kept key still being computed, and stops at a corrupt kept artifact", () =>
    withStore((root) =>
      Effect.gen(function*() {
        const store = yield* ArtifactStore
        const fs = yield* FileSystem.FileSystem
        const up = keyOf("up")
        const done = keyOf("done", { x: up })
        yield* store.keep("exp", ["training", done])
        yield* fs.makeDirectory(`${root}/checkpoints/training/0000000005`, { recursive: true })
        assert.deepStrictEqual(yield* store.gc({ dryRun: true }), [])
        yield* put("up")
        yield* put("done", { x: up })
        yield* fs.truncate(`${root}/artifacts/${done}/manifest.json`, 10)
        const refused = yield* Effect.flip(store.gc({ dryRun: false }))
        assert.match(refused.message, new RegExp(`artifact ${done} is corrupt .* gc cannot tell its inputs`))
        assert.isTrue(yield* fs.exists(`${root}/artifacts/${up}`))
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
