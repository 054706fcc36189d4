/**
 * Reading zip archives (PyTorch's checkpoint format, NumPy's .npz) with
 * yauzl: random access from the file descriptor, so an archive larger than
 * memory (a 2.7 GB DiT checkpoint, a 2 GB reference batch) is read entry by
 * entry, and a large entry chunk by chunk.
 */
import { Effect, Schema, type Scope } from "effect"
import type { Readable } from "node:stream"
import yauzl from "yauzl"

export class ZipError extends Schema.TaggedError<ZipError>()("ZipError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

/** Pulls exact byte counts from a stream (an entry's contents). */
export interface ByteReader {
  /** The next `n` bytes; fails if the entry ends first. */
  readonly read: (n: number) => Effect.Effect<Uint8Array, ZipError>
}

export interface Archive {
  readonly path: string
  /** Entry names in the archive's order. */
  readonly names: ReadonlyArray<string>
  /** Uncompressed size of an entry. */
  readonly size: (name: string) => number
  /** An entry's whole contents. */
  readonly read: (name: string) => Effect.Effect<Uint8Array, ZipError>
  /** An entry as a reader of exact byte counts (for entries too large to hold at once). */
  readonly reader: (name: string) => Effect.Effect<ByteReader, ZipError, Scope.Scope>
}

/** True when bytes start like a zip archive (a local file header). */
export const isZip = (head: Uint8Array): boolean => head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04

const byteReader = (stream: Readable, fail: (reason: string) => ZipError): ByteReader => {
  const chunks: Array<Uint8Array> = []
  let buffered = 0
  let ended = false
  let error: Error | undefined
  let wake: (() => void) | undefined
  stream.on("data", (chunk: Buffer) => {
    chunks.push(chunk)
    buffered += chunk.length
    // Hold at most a few chunks beyond what is asked for.
    if (buffered > 1 << 24) stream.pause()
    wake?.()
  })
  stream.on("end", () => {
    ended = true
    wake?.()
  })
  stream.on("error", (e) => {
    error = e
    wake?.()
  })
  const take = (n: number): Uint8Array => {
    const out = new Uint8Array(n)
    let at = 0
    while (at < n) {
      const head = chunks[0]!
      const used = Math.min(head.length, n - at)
      out.set(head.subarray(0, used), at)
      at += used
      if (used === head.length) chunks.shift()
      else chunks[0] = head.subarray(used)
    }
    buffered -= n
    return out
  }
  return {
    read: (n) =>
      Effect.tryPromise({
        try: async () => {
          while (buffered < n && !ended && error === undefined) {
            stream.resume()
            await new Promise<void>((resolve) => (wake = resolve))
            wake = undefined
          }
          if (error !== undefined) throw error
          if (buffered < n) throw new Error(`the entry ends ${n - buffered} bytes early`)
          return take(n)
        },
        catch: (e) => fail((e as Error).message)
      })
  }
}

/** Opens an archive; it is closed with the scope. */
export const open = Effect.fn("Zip.open")(function*(path: string): Effect.fn.Return<Archive, ZipError, Scope.Scope> {
  const fail = (reason: string) => new ZipError({ path, reason })
  const zip = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () => yauzl.openPromise(path, { lazyEntries: true, autoClose: false }),
      catch: (e) => fail((e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : `not a readable zip archive (${(e as Error).message})`)
    }),
    (z) => Effect.sync(() => z.close())
  )
  const entries = yield* Effect.tryPromise({
    try: async () => {
      const out = new Map<string, yauzl.Entry>()
      for await (const entry of zip.eachEntry()) out.set(entry.fileName, entry)
      return out
    },
    catch: (e) => fail(`unreadable central directory (${(e as Error).message})`)
  })
  const entry = (name: string) =>
    Effect.suspend(() => {
      const e = entries.get(name)
      return e === undefined ? Effect.fail(fail(`no entry ${name}`)) : Effect.succeed(e)
    })
  const stream = (e: yauzl.Entry) =>
    Effect.tryPromise({ try: () => zip.openReadStreamPromise(e), catch: (err) => fail(`cannot read ${e.fileName} (${(err as Error).message})`) })
  const reader = (name: string) =>
    Effect.acquireRelease(
      Effect.flatMap(entry(name), stream),
      (s) => Effect.sync(() => s.destroy())
    ).pipe(Effect.map((s) => byteReader(s, (reason) => fail(`${name}: ${reason}`))))
  return {
    path,
    names: [...entries.keys()],
    size: (name) => entries.get(name)?.uncompressedSize ?? 0,
    read: (name) =>
      Effect.scoped(Effect.gen(function*() {
        const e = yield* entry(name)
        return yield* (yield* reader(name)).read(e.uncompressedSize)
      })),
    reader
  } satisfies Archive
})
