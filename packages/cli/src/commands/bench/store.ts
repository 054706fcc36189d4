/** `bench store`: committing, verifying and reading back a tensor artifact. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import { StoreBenchmark } from "@tinyfusion/core"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"

export const store = Command.make(
  "store",
  {
    mib: CheckedFlags.count("mib").pipe(Flag.withDefault(256), Flag.withDescription("Artifact size in MiB (float32 tensors)")),
    dir: Flag.String("dir").pipe(Flag.withDefault(os.tmpdir()), Flag.withDescription("Directory for the temporary store (its disk is measured)"))
  },
  (o) =>
    Effect.gen(function*() {
      const figures = yield* Effect.scoped(StoreBenchmark.measure(o.mib, o.dir))
      yield* Console.log(`one ${o.mib} MiB tensor artifact in a store under ${o.dir}`)
      yield* Console.log(Table.render(
        ["operation", "ms", "MiB/s"],
        figures.map((f) => [f.operation, Table.fixed(f.ms, 0), Table.fixed(f.mibPerSecond, 0)])
      ))
    })
).pipe(Command.withDescription("Time committing, verifying and reading back a tensor artifact"))

