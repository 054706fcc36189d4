/**
 * Methods added outside the packages: every module of `pruners/` (a
 * `Pruner.Method` exported as `method`) and of `strategies/` (a
 * `Recovery.Strategy` exported as `strategy`), tests aside, loaded when this
 * module is. Adding one is its file: the suite, `tinyfusion prune` (with its
 * options as flags) and `tinyfusion finetune` know it by name, through
 * `layer`, with no other edit.
 */
import { Layer } from "effect"
import { type Pruner, Pruners } from "@tinyfusion/pruning"
import { type Recovery, Strategies } from "@tinyfusion/recovery"
import * as fs from "node:fs"

/** The named export of every module in a folder beside this one. */
const load = async <A>(folder: string, name: string): Promise<ReadonlyArray<A>> => {
  const dir = new URL(`./${folder}/`, import.meta.url)
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts")).sort() : []
  return Promise.all(files.map(async (file) => {
    const module = (await import(new URL(file, dir).href)) as Record<string, unknown>
    if (module[name] === undefined) throw new Error(`experiments/src/${folder}/${file} exports no \`${name}\``)
    return module[name] as A
  }))
}

export const pruners: ReadonlyArray<Pruner.Method> = await load("pruners", "method")
export const strategies: ReadonlyArray<Recovery.Strategy> = await load("strategies", "strategy")

/** The registries with the added methods (on top of the built-in ones). */
export const layer = Layer.mergeAll(Pruners.layer(pruners), Strategies.layer(strategies))

const byName = <M extends { readonly name: string }>(builtin: ReadonlyMap<string, M>, added: ReadonlyArray<M>): ReadonlyArray<M> => [
  ...new Map([...builtin, ...added.map((m) => [m.name, m] as const)]).values()
]

/** Every pruner and strategy: the built-in ones and the added ones (an added one replaces a built-in one of its name). */
export const allPruners: ReadonlyArray<Pruner.Method> = byName(Pruners.builtin, pruners)
export const allStrategies: ReadonlyArray<Recovery.Strategy> = byName(Strategies.builtin, strategies)
