/**
 * `tinyfusion repro`: the paper's tables as grids on the store (experiments/),
 * then the report beside the paper's numbers. Every stage is an artifact, so
 * rerunning the same command after a kill reuses what finished (the log
 * says "cache hit") and ends with the same report.
 */
import { Console, Effect, FileSystem, Option, Path } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore } from "@tinyfusion/core"
import { Presets, Report, Suite } from "@tinyfusion/experiments"
import * as GlobalFlags from "../GlobalFlags.ts"

export const repro = Command.make(
  "repro",
  {
    preset: Flag.Literals("preset", Presets.presetNames).pipe(
      Flag.withDescription("quick (CPU, minutes; plumbing), mini (Fashion-MNIST, the reproduction), paper (DiT-XL/2; needs --data and --teacher)"),
      Flag.withDefault("quick" as const)
    ),
    tables: Flag.String("tables").pipe(
      Flag.withDescription(`Comma-separated grids: ${Suite.tableIds.join(", ")} (default: all)`),
      Flag.withDefault("all")
    ),
    data: Flag.String("data").pipe(
      Flag.withDescription("Fashion-MNIST folder (quick, mini), or a folder with train/ and val/ class folders (paper)"),
      Flag.optional
    ),
    synthetic: Flag.Boolean("synthetic").pipe(
      Flag.withDescription("quick: run on the built-in synthetic dataset even where Fashion-MNIST is present"),
      Flag.withDefault(false)
    ),
    teacher: Flag.String("teacher").pipe(
      Flag.withDescription("paper: the DiT-XL/2 checkpoint as safetensors with its config (`tinyfusion checkpoint import`)"),
      Flag.optional
    ),
    concurrency: Flag.Int("concurrency").pipe(
      Flag.withDescription("Cells run at once (they share the one compute backend)"),
      Flag.withDefault(1)
    ),
    out: Flag.String("out").pipe(Flag.withDescription("Report directory (default: <store>/reports/<preset>, or <preset>-tables-<ids> for some tables)"), Flag.optional)
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const store = yield* ArtifactStore
      if (o.concurrency < 1) return yield* new Presets.PresetInput({ preset: o.preset, reason: `--concurrency ${o.concurrency} is not a positive count` })
      const resolved = yield* Presets.resolve(o.preset, { data: Option.getOrUndefined(o.data), synthetic: o.synthetic })
      if (o.preset === "paper" && Option.isNone(o.teacher)) {
        return yield* new Presets.PresetInput({ preset: o.preset, reason: "needs --teacher FILE, the DiT-XL/2 checkpoint converted with `tinyfusion checkpoint import`" })
      }
      const teacherFile = Option.isSome(o.teacher) ? { bytes: yield* fs.readFile(o.teacher.value), name: o.teacher.value } : undefined
      const tables = o.tables === "all" ? Suite.tableIds : o.tables.split(",").map((t) => t.trim()).filter((t) => t !== "")
      // A run of some tables reports beside, not over, the run of all of them.
      const named = o.tables === "all" ? o.preset : `${o.preset}-tables-${tables.join("_")}`
      const out = Option.getOrElse(o.out, () => path.join(store.root, "reports", named))
      const started = Date.now()
      const summary = yield* Suite.run({
        preset: resolved.preset,
        tables,
        out,
        dataset: resolved.dataset,
        concurrency: o.concurrency,
        ...(teacherFile === undefined ? {} : { teacherFile })
      }).pipe(Effect.provide(resolved.data))
      const verdicts = Report.verdictLine(summary.judged.map((j) => j.judgement), summary.instrument)
      yield* Console.log(
        `${path.join(out, "report.md")}, report.html: ${summary.results.size} cells, ${summary.failures.length} failed; claims: ${verdicts} ` +
          `Wall time ${((Date.now() - started) / 60000).toFixed(1)} min.`
      )
      if (summary.failures.length > 0) {
        return yield* new Suite.CellFailed({ cell: summary.failures.map((f) => f.cell).join(", "), reason: "no result (see the report's failed cells)" })
      }
    }))
).pipe(Command.withDescription("Run the paper's tables as grids (one command, resumable) and write the report beside the paper's numbers"))
