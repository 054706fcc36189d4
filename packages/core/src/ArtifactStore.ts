/**
 * Where stage results live: a directory (`--store`, default `./runs`).
 *
 *   artifacts/<key>/manifest.json + files    one complete stage result
 *   checkpoints/<key>/<step>/manifest.json   resumable state of an unfinished stage
 *   runs/<name>.json                         a kept run: the artifact keys it needs
 *   locks/<key>.lock                         who is computing <key> right now
 *   tmp/                                     staging directories and scratch files
 *
 * Writes are atomic: files go to a staging directory under tmp/, each is
 * fsynced, the manifest is written last, then the directory is renamed into
 * place (and its parent fsynced). A kill at any instant leaves the old state
 * or the new one. Reading verifies: a manifest that does not decode or whose
 * digest or key does not match its fields (Manifest.decode), a missing file or
 * a size or sha256 mismatch makes the artifact Corrupt, never used.
 *
 * Before its first write the store checks that it can be written (one clear
 * error rather than one per stage) and removes the staging directories that
 * killed processes left under tmp/.
 *
 * Garbage collection keeps what a run record names, the inputs of those
 * artifacts (transitively), whatever a live lock protects and the checkpoints
 * of kept keys still being computed; everything else goes.
 */
import { Context, Effect, FileSystem, Layer, Option, Path, Schema, type Scope, Stream } from "effect"
import type * as PlatformError from "effect/PlatformError"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import { createHash, randomUUID } from "node:crypto"
import * as os from "node:os"
import * as Lock from "./Lock.ts"
import * as Manifest from "./Manifest.ts"
import * as StoreError from "./StoreError.ts"

export class CorruptArtifact extends Schema.TaggedError<CorruptArtifact>()("CorruptArtifact", {
  key: Schema.String,
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `artifact ${this.key} is corrupt (${this.path}): ${this.reason}`
  }
}

/** What a directory of the store holds. */
export type Inspection =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Corrupt"; readonly reason: string }
  | { readonly _tag: "Valid"; readonly manifest: Manifest.Manifest }

/** Tensors to write: a host tree (flattened to dotted keys) or named tensors. */
export type Tensors = HostTensor.HostTree | ReadonlyMap<string, HostTensor.HostTensor>

/** A directory being written; it lands in the store only through `commit`. */
export interface Staging {
  readonly dir: string
  readonly writeTensors: (
    name: string,
    tensors: Tensors,
    options?: { readonly metadata?: Readonly<Record<string, string>>; readonly dtype?: Safetensors.WriteDtype }
  ) => Effect.Effect<Manifest.FileEntry, StoreError.StoreError>
  readonly writeJson: (name: string, value: unknown) => Effect.Effect<Manifest.FileEntry, StoreError.StoreError>
  readonly writeBytes: (name: string, bytes: Uint8Array) => Effect.Effect<Manifest.FileEntry, StoreError.StoreError>
  /** A file too large to hold in memory (a 10 GB sample batch): `produce` writes it at the path given; it is then synced and hashed. */
  readonly writeFile: <E, R>(name: string, produce: (path: string) => Effect.Effect<void, E, R>) => Effect.Effect<Manifest.FileEntry, E | StoreError.StoreError, R>
  /** The files written so far, in order. */
  readonly files: () => ReadonlyArray<Manifest.FileEntry>
}

export const RunRecord = Schema.Struct({
  name: Manifest.SafeName,
  keys: Schema.Array(Schema.String),
  createdAt: Schema.String
})
export type RunRecord = typeof RunRecord.Type

export interface Listing {
  readonly key: string
  readonly inspection: Inspection
  /** Bytes of the files the manifest lists (0 when it does not decode). */
  readonly bytes: number
  /** Runs that keep this artifact. */
  readonly runs: ReadonlyArray<string>
}

export interface CheckpointListing {
  readonly key: string
  readonly step: number
  readonly dir: string
  readonly inspection: Inspection
}

export interface Removal {
  readonly path: string
  readonly what: "artifact" | "checkpoints" | "scratch" | "stale lock"
}

export interface Options {
  readonly lock?: Partial<Lock.Options>
}

/**
 * How deeply to inspect: `hash` reads every file and checks its sha256;
 * without it only the manifest and the file sizes are checked (cheap).
 */
export interface Depth {
  readonly hash: boolean
}

export class ArtifactStore extends Context.Service<ArtifactStore, {
  readonly root: string
  /** Fails unless `root` is a store to read: an existing directory holding a store's folders. */
  readonly readable: Effect.Effect<void, StoreError.StoreError>
  /**
   * Fails unless the store can be written (checked once, before the first
   * write, which runs it anyway); then removes the staging directories of
   * dead processes under tmp/.
   */
  readonly writable: Effect.Effect<void, StoreError.StoreError>
  readonly artifactDir: (key: string) => string
  /** Inspects the committed artifact of a key (by default reading and hashing every file). */
  readonly inspect: (key: string, depth?: Depth) => Effect.Effect<Inspection, StoreError.StoreError>
  /** Inspects any manifest directory of the store, expecting `key` in its manifest. */
  readonly inspectDir: (dir: string, key: string, depth?: Depth) => Effect.Effect<Inspection, StoreError.StoreError>
  /** A file of a manifest directory, checked against its recorded size and sha256. */
  readonly readFile: (
    dir: string,
    manifest: Manifest.Manifest,
    name: string
  ) => Effect.Effect<Uint8Array, StoreError.StoreError | CorruptArtifact>
  /** Holds the key's lock for the scope, waiting while another live holder has it. */
  readonly lock: (key: string) => Effect.Effect<void, StoreError.StoreError, Scope.Scope>
  /** A fresh staging directory, removed with the scope unless committed. */
  readonly staging: Effect.Effect<Staging, StoreError.StoreError, Scope.Scope>
  /**
   * Writes the manifest (with the staged files) and moves the staging
   * directory to `dir`, replacing what was there.
   */
  readonly commit: (
    staging: Staging,
    dir: string,
    manifest: Omit<Manifest.Fields, "files">
  ) => Effect.Effect<Manifest.Manifest, StoreError.StoreError>
  /** Checkpoint directories of a key, newest first (not inspected). */
  readonly checkpoints: (key: string) => Effect.Effect<ReadonlyArray<{ readonly step: number; readonly dir: string }>, StoreError.StoreError>
  readonly checkpointDir: (key: string, step: number) => string
  /** Removes every checkpoint of a key. */
  readonly removeCheckpoints: (key: string) => Effect.Effect<void, StoreError.StoreError>
  /** Removes a directory of the store (atomically: renamed aside first). */
  readonly remove: (dir: string) => Effect.Effect<void, StoreError.StoreError>
  readonly list: (depth: Depth) => Effect.Effect<ReadonlyArray<Listing>, StoreError.StoreError>
  readonly listCheckpoints: (depth: Depth) => Effect.Effect<ReadonlyArray<CheckpointListing>, StoreError.StoreError>
  /** Records (or replaces) a named run keeping these keys. */
  readonly keep: (run: string, keys: ReadonlyArray<string>) => Effect.Effect<RunRecord, StoreError.StoreError>
  readonly runs: Effect.Effect<ReadonlyArray<RunRecord>, StoreError.StoreError>
  /** Removes what no kept run references; with `dryRun`, only says what it would remove. */
  readonly gc: (
    options: { readonly dryRun: boolean }
  ) => Effect.Effect<ReadonlyArray<Removal>, StoreError.StoreError | CorruptArtifact>
}>()("@tinyfusion/core/ArtifactStore") {
  /** The store in directory `root` (created when first written). */
  static layer(root: string, options: Options = {}): Layer.Layer<ArtifactStore, never, FileSystem.FileSystem | Path.Path> {
    return Layer.effect(ArtifactStore, make(root, options))
  }

  /** A store in a fresh temporary directory, removed with the layer (tests, throwaway runs). */
  static readonly layerTemp: Layer.Layer<ArtifactStore, PlatformError.PlatformError, FileSystem.FileSystem | Path.Path> =
    Layer.unwrap(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      return ArtifactStore.layer(yield* fs.makeTempDirectoryScoped({ prefix: "tinyfusion-store-" }))
    }))
}

const encodeFields = Schema.encodeUnknownEffect(Manifest.Fields)
const decodeRunJson = Schema.decodeUnknownEffect(Schema.fromJsonString(RunRecord))
const encodeRun = Schema.encodeUnknownEffect(RunRecord)
const decodeSafeName = Schema.decodeUnknownOption(Manifest.SafeName)

const stepDigits = 10
const stepName = (step: number) => String(step).padStart(stepDigits, "0")

/** Scratch names carry host and pid so gc can tell a dead writer's leftovers. */
const scratchName = (kind: string) => `${kind}.${os.hostname()}.${process.pid}.${randomUUID()}`
const scratchOwner = (name: string): { readonly host: string; readonly pid: number } | undefined => {
  const parts = name.split(".")
  if (parts.length < 4) return undefined
  const pid = Number(parts[parts.length - 2])
  return Number.isSafeInteger(pid) ? { host: parts.slice(1, -2).join("."), pid } : undefined
}

/** The folders whose presence makes a directory a store. */
const storeFolders = ["artifacts", "checkpoints", "runs"] as const

const make = Effect.fnUntraced(function*(root: string, options: Options) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const lockOptions: Lock.Options = { ...Lock.defaults, ...options.lock }
  const dirs = {
    artifacts: path.join(root, "artifacts"),
    checkpoints: path.join(root, "checkpoints"),
    runs: path.join(root, "runs"),
    locks: path.join(root, "locks"),
    tmp: path.join(root, "tmp")
  }
  const artifactDir = (key: string) => path.join(dirs.artifacts, key)
  const checkpointDir = (key: string, step: number) => path.join(dirs.checkpoints, key, stepName(step))

  const io = <A>(operation: string, at: string, self: Effect.Effect<A, PlatformError.PlatformError>) =>
    StoreError.mapPlatform(operation, at)(self)
  const ensureDir = (dir: string) => io("create directory", dir, fs.makeDirectory(dir, { recursive: true }))
  const listDir = (dir: string) =>
    io(
      "list",
      dir,
      fs.readDirectory(dir).pipe(Effect.catchIf(StoreError.isNotFound, () => Effect.succeed([] as Array<string>)))
    ).pipe(Effect.map((names) => names.sort()))
  const syncPath = (at: string) =>
    io("fsync", at, Effect.scoped(Effect.flatMap(fs.open(at, { flag: "r" }), (f) => f.sync)))
  const writeDurable = (at: string, bytes: Uint8Array) =>
    io(
      "write",
      at,
      Effect.scoped(Effect.gen(function*() {
        const file = yield* fs.open(at, { flag: "w" })
        yield* file.writeAll(bytes)
        yield* file.sync
      }))
    )
  const hashFile = (at: string) =>
    io(
      "read",
      at,
      Effect.suspend(() => {
        const hash = createHash("sha256")
        let bytes = 0
        return fs.stream(at, { chunkSize: 1 << 22 }).pipe(
          Stream.runForEach((chunk) =>
            Effect.sync(() => {
              hash.update(chunk)
              bytes += chunk.byteLength
            })
          ),
          Effect.map(() => ({ bytes, sha256: hash.digest("hex") }))
        )
      })
    )

  const inspectDir = Effect.fn("ArtifactStore.inspectDir")(function*(dir: string, key: string, depth: Depth = { hash: true }) {
    const manifestPath = path.join(dir, Manifest.manifestName)
    const text = yield* io("read", manifestPath, fs.readFileString(manifestPath).pipe(Effect.map(Option.some), Effect.catchIf(StoreError.isNotFound, () => Effect.succeedNone)))
    if (Option.isNone(text)) {
      const dirExists = yield* io("stat", dir, fs.exists(dir))
      return dirExists
        ? { _tag: "Corrupt", reason: `${Manifest.manifestName} is missing` } as const
        : { _tag: "Missing" } as const
    }
    const decoded = Manifest.decode(text.value)
    if (decoded._tag === "Invalid") return { _tag: "Corrupt", reason: decoded.reason } as const
    const manifest = decoded.manifest
    if (manifest.key !== key) return { _tag: "Corrupt", reason: `manifest is for key ${manifest.key}` } as const
    for (const entry of manifest.files) {
      const at = path.join(dir, entry.name)
      const exists = yield* io("stat", at, fs.exists(at))
      if (!exists) return { _tag: "Corrupt", reason: `file ${entry.name} is missing` } as const
      const seen = depth.hash
        ? yield* hashFile(at)
        : { bytes: Number((yield* io("stat", at, fs.stat(at))).size), sha256: entry.sha256 }
      if (seen.bytes !== entry.bytes) {
        return { _tag: "Corrupt", reason: `file ${entry.name} has ${seen.bytes} bytes, the manifest says ${entry.bytes}` } as const
      }
      if (seen.sha256 !== entry.sha256) return { _tag: "Corrupt", reason: `file ${entry.name} has the wrong sha256` } as const
    }
    return { _tag: "Valid", manifest } as const
  })

  const inspect = (key: string, depth?: Depth) =>
    Effect.map(inspectDir(artifactDir(key), key, depth), (seen): Inspection =>
      seen._tag === "Valid" && seen.manifest.checkpoint !== undefined
        ? { _tag: "Corrupt", reason: `${Manifest.manifestName} is a checkpoint's, not an artifact's` }
        : seen)

  const readFile = Effect.fn("ArtifactStore.readFile")(function*(dir: string, manifest: Manifest.Manifest, name: string) {
    const entry = manifest.files.find((f) => f.name === name)
    if (entry === undefined) {
      return yield* new CorruptArtifact({
        key: manifest.key,
        path: path.join(dir, name),
        reason: `no file ${name}; it has ${manifest.files.map((f) => f.name).join(", ") || "no files"}`
      })
    }
    const at = path.join(dir, name)
    const bytes = yield* io("read", at, fs.readFile(at))
    if (bytes.byteLength !== entry.bytes || Manifest.sha256(bytes) !== entry.sha256) {
      return yield* new CorruptArtifact({ key: manifest.key, path: at, reason: "size or sha256 differs from the manifest" })
    }
    return bytes
  })

  /**
   * Entries of tmp/ whose writer is gone: a dead process of this host, or
   * another host's entry as old as a stale lock (that host cannot be asked).
   */
  const deadScratch = Effect.gen(function*() {
    const gone: Array<string> = []
    for (const name of yield* listDir(dirs.tmp)) {
      const at = path.join(dirs.tmp, name)
      const owner = scratchOwner(name)
      if (owner !== undefined && owner.host === os.hostname()) {
        if (!Lock.isAlive(owner.pid)) gone.push(at)
        continue
      }
      // Removed meanwhile by its writer: nothing to do.
      const info = yield* io("stat", at, fs.stat(at).pipe(Effect.map(Option.some), Effect.catchIf(StoreError.isNotFound, () => Effect.succeedNone)))
      const mtime = Option.flatMap(info, (i) => i.mtime)
      if (Option.isSome(mtime) && Date.now() - mtime.value.valueOf() > lockOptions.staleMillis) gone.push(at)
    }
    return gone
  })

  const notUsable = (operation: string, reason: string, transient = false) =>
    new StoreError.StoreError({ operation, path: root, reason, transient })
  const rootInfo = (operation: string) =>
    fs.stat(root).pipe(
      Effect.map(Option.some),
      Effect.catchIf(StoreError.isNotFound, () => Effect.succeedNone),
      StoreError.mapPlatform(operation, root)
    )

  const readable = Effect.gen(function*() {
    const operation = "read the store"
    const info = yield* rootInfo(operation)
    if (Option.isNone(info)) return yield* notUsable(operation, "no such directory")
    if (info.value.type !== "Directory") return yield* notUsable(operation, "it is not a directory")
    const names = yield* listDir(root)
    if (!storeFolders.some((f) => names.includes(f))) {
      return yield* notUsable(operation, `it holds none of ${storeFolders.map((f) => `${f}/`).join(", ")}, so it is not a store`)
    }
  })

  const checkWritable = Effect.gen(function*() {
    const operation = "write to the store"
    const info = yield* rootInfo(operation)
    if (Option.isSome(info) && info.value.type !== "Directory") return yield* notUsable(operation, "it is not a directory")
    const probe = path.join(dirs.tmp, scratchName("probe"))
    yield* fs.makeDirectory(dirs.tmp, { recursive: true }).pipe(
      Effect.andThen(fs.writeFile(probe, new Uint8Array(0))),
      Effect.andThen(fs.remove(probe)),
      Effect.mapError((e) => {
        const seen = StoreError.fromPlatform(operation, root)(e)
        return notUsable(operation, `it is not writable (${seen.reason})`, seen.transient)
      })
    )
    const gone = yield* deadScratch
    for (const at of gone) yield* io("remove", at, fs.remove(at, { recursive: true, force: true }))
    if (gone.length > 0) yield* Effect.logInfo(`removed ${gone.length} staging folders that killed processes left in ${dirs.tmp}`)
  })
  // Checked once per store value; a failure is checked again next time (it may have been transient).
  let writableSeen = false
  const writable = Effect.suspend(() => (writableSeen ? Effect.void : Effect.tap(checkWritable, () => Effect.sync(() => void (writableSeen = true)))))

  const lock = Effect.fn("ArtifactStore.lock")(function*(key: string) {
    yield* writable
    yield* ensureDir(dirs.locks)
    yield* ensureDir(dirs.tmp)
    yield* Lock.acquire(path.join(dirs.locks, `${key}.lock`), dirs.tmp, lockOptions).pipe(
      Effect.provideService(FileSystem.FileSystem, fs)
    )
  })

  const staging = Effect.gen(function*() {
    yield* writable
    yield* ensureDir(dirs.tmp)
    const dir = path.join(dirs.tmp, scratchName("stage"))
    yield* ensureDir(dir)
    // Removed on every exit; after a commit the directory has moved and this is a no-op.
    yield* Effect.addFinalizer(() => fs.remove(dir, { recursive: true, force: true }).pipe(Effect.ignore))
    const files: Array<Manifest.FileEntry> = []
    const checkName = Effect.fnUntraced(function*(name: string) {
      if (Option.isNone(decodeSafeName(name)) || name === Manifest.manifestName) {
        return yield* new StoreError.StoreError({
          operation: "write",
          path: path.join(dir, name),
          reason: `file name ${JSON.stringify(name)} is not allowed (letters, digits, . _ -, not ${Manifest.manifestName})`,
          transient: false
        })
      }
      if (files.some((f) => f.name === name)) {
        return yield* new StoreError.StoreError({ operation: "write", path: path.join(dir, name), reason: "written twice", transient: false })
      }
    })
    const write = Effect.fnUntraced(function*(name: string, bytes: Uint8Array, tensors?: Manifest.FileEntry["tensors"]) {
      yield* checkName(name)
      yield* writeDurable(path.join(dir, name), bytes)
      const entry: Manifest.FileEntry = tensors === undefined
        ? { name, bytes: bytes.byteLength, sha256: Manifest.sha256(bytes) }
        : { name, bytes: bytes.byteLength, sha256: Manifest.sha256(bytes), tensors }
      files.push(entry)
      return entry
    })
    return {
      dir,
      files: () => [...files],
      writeBytes: (name, bytes) => write(name, bytes),
      writeFile: <E, R>(name: string, produce: (at: string) => Effect.Effect<void, E, R>) =>
        Effect.gen(function*() {
          yield* checkName(name)
          const at = path.join(dir, name)
          yield* produce(at)
          yield* io("write", at, Effect.scoped(Effect.flatMap(fs.open(at, { flag: "r+" }), (file) => file.sync)))
          const entry: Manifest.FileEntry = { name, ...(yield* hashFile(at)) }
          files.push(entry)
          return entry
        }),
      writeJson: (name, value) => write(name, new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n")),
      writeTensors: (name, tensors, options = {}) => {
        const entries = tensorEntries(tensors)
        const bytes = Safetensors.encode(entries, options)
        const floatType = options.dtype ?? "F32"
        const info = Object.fromEntries(
          entries.map(([k, t]) => [k, { dtype: t.dtype === "int32" ? "I32" : floatType, shape: [...t.shape] }])
        )
        return write(name, bytes, info)
      }
    } satisfies Staging
  })

  const moveAside = (dir: string) =>
    Effect.gen(function*() {
      yield* ensureDir(dirs.tmp)
      const trash = path.join(dirs.tmp, scratchName("trash"))
      const moved = yield* io(
        "move aside",
        dir,
        fs.rename(dir, trash).pipe(Effect.as(true), Effect.catchIf(StoreError.isNotFound, () => Effect.succeed(false)))
      )
      return moved ? Option.some(trash) : Option.none<string>()
    })

  const remove = Effect.fn("ArtifactStore.remove")(function*(dir: string) {
    const trash = yield* moveAside(dir)
    if (Option.isSome(trash)) yield* io("remove", trash.value, fs.remove(trash.value, { recursive: true }))
  })

  const commit = Effect.fn("ArtifactStore.commit")(function*(
    stage: Staging,
    dir: string,
    fields: Omit<Manifest.Fields, "files">
  ) {
    const bug = (reason: string) => new StoreError.StoreError({ operation: "commit", path: dir, reason, transient: false })
    const encoded = yield* encodeFields({ ...fields, files: stage.files() }).pipe(Effect.mapError((e) => bug(Manifest.oneLine(e.message))))
    const text = JSON.stringify({ ...encoded, digest: Manifest.digestOf(encoded) }, null, 2) + "\n"
    // What readers will get back: a manifest that would not read back valid is never written.
    const readBack = Manifest.decode(text)
    if (readBack._tag === "Invalid") return yield* bug(readBack.reason)
    yield* writeDurable(path.join(stage.dir, Manifest.manifestName), new TextEncoder().encode(text))
    yield* syncPath(stage.dir)
    const parent = path.dirname(dir)
    yield* ensureDir(parent)
    const previous = yield* moveAside(dir)
    yield* io("rename", dir, fs.rename(stage.dir, dir))
    yield* syncPath(parent)
    if (Option.isSome(previous)) yield* io("remove", previous.value, fs.remove(previous.value, { recursive: true }))
    return readBack.manifest
  })

  const checkpoints = Effect.fn("ArtifactStore.checkpoints")(function*(key: string) {
    const base = path.join(dirs.checkpoints, key)
    const names = yield* listDir(base)
    return names
      .filter((n) => /^\d+$/.test(n))
      .map((n) => ({ step: Number(n), dir: path.join(base, n) }))
      .sort((a, b) => b.step - a.step)
  })

  const runs = Effect.gen(function*() {
    const names = yield* listDir(dirs.runs)
    return yield* Effect.forEach(names.filter((n) => n.endsWith(".json")), (name) => {
      const at = path.join(dirs.runs, name)
      return io("read", at, fs.readFileString(at)).pipe(
        Effect.flatMap((text) =>
          decodeRunJson(text).pipe(
            Effect.mapError((e) =>
              new StoreError.StoreError({ operation: "decode run record", path: at, reason: Manifest.oneLine(e.message), transient: false })
            )
          )
        )
      )
    })
  })

  const keep = Effect.fn("ArtifactStore.keep")(function*(run: string, keys: ReadonlyArray<string>) {
    const record: RunRecord = { name: run, keys: [...keys], createdAt: new Date().toISOString() }
    const at = path.join(dirs.runs, `${run}.json`)
    const encoded = yield* encodeRun(record).pipe(
      Effect.mapError((e) => new StoreError.StoreError({ operation: "encode run record", path: at, reason: Manifest.oneLine(e.message), transient: false }))
    )
    yield* writable
    yield* ensureDir(dirs.runs)
    yield* ensureDir(dirs.tmp)
    const draft = path.join(dirs.tmp, scratchName("run"))
    yield* writeDurable(draft, new TextEncoder().encode(JSON.stringify(encoded, null, 2) + "\n"))
    yield* io("rename", at, fs.rename(draft, at))
    yield* syncPath(dirs.runs)
    return record
  })

  const list = Effect.fn("ArtifactStore.list")(function*(depth: Depth) {
    const keys = yield* listDir(dirs.artifacts)
    const records = yield* runs
    return yield* Effect.forEach(keys, (key) =>
      Effect.map(inspect(key, depth), (inspection): Listing => ({
        key,
        inspection,
        bytes: inspection._tag === "Valid" ? inspection.manifest.files.reduce((n, f) => n + f.bytes, 0) : 0,
        runs: records.filter((r) => r.keys.includes(key)).map((r) => r.name)
      })))
  })

  const listCheckpoints = Effect.fn("ArtifactStore.listCheckpoints")(function*(depth: Depth) {
    const keys = yield* listDir(dirs.checkpoints)
    const all = yield* Effect.forEach(keys, (key) =>
      Effect.flatMap(checkpoints(key), (found) =>
        Effect.forEach(found, ({ dir, step }) =>
          Effect.map(inspectDir(dir, key, depth), (inspection): CheckpointListing => ({ key, step, dir, inspection })))))
    return all.flat()
  })

  const liveLocks = Effect.gen(function*() {
    const names = (yield* listDir(dirs.locks)).filter((n) => n.endsWith(".lock"))
    const live = new Set<string>()
    const stale: Array<string> = []
    for (const name of names) {
      const at = path.join(dirs.locks, name)
      const seen = yield* Lock.inspect(at, lockOptions).pipe(Effect.provideService(FileSystem.FileSystem, fs))
      if (seen === undefined) continue
      if (seen.stale) stale.push(at)
      else live.add(name.slice(0, -".lock".length))
    }
    return { live, stale }
  })

  const gc = Effect.fn("ArtifactStore.gc")(function*(options: { readonly dryRun: boolean }) {
    const records = yield* runs
    const locks = yield* liveLocks
    const keys = yield* listDir(dirs.artifacts)
    const inspections = new Map<string, Inspection>()
    // Only the manifests matter here (for their inputs): no hashing.
    for (const key of keys) inspections.set(key, yield* inspect(key, { hash: false }))
    const kept = new Set<string>()
    const visit = (key: string): void => {
      if (kept.has(key)) return
      kept.add(key)
      const seen = inspections.get(key)
      if (seen?._tag === "Valid") for (const input of Object.values(seen.manifest.inputs)) visit(input)
    }
    for (const record of records) for (const key of record.keys) visit(key)
    for (const key of locks.live) visit(key)
    // A kept artifact whose manifest is unreadable hides its inputs: removing
    // them could throw away expensive upstream work, so gc stops instead.
    for (const key of kept) {
      const seen = inspections.get(key)
      if (seen?._tag === "Corrupt") {
        return yield* new CorruptArtifact({
          key,
          path: artifactDir(key),
          reason: `${seen.reason}; gc cannot tell its inputs, rerun its stage first`
        })
      }
    }
    const removals: Array<Removal> = []
    for (const key of keys) if (!kept.has(key)) removals.push({ path: artifactDir(key), what: "artifact" })
    for (const key of yield* listDir(dirs.checkpoints)) {
      const finished = inspections.get(key)?._tag === "Valid"
      if (locks.live.has(key)) continue
      if (!kept.has(key) || finished) removals.push({ path: path.join(dirs.checkpoints, key), what: "checkpoints" })
    }
    for (const at of yield* deadScratch) removals.push({ path: at, what: "scratch" })
    for (const at of locks.stale) removals.push({ path: at, what: "stale lock" })
    if (!options.dryRun) {
      for (const r of removals) {
        if (r.what === "artifact" || r.what === "checkpoints") yield* remove(r.path)
        else yield* io("remove", r.path, fs.remove(r.path, { recursive: true, force: true }))
      }
    }
    return removals
  })

  return ArtifactStore.of({
    root,
    readable,
    writable,
    artifactDir,
    inspect,
    inspectDir,
    readFile,
    lock,
    staging,
    commit,
    checkpoints,
    checkpointDir,
    removeCheckpoints: (key) => remove(path.join(dirs.checkpoints, key)),
    remove,
    list,
    listCheckpoints,
    keep,
    runs,
    gc
  })
})

const tensorEntries = (tensors: Tensors): Array<readonly [string, HostTensor.HostTensor]> =>
  tensors instanceof Map ? [...tensors] : ParamTree.flatten(tensors as HostTensor.HostTree, HostTensor.isHostTensor)

