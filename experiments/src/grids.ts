/**
 * The paper's tables as grids: data listing each cell's pruning, recovery and
 * evaluation choices. Step counts are named by the paper's budgets ("100K",
 * "500K", "10K") and resolved to numbers by the preset, so one grid serves
 * the quick, mini and paper scales. A grid declares how many recovery seeds
 * its cells run with (the key claims' Tables 3, 4 and 5: three); a preset may
 * run fewer (`Preset.maxSeeds`), and the statistics combine the seeds
 * (estimates.ts).
 */
import { Schema } from "effect"

/** The paper's budgets: DiT's steps, and MAR's 40 epochs (10% of its 400 of pre-training). */
export const Budget = Schema.Literals(["100K", "500K", "10K", "40ep"])
export type Budget = typeof Budget.Type

/** Which model a cell starts from: the teacher, or another cell's recovered model. */
export const Source = Schema.Union([Schema.Literal("teacher"), Schema.Struct({ cell: Schema.String })])
export type Source = typeof Source.Type

/** A method's options as a config holds them (its Schema decodes them, with defaults for the rest). */
const Options = Schema.Record(Schema.String, Schema.Json)

export const Prune = Schema.Struct({
  /** A pruner's name: learnable, shortgpt, flux-lite, sensitivity, oracle, random, or an added one (experiments/src/pruners). */
  method: Schema.String,
  /** Blocks kept. */
  keep: Schema.Int,
  /** N:M local blocks for the learnable method, e.g. "1:2". */
  scheme: Schema.optional(Schema.String),
  /** The method's own options (the learnable method's recoverability estimate `update`, Diff-Pruning's `ratio`); the preset adds its scale. */
  options: Schema.optional(Options),
  from: Source
})
export type Prune = typeof Prune.Type

export const Recovery = Schema.Struct({
  /** A recovery strategy's name: finetune, logits-kd, repkd, masked-kd, or an added one (experiments/src/strategies). */
  strategy: Schema.String,
  /** The strategy's options, e.g. masked KD's threshold k or the alignment. */
  options: Schema.optional(Options),
  budget: Budget,
  lr: Schema.optional(Schema.Number),
  teacher: Schema.optional(Source),
  /** Sample with the EMA weights (default) or the raw weights (Table 7). */
  ema: Schema.optional(Schema.Boolean)
})
export type Recovery = typeof Recovery.Type

/** "full": the paper's 50K-sample, 250-step protocol; "short": Table 4's 10K samples, 64 steps. Scaled by the preset. */
export const Protocol = Schema.Literals(["full", "short"])

export const Cell = Schema.Struct({
  id: Schema.String,
  family: Schema.Literals(["dit", "sit", "mar"]),
  /** Undefined for a teacher cell (evaluated as trained). */
  prune: Schema.optional(Prune),
  /** A model trained from scratch at the teacher's budget instead of the teacher (Table 2's MAR-Base). */
  scratch: Schema.optional(Schema.Literal("mar-base")),
  recovery: Schema.optional(Recovery),
  protocol: Protocol,
  /** Only timed (Figure 4): the teacher's shape at this depth, sampling speed only. */
  speedDepth: Schema.optional(Schema.Int),
  /** Only timed (Figure 4): the teacher's shape width-pruned to remove this share of parameters (Diff-Pruning's widths). */
  speedWidth: Schema.optional(Schema.Finite),
  /** The teacher's network at its initialisation, evaluated untrained (the instrument check's bad model). */
  untrained: Schema.optional(Schema.Boolean)
})
export type Cell = typeof Cell.Type

export interface Grid {
  readonly table: string
  readonly title: string
  readonly cells: ReadonlyArray<Cell>
  /** Recovery seeds each cell runs with (default 1): its evaluations are combined over them. */
  readonly seeds?: number
}

const teacher = "teacher" as const
const learnable12: Prune = { method: "learnable", keep: 14, scheme: "1:2", options: { update: "lora" }, from: teacher }
const baseline = (method: string, keep = 14): Prune => ({ method, keep, from: teacher })
const finetune: Recovery = { strategy: "finetune", budget: "100K" }
/** Diff-Pruning: every block kept, heads and channels cut to remove `ratio` of the parameters. */
const diffPruning = (ratio: number): Prune => ({ method: "diff-pruning", keep: 28, options: { ratio }, from: teacher })
const maskedKd: Recovery = { strategy: "masked-kd", options: { k: 2 }, budget: "100K" }

export const table1: Grid = {
  table: "1",
  title: "Layer pruning of the teacher DiT",
  cells: [
    { id: "t1/teacher", family: "dit", protocol: "full" },
    { id: "t1/shortgpt-d19", family: "dit", prune: baseline("shortgpt", 19), recovery: finetune, protocol: "full" },
    // 28 → 19 is 2:3 over the first 27 layers with the last one kept (9·2 + 1).
    { id: "t1/tinydit-d19-kd", family: "dit", prune: { ...learnable12, keep: 19, scheme: "2:3" }, recovery: maskedKd, protocol: "full" },
    { id: "t1/diff-pruning-50", family: "dit", prune: diffPruning(0.5), recovery: finetune, protocol: "full" },
    { id: "t1/diff-pruning-75", family: "dit", prune: diffPruning(0.75), recovery: finetune, protocol: "full" },
    { id: "t1/shortgpt-d14", family: "dit", prune: baseline("shortgpt"), recovery: finetune, protocol: "full" },
    { id: "t1/flux-lite-d14", family: "dit", prune: baseline("flux-lite"), recovery: finetune, protocol: "full" },
    { id: "t1/sensitivity-d14", family: "dit", prune: baseline("sensitivity"), recovery: finetune, protocol: "full" },
    { id: "t1/oracle-d14", family: "dit", prune: baseline("oracle"), recovery: finetune, protocol: "full" },
    { id: "t1/tinydit-d14", family: "dit", prune: learnable12, recovery: finetune, protocol: "full" },
    { id: "t1/tinydit-d14-kd", family: "dit", prune: learnable12, recovery: maskedKd, protocol: "full" },
    {
      id: "t1/tinydit-d7-kd",
      family: "dit",
      prune: { ...learnable12, keep: 7, from: { cell: "t1/tinydit-d14-kd" } },
      recovery: { ...maskedKd, budget: "500K", teacher: { cell: "t1/tinydit-d14-kd" } },
      protocol: "full"
    }
  ]
}

export const table2: Grid = {
  table: "2",
  title: "Depth pruning of MAR and SiT",
  cells: [
    { id: "t2/mar-large", family: "mar", protocol: "full" },
    { id: "t2/mar-base", family: "mar", scratch: "mar-base", protocol: "full" },
    // 32 ⇒ 16 with block size 2 (1:2 over encoder then decoder blocks: 8 + 8 kept), masked KD for 40 epochs.
    {
      id: "t2/tinymar-d16",
      family: "mar",
      prune: { ...learnable12, keep: 16 },
      recovery: { ...maskedKd, budget: "40ep" },
      protocol: "full"
    },
    { id: "t2/sit-teacher", family: "sit", protocol: "full" },
    { id: "t2/tinysit-d14", family: "sit", prune: learnable12, recovery: maskedKd, protocol: "full" }
  ]
}

const random = (pick: "min" | "median" | "max"): Prune => ({ ...baseline("random"), options: { pick } })

export const table3: Grid = {
  table: "3",
  title: "Calibration loss after pruning vs FID after fine-tuning (no KD)",
  seeds: 3,
  cells: [
    { id: "t3/max-loss", family: "dit", prune: random("max"), recovery: finetune, protocol: "full" },
    { id: "t3/median-loss", family: "dit", prune: random("median"), recovery: finetune, protocol: "full" },
    { id: "t3/min-loss", family: "dit", prune: random("min"), recovery: finetune, protocol: "full" },
    { id: "t3/sensitivity", family: "dit", prune: baseline("sensitivity"), recovery: finetune, protocol: "full" },
    { id: "t3/shortgpt", family: "dit", prune: baseline("shortgpt"), recovery: finetune, protocol: "full" },
    { id: "t3/flux-lite", family: "dit", prune: baseline("flux-lite"), recovery: finetune, protocol: "full" },
    { id: "t3/oracle", family: "dit", prune: baseline("oracle"), recovery: finetune, protocol: "full" },
    { id: "t3/learnable", family: "dit", prune: learnable12, recovery: finetune, protocol: "full" }
  ]
}

export const table4: Grid = {
  table: "4",
  title: "Pruning scheme × recoverability estimate (10K-step fine-tuning, short protocol)",
  seeds: 3,
  cells: (["lora", "full", "frozen"] as const).flatMap((update) =>
    (["1:2", "2:4", "7:14"] as const).map((scheme): Cell => ({
      id: `t4/${scheme}-${update}`,
      family: "dit",
      prune: { method: "learnable", keep: 14, scheme, options: { update }, from: teacher },
      recovery: { strategy: "finetune", budget: "10K" },
      protocol: "short"
    }))
  )
}

export const table5: Grid = {
  table: "5",
  title: "Fine-tuning strategies for TinyDiT-D14",
  seeds: 3,
  cells: [
    { id: "t5/finetune", family: "dit", prune: learnable12, recovery: finetune, protocol: "full" },
    { id: "t5/logits-kd", family: "dit", prune: learnable12, recovery: { strategy: "logits-kd", budget: "100K" }, protocol: "full" },
    { id: "t5/repkd", family: "dit", prune: learnable12, recovery: { strategy: "repkd", budget: "100K" }, protocol: "full" },
    { id: "t5/masked-kd-0.1", family: "dit", prune: learnable12, recovery: { ...maskedKd, options: { k: 0.1 } }, protocol: "full" },
    { id: "t5/masked-kd-2", family: "dit", prune: learnable12, recovery: maskedKd, protocol: "full" },
    { id: "t5/masked-kd-4", family: "dit", prune: learnable12, recovery: { ...maskedKd, options: { k: 4 } }, protocol: "full" }
  ]
}

const d14 = { cell: "t1/tinydit-d14-kd" } as const
// A student distilled from another model than the one it was cut from takes the reference's fixed alignment.
const d7 = (id: string, from: Source, teacherModel: Source): Cell => ({
  id,
  family: "dit",
  prune: { ...learnable12, keep: 7, scheme: from === teacher ? "1:4" : "1:2", from },
  recovery: {
    strategy: "masked-kd",
    options: { k: 2, ...(from === teacherModel ? {} : { alignment: "fixed" }) },
    budget: "10K",
    teacher: teacherModel,
    ema: false
  },
  protocol: "short"
})

export const table7: Grid = {
  table: "7",
  title: "TinyDiT-D7 by teacher and pruning source (10K steps, raw weights)",
  cells: [
    d7("t7/teacher-xl-from-xl", teacher, teacher),
    d7("t7/teacher-xl-from-d14", d14, teacher),
    d7("t7/teacher-d14-from-xl", teacher, d14),
    d7("t7/teacher-d14-from-d14", d14, d14)
  ]
}

export const table8: Grid = {
  table: "8",
  title: "Fine-tuning learning rate of TinyDiT-D14 (no KD)",
  cells: ([["2e-4", 2e-4], ["1e-4", 1e-4], ["5e-5", 5e-5]] as const).map(([name, lr]): Cell => ({
    id: `t8/lr-${name}`,
    family: "dit",
    prune: learnable12,
    recovery: { ...finetune, lr },
    protocol: "full"
  }))
}

/** Depth pruning's shapes, and width pruning's at the same shares of parameters removed (a quarter, half, three quarters). */
export const figure4: Grid = {
  table: "F4",
  title: "Sampling speed against depth and width pruning",
  cells: [
    ...[28, 21, 14, 7].map((depth): Cell => ({ id: `f4/depth-${depth}`, family: "dit", protocol: "full", speedDepth: depth })),
    ...[25, 50, 75].map((percent): Cell => ({ id: `f4/width-${percent}`, family: "dit", protocol: "full", speedWidth: percent / 100 }))
  ]
}

/** Cells of pruners added outside the packages (experiments/src/pruners), beside the paper's tables. */
export const extras: Grid = {
  table: "X",
  title: "Added pruners",
  cells: [{ id: "x/weight-norm-d14", family: "dit", prune: baseline("weight-norm"), recovery: finetune, protocol: "full" }]
}

/**
 * The instrument check: two bad models whose FID the teacher's must be
 * clearly below for the metrics to count as evidence: the teacher's network
 * untrained, and the teacher pruned to half its depth (ShortGPT's 14 of 28
 * blocks) before any recovery. Every run includes them, with Table 1's
 * teacher.
 */
export const instrument: Grid = {
  table: "I",
  title: "Instrument check",
  cells: [
    { id: "i/untrained", family: "dit", protocol: "full", untrained: true },
    { id: "i/unrecovered", family: "dit", prune: baseline("shortgpt"), protocol: "full" }
  ]
}

export const grids: ReadonlyArray<Grid> = [table1, table2, table3, table4, table5, table7, table8, figure4, extras, instrument]

/** Recovery seeds a cell's grid declares. */
export const seedsOf = (cell: string): number => grids.find((g) => g.cells.some((c) => c.id === cell))?.seeds ?? 1
