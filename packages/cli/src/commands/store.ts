/**
 * `tinyfusion store …`: look after the artifact store (`--store`).
 *   ls      every artifact (stage, status, size, runs keeping it), unfinished
 *           stages' checkpoints and the kept runs; checks manifests and sizes
 *           only, so it stays fast on large stores
 *   verify  checks every manifest (Schema, digest, the key its fields give),
 *           file size and sha256; exits non-zero when anything is corrupt
 *   gc      removes what no kept run references (`--dry-run` only lists it)
 * A run keeps artifacts through a run record (runs/<name>.json, written by
 * `ArtifactStore.keep`): its keys and, transitively, their inputs survive gc.
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore, type Inspection } from "@tinyfusion/core"
import * as Table from "../Table.ts"

export class StoreCorrupt extends Schema.TaggedError<StoreCorrupt>()("StoreCorrupt", {
  bad: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `${this.bad.length} corrupt in the store: ${this.bad.join(", ")}`
  }
}

const status = (i: Inspection): string =>
  i._tag === "Valid" ? "ok" : i._tag === "Missing" ? "missing" : `CORRUPT: ${i.reason}`

const size = (bytes: number): string =>
  bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(2)} GiB`
    : bytes >= 2 ** 20
    ? `${(bytes / 2 ** 20).toFixed(1)} MiB`
    : bytes >= 2 ** 10
    ? `${(bytes / 2 ** 10).toFixed(1)} KiB`
    : `${bytes} B`

const ls = Command.make("ls", {}, () =>
  Effect.gen(function*() {
    const store = yield* ArtifactStore
    yield* store.readable
    const artifacts = yield* store.list({ hash: false })
    const checkpoints = yield* store.listCheckpoints({ hash: false })
    const runs = yield* store.runs
    yield* Console.log(`store ${store.root}: ${artifacts.length} artifacts, ${checkpoints.length} checkpoints, ${runs.length} runs\n`)
    yield* Console.log(Table.render(
      ["key", "stage", "created", "size", "kept by", "status"],
      artifacts.map((a) => [
        a.key,
        a.inspection._tag === "Valid" ? a.inspection.manifest.stage : "?",
        a.inspection._tag === "Valid" ? a.inspection.manifest.createdAt : "?",
        size(a.bytes),
        a.runs.join(",") || "-",
        status(a.inspection)
      ])
    ))
    if (checkpoints.length > 0) {
      yield* Console.log("\ncheckpoints of unfinished stages")
      yield* Console.log(Table.render(["key", "step", "status"], checkpoints.map((c) => [c.key, String(c.step), status(c.inspection)])))
    }
    if (runs.length > 0) {
      yield* Console.log("\nkept runs")
      yield* Console.log(Table.render(["run", "created", "keys"], runs.map((r) => [r.name, r.createdAt, r.keys.join(" ")])))
    }
  })
).pipe(Command.withDescription("List artifacts, checkpoints and kept runs"))

const verify = Command.make("verify", {}, () =>
  Effect.gen(function*() {
    const store = yield* ArtifactStore
    yield* store.readable
    const artifacts = yield* store.list({ hash: true })
    const checkpoints = yield* store.listCheckpoints({ hash: true })
    const bad: Array<string> = []
    for (const a of artifacts) {
      yield* Console.log(`${a.inspection._tag === "Valid" ? "ok " : "BAD"} ${a.key}${a.inspection._tag === "Corrupt" ? `: ${a.inspection.reason}` : ""}`)
      if (a.inspection._tag !== "Valid") bad.push(a.key)
    }
    for (const c of checkpoints) {
      const name = `${c.key} checkpoint ${c.step}`
      yield* Console.log(`${c.inspection._tag === "Valid" ? "ok " : "BAD"} ${name}${c.inspection._tag === "Corrupt" ? `: ${c.inspection.reason}` : ""}`)
      if (c.inspection._tag !== "Valid") bad.push(name)
    }
    yield* Console.log(`\n${artifacts.length} artifacts and ${checkpoints.length} checkpoints checked, ${bad.length} corrupt`)
    if (bad.length > 0) return yield* new StoreCorrupt({ bad })
  })
).pipe(Command.withDescription("Check every manifest (its Schema, digest and key), file size and sha256; exit non-zero if anything is corrupt"))

const gc = Command.make(
  "gc",
  { dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("Only list what would be removed"), Flag.withDefault(false)) },
  ({ dryRun }) =>
    Effect.gen(function*() {
      const store = yield* ArtifactStore
      yield* store.readable
      const removed = yield* store.gc({ dryRun })
      for (const r of removed) yield* Console.log(`${dryRun ? "would remove" : "removed"} ${r.what} ${r.path}`)
      yield* Console.log(`${removed.length} ${dryRun ? "to remove (dry run: nothing removed)" : "removed"}`)
    })
).pipe(Command.withDescription("Remove artifacts and checkpoints no kept run references"))

export const store = Command.make("store").pipe(
  Command.withDescription("Inspect, verify and clean the artifact store (--store)"),
  Command.withSubcommands([ls, verify, gc])
)
