/**
 * The registry of recovery strategies by name (core Method): the built-in
 * four by default; `Strategies.layer([...])` adds strategies to whatever
 * registry is current. Adding a strategy is one file: a `Recovery.make`
 * value (options, evidence, task, report) and this layer.
 */
import { Method } from "@tinyfusion/core"
import * as Recovery from "./Recovery.ts"

/** Fine-tuning and the distillation strategies of Table 5. */
export const registry = Method.registry<Recovery.Strategy>("@tinyfusion/recovery/Strategies", Recovery.kind, [
  Recovery.finetune,
  Recovery.logitsKd,
  Recovery.repKd,
  Recovery.maskedKd
])

export const { builtin, current, layer, get } = registry
