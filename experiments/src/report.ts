/**
 * The reproduction report: each table with our numbers beside the paper's,
 * every claim with its computed verdict, and the figures. One document model
 * rendered twice: Markdown (figures linked) and a self-contained HTML page
 * (figures inlined).
 */
import { claims, type Judgement, type Results } from "./claims.ts"
import * as Paper from "./paper.ts"

type Block =
  | { readonly _tag: "heading"; readonly level: 1 | 2; readonly text: string }
  | { readonly _tag: "paragraph"; readonly text: string }
  | { readonly _tag: "table"; readonly header: ReadonlyArray<string>; readonly rows: ReadonlyArray<ReadonlyArray<string>> }
  | { readonly _tag: "image"; readonly file: string; readonly alt: string }

export interface Input {
  readonly preset: string
  /** What the run was trained and evaluated on, e.g. "Fashion-MNIST" or "synthetic fixture". */
  readonly dataset: string
  readonly backend: string
  readonly results: Results
  /** Figure files (PNG) in the run directory, by title. */
  readonly figures: ReadonlyArray<{ readonly title: string; readonly file: string }>
  /** Sample grids (PNG) in the run directory, by cell. */
  readonly samples: ReadonlyArray<{ readonly cell: string; readonly file: string }>
  /** The stages' own timings summed (stored in their manifests, so a rerun of cache hits reports the same). */
  readonly computeSeconds: number
  /** Cells that produced no result, and why. */
  readonly failures: ReadonlyArray<{ readonly cell: string; readonly reason: string }>
}

const columns: ReadonlyArray<readonly [keyof Paper.Metrics, string, number]> = [
  ["calibrationLoss", "calib. loss", 3],
  ["initDistillLoss", "init. distill loss", 1],
  ["is", "IS", 2],
  ["fid", "FID", 2],
  ["sfid", "sFID", 2],
  ["precision", "Prec.", 2],
  ["recall", "Recall", 2],
  ["itPerS", "it/s", 2],
  ["confidence", "confidence", 3]
]

const show = (m: Paper.Metrics | undefined, key: keyof Paper.Metrics, digits: number): string => {
  if (m === undefined) return "–"
  if (m.diverged === true && key !== "calibrationLoss" && key !== "initDistillLoss") return "NaN"
  const v = m[key]
  return typeof v === "number" ? (Number.isFinite(v) ? v.toFixed(digits) : String(v)) : "–"
}

/** Our numbers beside the paper's for the rows of one table that we reproduce. */
export const compareTable = (rows: ReadonlyArray<Paper.Row>, results: Results): Block => {
  const reproduced = rows.filter((r): r is Paper.Row & { cell: string } => r.cell !== undefined)
  const used = columns.filter(([key]) => reproduced.some((r) => r[key] !== undefined || results.get(r.cell)?.[key] !== undefined))
  return {
    _tag: "table",
    header: ["", ...used.flatMap(([, name]) => [`${name} (ours)`, `${name} (paper)`])],
    rows: reproduced.map((r) => [
      r.depth === undefined ? r.label : `${r.label} [${r.depth}]`,
      ...used.flatMap(([key, , digits]) => [show(results.get(r.cell), key, digits), show(r, key, digits)])
    ])
  }
}

/** Figure 4's shapes: the depths, then width pruning at the same shares of parameters removed. */
const speedShapes: ReadonlyArray<{ readonly cell: string; readonly label: string; readonly paper: { readonly itPerS: number; readonly parameters: number } | undefined }> = [
  ...[28, 21, 14, 7].map((depth) => ({
    cell: `f4/depth-${depth}`,
    label: `depth ${depth}`,
    paper: Paper.figure4.itPerS.find((p) => p.depth === depth)
  })),
  ...[25, 50, 75].map((percent) => ({
    cell: `f4/width-${percent}`,
    label: `width −${percent}%`,
    paper: Paper.figure4.width.find((p) => p.removed === percent / 100)
  }))
]

const speedTable = (results: Results): Block => {
  const base = results.get("f4/depth-28")
  const paperBase = Paper.figure4.itPerS[0]
  const fix = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d))
  const percent = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(1)}%`)
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a / b)
  return {
    _tag: "table",
    header: ["shape", "parameters removed (ours)", "it/s (ours)", "speed-up (ours)", "linear (ours)", "it/s (paper)", "speed-up (paper)", "linear (paper)"],
    rows: speedShapes.map(({ cell, label, paper }) => {
      const mine = results.get(cell)
      const kept = ratio(mine?.parameters, base?.parameters)
      return [
        label,
        percent(kept === undefined ? undefined : 1 - kept),
        fix(mine?.itPerS, 2),
        fix(ratio(mine?.itPerS, base?.itPerS), 2),
        fix(kept === undefined ? undefined : 1 / kept, 2),
        fix(paper?.itPerS, 2),
        fix(ratio(paper?.itPerS, paperBase.itPerS), 2),
        fix(ratio(paperBase.parameters, paper?.parameters), 2)
      ]
    })
  }
}

/** How the claims came out: "n reproduced, m not reproduced, k not run." */
export const verdictLine = (judgements: ReadonlyArray<Judgement>): string => {
  const count = (v: string) => judgements.filter((j) => j.verdict === v).length
  return `${count("reproduced")} reproduced, ${count("not reproduced")} not reproduced, ${count("not run")} not run.`
}

export const document = (input: Input): ReadonlyArray<Block> => {
  const judged = claims.map((c) => ({ claim: c, judgement: c.judge(input.results) }))
  const tables: ReadonlyArray<readonly [string, ReadonlyArray<Paper.Row>]> = [
    ["Table 1: layer pruning of DiT", Paper.table1],
    ["Table 2: MAR and SiT", Paper.table2],
    ["Table 3: calibration loss vs recoverability", Paper.table3],
    ["Table 4: pruning schemes and recoverability estimates", Paper.table4],
    ["Table 5: fine-tuning strategies", Paper.table5],
    ["Table 7: iterative pruning to D7", Paper.table7],
    ["Table 8: fine-tuning learning rate", Paper.table8]
  ]
  return [
    { _tag: "heading", level: 1, text: `TinyFusion reproduction — preset ${input.preset}` },
    {
      _tag: "paragraph",
      text: `Data: ${input.dataset}. Backend: ${input.backend}. Compute time: ${(input.computeSeconds / 60).toFixed(1)} min ` +
        `(the stages' own timings, summed). ` +
        `Our metrics use the project's own feature network, so absolute values are not comparable with the paper's ` +
        `Inception-based ones; the claims compare methods within one run.`
    },
    ...(input.failures.length === 0 ? [] : [
      { _tag: "heading", level: 2, text: "Cells that failed" } as const,
      { _tag: "table", header: ["cell", "reason"], rows: input.failures.map((f) => [f.cell, f.reason]) } as const
    ]),
    { _tag: "heading", level: 2, text: "Claims" },
    {
      _tag: "paragraph",
      text: verdictLine(judged.map((j) => j.judgement))
    },
    {
      _tag: "table",
      header: ["claim", "source", "verdict", "evidence"],
      rows: judged.map(({ claim, judgement }) => [claim.text, claim.source, judgement.verdict, judgement.evidence])
    },
    ...tables.flatMap(([title, rows]): Array<Block> => [
      { _tag: "heading", level: 2, text: title },
      compareTable(rows, input.results)
    ]),
    { _tag: "heading", level: 2, text: "Figure 4: sampling speed of depth and width pruning" },
    speedTable(input.results),
    ...input.figures.flatMap((f): Array<Block> => [
      { _tag: "heading", level: 2, text: f.title },
      { _tag: "image", file: f.file, alt: f.title }
    ]),
    ...(input.samples.length === 0 ? [] : [{ _tag: "heading", level: 2, text: "Samples" } as const]),
    ...input.samples.map((s): Block => ({ _tag: "image", file: s.file, alt: `samples of ${s.cell}` }))
  ]
}

const escapeCell = (s: string) => s.replaceAll("|", "\\|")

export const markdown = (blocks: ReadonlyArray<Block>): string =>
  blocks.map((b) => {
    switch (b._tag) {
      case "heading":
        return `${"#".repeat(b.level)} ${b.text}`
      case "paragraph":
        return b.text
      case "table":
        return [b.header, b.header.map(() => "---"), ...b.rows].map((r) => `| ${r.map(escapeCell).join(" | ")} |`).join("\n")
      case "image":
        return `![${b.alt}](${b.file})`
    }
  }).join("\n\n") + "\n"

const escapeHtml = (s: string) => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")

/** A self-contained page: images are inlined from `readFile` (name → PNG bytes). */
export const html = (blocks: ReadonlyArray<Block>, readFile: (file: string) => Uint8Array): string => {
  const body = blocks.map((b) => {
    switch (b._tag) {
      case "heading":
        return `<h${b.level}>${escapeHtml(b.text)}</h${b.level}>`
      case "paragraph":
        return `<p>${escapeHtml(b.text)}</p>`
      case "table":
        return `<table><thead><tr>${b.header.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${
          b.rows.map((r) => `<tr>${r.map((c) => `<td class="${c === "reproduced" ? "ok" : c === "not reproduced" ? "bad" : ""}">${escapeHtml(c)}</td>`).join("")}</tr>`).join("")
        }</tbody></table>`
      case "image":
        return `<figure><img alt="${escapeHtml(b.alt)}" src="data:image/png;base64,${Buffer.from(readFile(b.file)).toString("base64")}"><figcaption>${escapeHtml(b.alt)}</figcaption></figure>`
    }
  }).join("\n")
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>TinyFusion reproduction</title>
<style>
body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f4f4f4}td.ok{background:#e6f4ea}td.bad{background:#fce8e6}img{max-width:100%}
</style></head><body>
${body}
</body></html>
`
}
