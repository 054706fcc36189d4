import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FileSystem, Schedule } from "effect"
import { spawnSync } from "node:child_process"
import * as os from "node:os"
import * as Lock from "./Lock.ts"

const fast: Lock.Options = { pollMillis: 10, heartbeatMillis: 50, staleMillis: 1_000 }

const inTemp = <A, E>(f: (dir: string) => Effect.Effect<A, E, FileSystem.FileSystem>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped({ prefix: "lock-test-" }))
  })).pipe(Effect.provide(NodeServices.layer))

const holderText = (holder: Partial<Lock.Holder>) =>
  JSON.stringify({ pid: process.pid, host: os.hostname(), token: "t", since: "then", ...holder })

// Tests that wait on real time (polls, heartbeats) run live, not on the TestClock.
describe("Lock", () => {
  it.effect("the file names its holder while held and is gone after", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const holder = yield* Effect.scoped(Effect.gen(function*() {
          const h = yield* Lock.acquire(`${dir}/k.lock`, dir, fast)
          const seen = yield* Lock.inspect(`${dir}/k.lock`, fast)
          assert.deepStrictEqual(seen?.holder, h)
          assert.isFalse(seen?.stale)
          return h
        }))
        assert.strictEqual(holder.pid, process.pid)
        assert.strictEqual(holder.host, os.hostname())
        assert.deepStrictEqual(yield* fs.readDirectory(dir), [])
      })))

  it.live("a second taker waits until the first releases", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const order: Array<string> = []
        const release = yield* Deferred.make<void>()
        const first = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
          yield* Lock.acquire(`${dir}/k.lock`, dir, fast)
          order.push("first has it")
          yield* Deferred.await(release)
          order.push("first releases")
        })))
        yield* Effect.sleep("50 millis")
        const second = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
          yield* Lock.acquire(`${dir}/k.lock`, dir, fast)
          order.push("second has it")
        })))
        yield* Effect.sleep("100 millis")
        order.push("still waiting")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(first)
        yield* Fiber.join(second)
        assert.deepStrictEqual(order, ["first has it", "still waiting", "first releases", "second has it"])
      })), 10_000)

  it.effect("a lock of a dead process on this host is stale and taken over", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const dead = spawnSync(process.execPath, ["-e", ""]).pid!
        assert.isFalse(Lock.isAlive(dead))
        assert.isTrue(Lock.isAlive(process.pid))
        yield* fs.writeFileString(`${dir}/k.lock`, holderText({ pid: dead }))
        assert.isTrue((yield* Lock.inspect(`${dir}/k.lock`, fast))?.stale)
        const taken = yield* Effect.scoped(Lock.acquire(`${dir}/k.lock`, dir, fast))
        assert.strictEqual(taken.pid, process.pid)
      })))

  it.live("another host's lock is stale only once its heartbeat is older than staleMillis", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = `${dir}/k.lock`
        yield* fs.writeFileString(path, holderText({ host: "elsewhere", pid: 1 }))
        assert.isFalse((yield* Lock.inspect(path, fast))?.stale)
        const waiting = yield* Effect.forkChild(Effect.scoped(Lock.acquire(path, dir, fast)))
        yield* Effect.sleep("200 millis")
        assert.isUndefined(waiting.pollUnsafe())
        const old = new Date(Date.now() - 5_000)
        // The same holder with an old heartbeat, inspected where no waiter can take it over first.
        yield* fs.writeFileString(`${dir}/other.lock`, holderText({ host: "elsewhere", pid: 1 }))
        yield* fs.utimes(`${dir}/other.lock`, old, old)
        assert.isTrue((yield* Lock.inspect(`${dir}/other.lock`, fast))?.stale)
        yield* fs.utimes(path, old, old)
        const taken = yield* Fiber.join(waiting)
        assert.strictEqual(taken.host, os.hostname())
      })), 10_000)

  it.live("a live lock of a host whose clock is behind is never taken; once its heartbeat stops, it is after staleMillis", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = `${dir}/k.lock`
        yield* fs.writeFileString(path, holderText({ host: "elsewhere", pid: 1 }))
        // The other host touches its lock every 50 ms with a clock an hour behind ours.
        const behind = () => new Date(Date.now() - 3_600_000)
        const heartbeat = yield* Effect.forkChild(
          Effect.suspend(() => fs.utimes(path, behind(), behind())).pipe(Effect.repeat(Schedule.spaced("50 millis")))
        )
        assert.isTrue((yield* Lock.inspect(path, fast))?.stale, "judged by its mtime alone it looks stale")
        const waiting = yield* Effect.forkChild(Effect.scoped(Lock.acquire(path, dir, fast)))
        yield* Effect.sleep("2500 millis")
        assert.isUndefined(waiting.pollUnsafe(), "the waiter took a live lock")
        yield* Fiber.interrupt(heartbeat)
        const stopped = Date.now()
        const taken = yield* Fiber.join(waiting)
        assert.strictEqual(taken.host, os.hostname())
        assert.isAtLeast(Date.now() - stopped, fast.staleMillis - 100)
      })), 15_000)

  it.effect("an unreadable lock (no holder) counts as another host's", () =>
    inTemp((dir) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        yield* fs.writeFileString(`${dir}/k.lock`, "{not json")
        const fresh = yield* Lock.inspect(`${dir}/k.lock`, fast)
        assert.isUndefined(fresh?.holder)
        assert.isFalse(fresh?.stale)
        const old = new Date(Date.now() - 5_000)
        yield* fs.utimes(`${dir}/k.lock`, old, old)
        assert.isTrue((yield* Lock.inspect(`${dir}/k.lock`, fast))?.stale)
      })))

  it.live("the holder's heartbeat keeps its lock fresh", () =>
    inTemp((dir) =>
      Effect.scoped(Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        yield* Lock.acquire(`${dir}/k.lock`, dir, fast)
        const old = new Date(Date.now() - 60_000)
        yield* fs.utimes(`${dir}/k.lock`, old, old)
        yield* Effect.sleep("200 millis")
        const mtime = (yield* fs.stat(`${dir}/k.lock`)).mtime
        assert.isTrue(mtime._tag === "Some" && Date.now() - mtime.value.valueOf() < 1_000)
      }))), 10_000)
})
