/**
 * Per-key lock files, so that processes sharing a store wait for each other
 * instead of computing the same artifact twice.
 *
 * A lock is a file holding its holder (pid, host, a random token). It is
 * created complete and atomically: written to a temporary file, then hard
 * linked to its name, which fails when the name exists. The holder touches
 * it periodically (a heartbeat) and removes it when its scope closes.
 *
 * A lock is stale when its holder is gone: on this host, when no process has
 * its pid; from another host (a shared network store), when its heartbeat is
 * older than `staleMillis`. A waiter judges another host's heartbeat by what
 * it sees itself: the lock unchanged (same holder, same mtime) for
 * `staleMillis` of the waiter's own clock. The mtime is written with the
 * holder's clock, so comparing it with the waiter's would take a live lock
 * of a host whose clock is behind for a stale one. A stale lock is moved
 * aside (rename is atomic, so two waiters cannot both take it) and the moved
 * file checked to still be the one judged stale; a fresh lock taken by
 * mistake is linked back.
 */
import { Duration, Effect, FileSystem, Option, Schedule, Schema, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as os from "node:os"
import * as StoreError from "./StoreError.ts"

export const Holder = Schema.Struct({
  pid: Schema.Int,
  host: Schema.String,
  token: Schema.String,
  since: Schema.String
})
export type Holder = typeof Holder.Type

export interface Options {
  /** How often a waiter looks at the lock again. */
  readonly pollMillis: number
  /** How often the holder touches its lock file. */
  readonly heartbeatMillis: number
  /** A lock from another host whose heartbeat is older than this is stale. */
  readonly staleMillis: number
}

export const defaults: Options = { pollMillis: 200, heartbeatMillis: 30_000, staleMillis: 600_000 }

const decodeHolder = Schema.decodeUnknownOption(Schema.fromJsonString(Holder))

/** True while a process with this pid exists on this host. */
export const isAlive = (pid: number): boolean => {
  // kill(0 or negative) signals process groups: never a lock holder.
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    // EPERM: it exists but belongs to another user.
    return (e as { code?: string }).code === "EPERM"
  }
}

/** Who holds the lock at `path`, if anyone, and whether that holder is gone. */
export const inspect = Effect.fn("Lock.inspect")(function*(path: string, options: Options = defaults) {
  const fs = yield* FileSystem.FileSystem
  const read = yield* fs.readFileString(path).pipe(
    Effect.map((text) => ({ text })),
    Effect.catchIf(StoreError.isNotFound, () => Effect.succeed(undefined)),
    StoreError.mapPlatform("read lock", path)
  )
  if (read === undefined) return undefined
  const info = yield* fs.stat(path).pipe(
    Effect.map((s) => s.mtime),
    Effect.catchIf(StoreError.isNotFound, () => Effect.succeed(undefined)),
    StoreError.mapPlatform("stat lock", path)
  )
  const holder = Option.getOrUndefined(decodeHolder(read.text))
  const mtime = Option.getOrUndefined(info ?? Option.none())?.valueOf()
  const local = holder !== undefined && holder.host === os.hostname()
  const stale = local ? !isAlive(holder.pid) : Date.now() - (mtime ?? Date.now()) > options.staleMillis
  return { text: read.text, holder, stale, local, mtime }
})

/**
 * Takes the lock at `path` for the rest of the scope, waiting while a live
 * holder has it. `scratch` is a directory on the same file system for the
 * temporary files.
 */
export const acquire = Effect.fn("Lock.acquire")(function*(
  path: string,
  scratch: string,
  options: Options = defaults
): Effect.fn.Return<Holder, StoreError.StoreError, FileSystem.FileSystem | Scope.Scope> {
  const fs = yield* FileSystem.FileSystem
  const holder: Holder = { pid: process.pid, host: os.hostname(), token: randomUUID(), since: new Date().toISOString() }
  const draft = `${scratch}/lock-${holder.token}`
  yield* fs.writeFileString(draft, JSON.stringify(holder)).pipe(StoreError.mapPlatform("write lock", draft))
  let waitingFor: string | undefined
  // Another host's lock as this waiter last saw it changed (text and mtime), by this waiter's clock.
  let watched: { readonly text: string; readonly mtime: number | undefined; readonly since: number } | undefined
  while (true) {
    const taken = yield* fs.link(draft, path).pipe(
      Effect.as(true),
      Effect.catchIf(StoreError.isAlreadyExists, () => Effect.succeed(false)),
      StoreError.mapPlatform("create lock", path)
    )
    if (taken) break
    const current = yield* inspect(path, options)
    if (current === undefined) continue
    if (!current.local && (watched === undefined || watched.text !== current.text || watched.mtime !== current.mtime)) {
      watched = { text: current.text, mtime: current.mtime, since: Date.now() }
    }
    const stale = current.local ? current.stale : Date.now() - watched!.since > options.staleMillis
    if (stale) {
      yield* Effect.logWarning(`removing stale lock ${path}`).pipe(
        Effect.annotateLogs({ holder: current.holder === undefined ? "unreadable" : `${current.holder.pid}@${current.holder.host}` })
      )
      yield* steal(path, scratch, current.text)
      watched = undefined
      continue
    }
    const who = current.holder === undefined ? "a process" : `pid ${current.holder.pid} on ${current.holder.host}`
    if (waitingFor !== who) {
      waitingFor = who
      yield* Effect.logInfo(`waiting for ${who}, which holds ${path}`)
    }
    yield* Effect.sleep(Duration.millis(options.pollMillis))
  }
  yield* fs.remove(draft).pipe(StoreError.mapPlatform("remove", draft))
  yield* Effect.addFinalizer(() => release(path, holder.token).pipe(Effect.ignore))
  yield* fs.utimes(path, new Date(), new Date()).pipe(
    Effect.catch((e) => Effect.logWarning(`lock heartbeat on ${path} failed: ${e.message}`)),
    Effect.repeat(Schedule.spaced(Duration.millis(options.heartbeatMillis))),
    Effect.delay(Duration.millis(options.heartbeatMillis)),
    Effect.forkScoped
  )
  return holder
})

/** Moves a stale lock aside; puts it back when it turns out to be fresh. */
const steal = Effect.fn("Lock.steal")(function*(path: string, scratch: string, staleText: string) {
  const fs = yield* FileSystem.FileSystem
  const moved = `${scratch}/stale-${randomUUID()}`
  const gone = yield* fs.rename(path, moved).pipe(
    Effect.as(false),
    Effect.catchIf(StoreError.isNotFound, () => Effect.succeed(true)),
    StoreError.mapPlatform("move stale lock", path)
  )
  if (gone) return
  const text = yield* fs.readFileString(moved).pipe(StoreError.mapPlatform("read lock", moved))
  if (text !== staleText) {
    yield* fs.link(moved, path).pipe(
      Effect.catchIf(StoreError.isAlreadyExists, () => Effect.void),
      StoreError.mapPlatform("restore lock", path)
    )
  }
  yield* fs.remove(moved).pipe(StoreError.mapPlatform("remove", moved))
})

/** Removes the lock if it is still ours. */
const release = Effect.fn("Lock.release")(function*(path: string, token: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(path)
  if (Option.exists(decodeHolder(text), (h) => h.token === token)) yield* fs.remove(path)
})
