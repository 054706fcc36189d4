/**
 * Figures as data: a Vega-Lite spec rendered to SVG by Vega (no browser,
 * no canvas) and to PNG by resvg. Every figure of the project goes through
 * here: the report's figures and each stage's own plots (loss curves).
 */
import { Resvg } from "@resvg/resvg-js"
import * as vega from "vega"
import * as vl from "vega-lite"

export type Spec = vl.TopLevelSpec

export interface Figure {
  readonly name: string
  readonly title: string
  readonly svg: string
  readonly png: Uint8Array
}

export const schema = "https://vega.github.io/schema/vega-lite/v6.json"

export const render = async (name: string, title: string, spec: Spec): Promise<Figure> => {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" })
  const svg = await view.toSVG()
  view.finalize()
  const png = new Resvg(svg, { fitTo: { mode: "zoom", value: 2 }, background: "white" }).render().asPng()
  return { name, title, svg, png: new Uint8Array(png) }
}

/** A line plot of named series over steps (loss curves). */
export const lines = (
  name: string,
  title: string,
  points: ReadonlyArray<{ readonly step: number; readonly value: number; readonly series: string }>,
  axes: { readonly x: string; readonly y: string; readonly logY?: boolean }
): Promise<Figure> =>
  render(name, title, {
    $schema: schema,
    title,
    width: 420,
    height: 240,
    data: { values: points.filter((p) => Number.isFinite(p.value)).map((p) => ({ ...p })) },
    mark: { type: "line" },
    encoding: {
      x: { field: "step", type: "quantitative", title: axes.x },
      y: { field: "value", type: "quantitative", title: axes.y, scale: axes.logY === true ? { type: "log" } : { zero: false } },
      color: { field: "series", type: "nominal", title: null }
    }
  })
