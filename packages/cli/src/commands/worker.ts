/**
 * `tinyfusion worker --queue postgres://…`: takes the suite's jobs from the
 * Postgres queue and runs them on the store (`--store`, a directory every
 * worker and the requester share) until stopped. Run one per core, on any
 * number of machines; `tinyfusion repro --queue` on the same URL and store
 * submits the jobs and writes the report.
 */
import { Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore } from "@tinyfusion/core"
import { Postgres } from "@tinyfusion/experiments"
import { Compute } from "@tinyfusion/tensor"
import * as GlobalFlags from "../GlobalFlags.ts"

export const worker = Command.make(
  "worker",
  {
    queue: Flag.String("queue").pipe(Flag.withDescription("The PostgreSQL queue: postgres://USER:PASSWORD@HOST:PORT/DATABASE (pg-boss's tables are created on first use)"))
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const store = yield* ArtifactStore
      // One clear error now rather than one per job.
      yield* store.writable
      const compute = yield* Compute
      const logFormat = yield* GlobalFlags.LogFormat
      return yield* Effect.scoped(Postgres.serve(o.queue, { store: store.root, backend: compute.backend, logFormat }))
    }))
).pipe(Command.withDescription("Run the suite's jobs from a PostgreSQL queue (tinyfusion repro --queue) on a shared store, one at a time, until stopped"))
