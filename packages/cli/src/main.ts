/** The `tinyfusion` command tree. */
import { Command } from "effect/cli"
import { bench } from "./commands/bench.ts"
import { checkpoint } from "./commands/checkpoint.ts"
import { doctor } from "./commands/doctor.ts"
import * as GlobalFlags from "./GlobalFlags.ts"

export const tinyfusion = Command.make("tinyfusion").pipe(
  Command.withDescription("TinyFusion: learnable depth pruning of diffusion transformers, reproduced"),
  Command.withGlobalFlags(GlobalFlags.all),
  Command.withSubcommands([doctor, bench, checkpoint])
)

export const run = Command.run(tinyfusion, { version: "0.1.0" })
