/**
 * NumPy's .npz archives: a zip of <name>.npy entries, stored (np.savez, ADM's
 * batches) or deflated (np.savez_compressed). Arrays are read whole or, for
 * an image batch larger than memory (ADM's 10,000 × 256 × 256 × 3 reference
 * images), a number of rows at a time; archives are written entry by entry
 * from chunks, with ZIP64 where sizes need it (a 50,000-image sample batch
 * is 9.8 GB), through a temporary file renamed into place.
 */
import { Effect, type Scope } from "effect"
import { Zip } from "@tinyfusion/tensor"
import * as fs from "node:fs"
import { once } from "node:events"
import { PassThrough } from "node:stream"
import yazl from "yazl"
import * as Npy from "./Npy.ts"

export { NpyError } from "./Npy.ts"

/** Reads rows of an array in order. */
export interface RowReader {
  readonly header: Npy.Header
  /** Values per row (the product of the shape after the first axis). */
  readonly rowLength: number
  /** The next `rows` rows as raw little-endian element bytes. */
  readonly next: (rows: number) => Effect.Effect<Uint8Array, Npy.NpyError>
}

export interface Archive {
  readonly path: string
  /** Array names (entries without the .npy suffix). */
  readonly names: ReadonlyArray<string>
  readonly header: (name: string) => Effect.Effect<Npy.Header, Npy.NpyError>
  readonly read: (name: string) => Effect.Effect<Npy.NdArray, Npy.NpyError>
  readonly rows: (name: string) => Effect.Effect<RowReader, Npy.NpyError, Scope.Scope>
}

const npyError = (file: string) => (e: unknown) =>
  e instanceof Npy.NpyError ? e : new Npy.NpyError({ file, reason: e instanceof Zip.ZipError ? e.reason : String(e) })

/** Reads a header from the front of an entry. */
const readHeader = (reader: Zip.ByteReader, file: string) =>
  Effect.gen(function*() {
    let bytes = yield* reader.read(Npy.prefixLength)
    for (;;) {
      const parsed = yield* Effect.try({ try: () => Npy.parseHeader(bytes, file), catch: npyError(file) })
      if (!("needed" in parsed)) return parsed
      const more = yield* reader.read(parsed.needed - bytes.length)
      const joined = new Uint8Array(bytes.length + more.length)
      joined.set(bytes)
      joined.set(more, bytes.length)
      bytes = joined
    }
  }).pipe(Effect.mapError(npyError(file)))

/** Opens an archive; it is closed with the scope. */
export const open = Effect.fn("Npz.open")(function*(path: string): Effect.fn.Return<Archive, Npy.NpyError, Scope.Scope> {
  const zip = yield* Zip.open(path).pipe(Effect.mapError(npyError(path)))
  const names = zip.names.filter((n) => n.endsWith(".npy")).map((n) => n.slice(0, -4))
  const entry = (name: string) =>
    names.includes(name)
      ? Effect.succeed(`${name}.npy`)
      : Effect.fail(new Npy.NpyError({ file: path, reason: `no array ${name} (it holds ${names.join(", ") || "none"})` }))
  const rows = (name: string) =>
    Effect.gen(function*() {
      const file = `${path}:${name}`
      const reader = yield* zip.reader(yield* entry(name)).pipe(Effect.mapError(npyError(file)))
      const header = yield* readHeader(reader, file)
      const rowLength = Npy.count(header.shape.slice(1))
      const rowBytes = rowLength * Npy.bytesPer[header.dtype]
      let left = header.shape.length === 0 ? 1 : header.shape[0]!
      return {
        header,
        rowLength,
        next: (n: number) =>
          n > left
            ? Effect.fail(new Npy.NpyError({ file, reason: `asked for ${n} rows, ${left} are left` }))
            : Effect.suspend(() => {
              left -= n
              return reader.read(n * rowBytes).pipe(Effect.mapError(npyError(file)))
            })
      } satisfies RowReader
    })
  return {
    path,
    names,
    header: (name) => Effect.scoped(Effect.map(rows(name), (r) => r.header)),
    read: (name) =>
      Effect.scoped(Effect.gen(function*() {
        const r = yield* rows(name)
        const n = r.header.shape.length === 0 ? 1 : r.header.shape[0]!
        return { dtype: r.header.dtype, shape: r.header.shape, data: Npy.typed(r.header.dtype, yield* r.next(n)) } satisfies Npy.NdArray
      })),
    rows
  } satisfies Archive
})

/** One array to write: its chunks (raw little-endian element bytes, in order) come from `fill`. */
export interface Entry<E, R> {
  readonly name: string
  readonly dtype: Npy.Dtype
  readonly shape: ReadonlyArray<number>
  readonly fill: (push: (chunk: Uint8Array) => Effect.Effect<void>) => Effect.Effect<void, E, R>
}

/**
 * Writes an uncompressed archive (as np.savez), streaming each entry's
 * chunks; the file appears at `path` only when complete.
 */
export const write = <E, R>(path: string, entries: ReadonlyArray<Entry<E, R>>): Effect.Effect<void, E | Npy.NpyError, R> =>
  Effect.gen(function*() {
    const temp = `${path}.partial-${process.pid}`
    const fail = (reason: string) => new Npy.NpyError({ file: path, reason })
    const zip = new yazl.ZipFile()
    const out = fs.createWriteStream(temp)
    const done = new Promise<void>((resolve, reject) => {
      out.on("close", resolve)
      out.on("error", reject)
      zip.outputStream.on("error", reject)
    })
    zip.outputStream.pipe(out)
    for (const entry of entries) {
      const size = Npy.count(entry.shape) * Npy.bytesPer[entry.dtype]
      const head = Npy.header(entry.dtype, entry.shape)
      const stream = new PassThrough()
      zip.addReadStream(stream, `${entry.name}.npy`, { compress: false, size: head.length + size, mtime: new Date(0) })
      let written = 0
      const push = (chunk: Uint8Array) =>
        Effect.promise(async () => {
          written += chunk.length
          if (!stream.write(chunk)) await once(stream, "drain")
        })
      yield* push(head)
      written = 0
      yield* entry.fill(push)
      if (written !== size) return yield* fail(`${entry.name}: ${written} bytes written for ${entry.dtype}[${entry.shape.join(", ")}], which needs ${size}`)
      stream.end()
    }
    zip.end()
    yield* Effect.tryPromise({ try: () => done, catch: (e) => fail((e as Error).message) })
    yield* Effect.tryPromise({ try: () => fs.promises.rename(temp, path), catch: (e) => fail((e as Error).message) })
  }).pipe(Effect.onError(() => Effect.promise(() => fs.promises.rm(`${path}.partial-${process.pid}`, { force: true }))))
