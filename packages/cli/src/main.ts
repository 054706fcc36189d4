/** The `tinyfusion` command tree. */
import { Layer } from "effect"
import { Command } from "effect/cli"
import { Methods } from "@tinyfusion/experiments"
import { bench } from "./commands/bench.ts"
import { checkpoint } from "./commands/checkpoint.ts"
import { data } from "./commands/data.ts"
import { doctor } from "./commands/doctor.ts"
import { evaluate } from "./commands/eval.ts"
import { finetune } from "./commands/finetune.ts"
import { pretrain } from "./commands/pretrain.ts"
import { prune } from "./commands/prune.ts"
import { repro } from "./commands/repro.ts"
import { sample } from "./commands/sample.ts"
import { store } from "./commands/store.ts"
import { throughput } from "./commands/throughput.ts"
import * as GlobalFlags from "./GlobalFlags.ts"

export const tinyfusion = Command.make("tinyfusion").pipe(
  Command.withDescription("TinyFusion: learnable depth pruning of diffusion transformers, reproduced"),
  Command.withSubcommands([repro, doctor, bench, store, checkpoint, data, pretrain, prune, finetune, sample, evaluate, throughput]),
  // Every command logs as --log-format says, may use the --store store, and knows the methods added in experiments/.
  Command.provide(Layer.mergeAll(GlobalFlags.logging, GlobalFlags.store, Methods.layer)),
  Command.withGlobalFlags(GlobalFlags.all)
)

export const run = Command.run(tinyfusion, { version: "0.1.0" })
