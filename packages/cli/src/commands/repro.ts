/**
 * `tinyfusion repro`: the paper's tables as grids on the store (experiments/),
 * then the report beside the paper's numbers. Every stage is an artifact, so
 * rerunning the same command after a kill reuses what finished (the log
 * says "cache hit") and ends with the same report. `--plan` prints the
 * cells' graph instead: every stage, its key, and whether the store holds it.
 */
import { Console, Effect, Layer, Option, Path } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore, type Graph } from "@tinyfusion/core"
import { Executor, LocalWorkers, Postgres, Presets, Report, Suite } from "@tinyfusion/experiments"
import { Compute } from "@tinyfusion/tensor"
import * as os from "node:os"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as Table from "../Table.ts"

export const repro = Command.make(
  "repro",
  {
    preset: Flag.Literals("preset", Presets.presetNames).pipe(
      Flag.withDescription("quick (CPU, minutes; plumbing), small (Fashion-MNIST, the reproduction sized for a 2-core CPU), mini (Fashion-MNIST at a GPU's scale), paper (DiT-XL/2; needs --data, --teacher, --vae, --inception, --reference)"),
      Flag.withDefault("quick" as const)
    ),
    tables: CheckedFlags.namesOf("tables", ["all", ...Suite.tableIds]).pipe(
      Flag.withDescription(`Comma-separated grids: ${Suite.tableIds.join(", ")} (default: all)`),
      Flag.withDefault(["all"])
    ),
    data: Flag.String("data").pipe(
      Flag.withDescription(
        "Fashion-MNIST folder (quick, small, mini; refused if it lacks the files), or a folder with train/ and val/ class folders (paper). " +
          "Without it, quick uses /usr/share/datasets/fashion-mnist, or else says so and runs on the synthetic dataset"
      ),
      Flag.optional
    ),
    synthetic: Flag.Boolean("synthetic").pipe(
      Flag.withDescription("quick: run on the built-in synthetic dataset even where Fashion-MNIST is present"),
      Flag.withDefault(false)
    ),
    teacher: Flag.String("teacher").pipe(Flag.withDescription("paper: DiT-XL-2-256x256.pt (any DiT checkpoint, .pt or safetensors)"), Flag.optional),
    sitTeacher: Flag.String("sit-teacher").pipe(
      Flag.withDescription("paper: SiT-XL-2-256x256.pt for Table 2's SiT rows (default: train a SiT teacher)"),
      Flag.optional
    ),
    vae: Flag.String("vae").pipe(Flag.withDescription("paper: sd-vae-ft-ema's diffusion_pytorch_model.safetensors (or -mse, or latent-diffusion's kl-f8)"), Flag.optional),
    inception: Flag.String("inception").pipe(Flag.withDescription("paper: pytorch-fid's pt_inception-2015-12-05-6726825d.pth"), Flag.optional),
    reference: Flag.String("reference").pipe(Flag.withDescription("paper: ADM's VIRTUAL_imagenet256_labeled.npz"), Flag.optional),
    executor: Flag.Literals("executor", ["local", "in-process"]).pipe(
      Flag.withDescription("Where stages compute: local (worker processes on this machine, one per core; the default) or in-process (this process: tests, debugging)"),
      Flag.optional
    ),
    workers: CheckedFlags.count("workers").pipe(
      Flag.withDescription(`local: worker processes (default: the cores, ${os.availableParallelism()} here)`),
      Flag.optional
    ),
    queue: Flag.String("queue").pipe(
      Flag.withDescription("Submit the stages as jobs to this PostgreSQL queue (postgres://USER:PASSWORD@HOST:PORT/DATABASE), run by `tinyfusion worker` processes sharing the store"),
      Flag.optional
    ),
    concurrency: CheckedFlags.count("concurrency").pipe(
      Flag.withDescription("in-process: cells run at once (they share the one compute backend)"),
      Flag.withDefault(1)
    ),
    out: Flag.String("out").pipe(Flag.withDescription("Report directory (default: <store>/reports/<preset>, or <preset>-tables-<ids> for some tables)"), Flag.optional),
    plan: Flag.Boolean("plan").pipe(
      Flag.withDescription("Print the stages the selected cells run, their keys and which the store holds; run nothing"),
      Flag.withDefault(false)
    )
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const path = yield* Path.Path
      const store = yield* ArtifactStore
      const files = {
        teacher: Option.getOrUndefined(o.teacher),
        sitTeacher: Option.getOrUndefined(o.sitTeacher),
        vae: Option.getOrUndefined(o.vae),
        inception: Option.getOrUndefined(o.inception),
        reference: Option.getOrUndefined(o.reference)
      }
      const given = Object.entries(files).filter(([, f]) => f !== undefined).map(([k]) => k)
      if (o.preset !== "paper" && given.length > 0) {
        return yield* new Presets.PresetInput({ preset: o.preset, reason: `--${given.join(", --").replace("sitTeacher", "sit-teacher")} belong to the paper preset` })
      }
      const resolved = yield* Presets.resolve(o.preset, { data: Option.getOrUndefined(o.data), synthetic: o.synthetic, files })
      const all = o.tables.includes("all")
      const tables = all ? Suite.tableIds : [...new Set(o.tables)]
      // --plan reads the store and writes nothing.
      if (o.plan) {
        const steps = yield* Suite.plan({ preset: resolved.preset, tables, imported: resolved.imported })
        const status = (s: Graph.Step["status"]) =>
          s._tag === "Stored" ? "stored" : s._tag === "Partial" ? `resumes at step ${s.step}` : s._tag === "Missing" ? "MISSING" : "to run"
        const cells = (labels: ReadonlyArray<string>) => (labels.length <= 2 ? labels.join(", ") : `${labels[0]} and ${labels.length - 1} more`)
        yield* Console.log(Table.render(["stage", "key", "status", "cells"], steps.map((s) => [s.stage, s.key, status(s.status), cells(s.labels)])))
        const count = (tag: string) => steps.filter((s) => s.status._tag === tag).length
        yield* Console.log(`${steps.length} stages: ${count("Stored")} stored, ${count("ToRun") + count("Partial")} to run (${count("Partial")} partly done)`)
        return
      }
      // One clear error now rather than one per cell.
      yield* store.writable
      const executor = Option.getOrUndefined(o.executor)
      if (Option.isSome(o.queue) && executor !== undefined) {
        return yield* new Presets.PresetInput({ preset: o.preset, reason: "--queue runs the stages on the queue's workers; --executor is for runs without one" })
      }
      if (Option.isSome(o.workers) && (executor === "in-process" || Option.isSome(o.queue))) {
        return yield* new Presets.PresetInput({ preset: o.preset, reason: "--workers is the local executor's; start `tinyfusion worker` processes for a queue" })
      }
      const compute = yield* Compute
      const executorLayer = Option.isSome(o.queue)
        ? Postgres.layer(o.queue.value, { backend: compute.backend, data: resolved.source })
        : executor === "in-process"
        ? Executor.inProcess
        : LocalWorkers.layer({
          store: store.root,
          backend: compute.backend,
          logFormat: yield* GlobalFlags.LogFormat,
          data: resolved.source,
          ...(Option.isSome(o.workers) ? { workers: o.workers.value } : {})
        })
      // A run of some tables reports beside, not over, the run of all of them.
      const named = all ? o.preset : `${o.preset}-tables-${tables.join("_")}`
      const out = Option.getOrElse(o.out, () => path.join(store.root, "reports", named))
      const started = Date.now()
      const summary = yield* Suite.run({
        preset: resolved.preset,
        tables,
        out,
        dataset: resolved.dataset,
        concurrency: executor === "in-process" ? o.concurrency : "unbounded",
        ...(resolved.imported === undefined ? {} : { imported: resolved.imported })
      }).pipe(Effect.provide(Layer.merge(resolved.data, executorLayer)))
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
