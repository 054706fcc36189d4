/** Plain-text tables for terminal output: columns padded to their widest cell. */
export const render = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n")
}

export const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : String(x))

/** A manifest's metric by name, fixed to `digits`, or "-" when the stage recorded none. */
export const metric = (manifest: { readonly metrics: Readonly<Record<string, number | null>> }) => (name: string, digits: number): string => {
  const value = manifest.metrics[name]
  return value === undefined || value === null ? "-" : fixed(value, digits)
}
