/**
 * `tinyfusion bench …` (also `pnpm bench …`): speed figures, printed, never
 * asserted. One file per benchmark under bench/.
 */
import { Command } from "effect/cli"
import { compute } from "./bench/compute.ts"
import { depth } from "./bench/depth.ts"
import { dit } from "./bench/dit.ts"
import { executors } from "./bench/executors.ts"
import { fid } from "./bench/fid.ts"
import { mar } from "./bench/mar.ts"
import { matmul } from "./bench/matmul.ts"
import { paper } from "./bench/paper.ts"
import { prune } from "./bench/prune.ts"
import { store } from "./bench/store.ts"
import { train } from "./bench/train.ts"

export const bench = Command.make("bench").pipe(
  Command.withDescription("Speed benchmarks (figures only; nothing is asserted)"),
  Command.withSubcommands([compute, depth, dit, executors, fid, mar, matmul, paper, prune, store, train])
)
