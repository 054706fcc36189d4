/**
 * The fingerprint of the code that computes a stage: part of its key, so a
 * change to that code invalidates the stage's artifacts (and, through their
 * keys, everything downstream) with no version number to remember.
 *
 * It covers a module and every project module it imports statically,
 * transitively: relative imports, and the workspace packages' modules an
 * import names (`import { DiT } from "@tinyfusion/models"` follows the
 * index's `export * as DiT from "./DiT.ts"` to DiT.ts alone; type-only
 * imports are skipped). Each module counts by its repository-relative path
 * and its source with comments and blank lines removed, so documentation
 * edits, tests and READMEs (which no stage imports) leave keys alone. An
 * external package counts by its installed version, and a file a module
 * reads as `new URL("…", import.meta.url)` by its bytes.
 *
 * Deterministic across machines and checkouts: paths are relative to the
 * workspace root (the folder holding pnpm-workspace.yaml), line endings are
 * normalised, and nothing of the machine enters. Computed on first use and
 * kept for the process: the code a process runs is the code it loaded.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** A module (its `import.meta.url`) and modules not to follow from it (registered plugins: see Stage.select). */
export interface Code {
  readonly module: string
  readonly exclude?: ReadonlyArray<string>
}

const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex")

/** Hex digits of a fingerprint. */
const digits = 24

// ------------------------------------------------------------------ comments

const regexAfterWord = new Set(["return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case", "do", "else", "yield", "await"])

const special = /[/"'`{}]/g
const doubleQuoted = /"(?:[^"\\\n]|\\[\s\S])*"/y
const singleQuoted = /'(?:[^'\\\n]|\\[\s\S])*'/y
// Template text up to its end or an interpolation.
const templateText = /(?:[^`\\$]|\\[\s\S]|\$(?!\{))*(`|\$\{)/y
const regexLiteral = /\/(?:[^/\\\n[]|\\.|\[(?:[^\]\\\n]|\\.)*\])+\/[a-z]*/y

/** The last significant token before the end of `s`: a word, or one character. */
const lastToken = (s: string): string => {
  let k = s.length - 1
  while (k >= 0 && /\s/.test(s[k]!)) k--
  if (k < 0) return ""
  if (!/[\w$]/.test(s[k]!)) return s[k]!
  let b = k
  while (b > 0 && /[\w$]/.test(s[b - 1]!)) b--
  return s.slice(b, k + 1)
}

/**
 * The source without comments, trailing whitespace and blank lines; line
 * endings normalised. Strings, template literals and regular expressions
 * are kept whole. A source it cannot scan to the end (an unterminated
 * literal) is returned as it is: hashing more than needed is safe.
 */
export const normalise = (source: string): string => {
  const text = source.replace(/\r\n?/g, "\n")
  let out = ""
  // Brace depths at which an enclosing template literal resumes.
  const templates: Array<number> = []
  let depth = 0
  let i = 0
  const sticky = (pattern: RegExp): string | undefined => {
    pattern.lastIndex = i
    const m = pattern.exec(text)
    if (m === null) return undefined
    i = pattern.lastIndex
    return m[0]
  }
  /** Copies template text from i; false when the template never ends. */
  const template = (): boolean => {
    const part = sticky(templateText)
    if (part === undefined) return false
    out += part
    if (part.endsWith("${")) {
      templates.push(depth)
      depth++
    }
    return true
  }
  for (;;) {
    special.lastIndex = i
    const found = special.exec(text)
    if (found === null) {
      out += text.slice(i)
      break
    }
    out += text.slice(i, found.index)
    i = found.index
    const c = found[0]
    const next = text[i + 1]
    if (c === "/" && next === "/") {
      const end = text.indexOf("\n", i)
      i = end < 0 ? text.length : end
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2)
      if (end < 0) return text
      out += " "
      i = end + 2
    } else if (c === "\"" || c === "'") {
      const literal = sticky(c === "\"" ? doubleQuoted : singleQuoted)
      if (literal === undefined) return text
      out += literal
    } else if (c === "`") {
      out += "`"
      i++
      if (!template()) return text
    } else if (c === "{") {
      depth++
      out += "{"
      i++
    } else if (c === "}") {
      depth--
      out += "}"
      i++
      if (templates.length > 0 && templates.at(-1) === depth) {
        templates.pop()
        if (!template()) return text
      }
    } else {
      const previous = lastToken(out)
      if (previous === "" || /^[(,=:[!&|?{};+\-*%<>~^]$/.test(previous) || regexAfterWord.has(previous)) {
        const literal = sticky(regexLiteral)
        if (literal === undefined) return text
        out += literal
      } else {
        out += "/"
        i++
      }
    }
  }
  if (templates.length > 0) return text
  return out.split("\n").map((line) => line.trimEnd()).filter((line) => line !== "").join("\n")
}

// ------------------------------------------------------------------ imports

interface Import {
  readonly specifier: string
  /** The names imported (undefined: the whole module — a namespace or side-effect import, or `export *`). */
  readonly names?: ReadonlyArray<string>
}

const importPattern = /(?:^|[;}\n])\s*(import|export)\s+(type\s+)?([^;'"`]*?)\s*from\s*["']([^"']+)["']|(?:^|[;}\n])\s*import\s*["']([^"']+)["']/g
const assetPattern = /new\s+URL\(\s*["']([^"']+)["']\s*,\s*import\.meta\.url\s*\)/g

/** The value (not type-only) static imports and re-exports of normalised source. */
const importsOf = (source: string): ReadonlyArray<Import> => {
  const found: Array<Import> = []
  for (const m of source.matchAll(importPattern)) {
    if (m[5] !== undefined) {
      found.push({ specifier: m[5] })
      continue
    }
    if (m[2] !== undefined) continue
    const clause = m[3]!.trim()
    const specifier = m[4]!
    const braces = /\{([^}]*)\}/.exec(clause)
    // `import X from`, `import * as X from`, `export * from`, `export * as X from`: the whole module.
    const whole = braces === null || /(^|,)\s*(\*|[A-Za-z_$][\w$]*\s*,)/.test(clause.replace(/\{[^}]*\}/, ""))
    if (whole) {
      found.push({ specifier })
      continue
    }
    const names = braces![1]!.split(",").map((s) => s.trim()).filter((s) => s !== "" && !s.startsWith("type "))
      .map((s) => s.split(/\s+as\s+/)[0]!.trim())
    if (names.length > 0) found.push({ specifier, names })
  }
  return found
}

/** What an index re-exports by name: exported name → the module it comes from; and its `export *` modules. */
interface Reexports {
  readonly named: ReadonlyMap<string, string>
  readonly star: ReadonlyArray<string>
}

const reexportPattern = /(?:^|[;}\n])\s*export\s+(type\s+)?(\*\s*as\s+([A-Za-z_$][\w$]*)|\*|\{([^}]*)\})\s*from\s*["']([^"']+)["']/g

const reexportsOf = (source: string): Reexports => {
  const named = new Map<string, string>()
  const star: Array<string> = []
  for (const m of source.matchAll(reexportPattern)) {
    if (m[1] !== undefined) continue
    const from = m[5]!
    if (m[3] !== undefined) named.set(m[3], from)
    else if (m[4] !== undefined) {
      for (const part of m[4].split(",").map((s) => s.trim()).filter((s) => s !== "" && !s.startsWith("type "))) {
        const [, exported] = /^(?:[\w$]+\s+as\s+)?([\w$]+)$/.exec(part) ?? []
        if (exported !== undefined) named.set(exported, from)
      }
    } else star.push(from)
  }
  return { named, star }
}

// ------------------------------------------------------------------ the workspace

interface Workspace {
  readonly root: string
  /** Package name → its main module (the "." export). */
  readonly packages: ReadonlyMap<string, string>
}

const workspaces = new Map<string, Workspace>()

/** The workspace holding `file`: the nearest folder above it with pnpm-workspace.yaml, and its packages. */
const workspaceOf = (file: string): Workspace => {
  let dir = path.dirname(file)
  while (!fs.existsSync(path.join(dir, "pnpm-workspace.yaml"))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`no pnpm-workspace.yaml above ${file}: a stage's module must sit in the workspace`)
    dir = up
  }
  const known = workspaces.get(dir)
  if (known !== undefined) return known
  const yaml = fs.readFileSync(path.join(dir, "pnpm-workspace.yaml"), "utf8")
  const section = /^packages:\s*\n((?:[ \t]+-.*\n?)*)/m.exec(yaml)?.[1] ?? ""
  const globs = [...section.matchAll(/-\s*["']?([^"'\n]+?)["']?\s*$/gm)].map((m) => m[1]!)
  const folders = globs.flatMap((glob) => {
    if (!glob.endsWith("/*")) return [path.join(dir, glob)]
    const parent = path.join(dir, glob.slice(0, -2))
    return fs.existsSync(parent) ? fs.readdirSync(parent).sort().map((name) => path.join(parent, name)) : []
  })
  const packages = new Map<string, string>()
  for (const folder of folders) {
    const manifest = path.join(folder, "package.json")
    if (!fs.existsSync(manifest)) continue
    const pkg = JSON.parse(fs.readFileSync(manifest, "utf8")) as { name?: string; exports?: unknown; main?: string }
    const exports = pkg.exports as Record<string, unknown> | string | undefined
    const main = typeof exports === "string" ? exports : typeof exports?.["."] === "string" ? exports["."] : pkg.main
    if (pkg.name !== undefined && typeof main === "string") packages.set(pkg.name, path.join(folder, main))
  }
  const workspace = { root: dir, packages }
  workspaces.set(dir, workspace)
  return workspace
}

/** The version of an external package as installed for `from`'s package (node_modules, walking up). */
const versionOf = (name: string, from: string): string => {
  let dir = path.dirname(from)
  for (;;) {
    const manifest = path.join(dir, "node_modules", name, "package.json")
    if (fs.existsSync(manifest)) return (JSON.parse(fs.readFileSync(manifest, "utf8")) as { version?: string }).version ?? "?"
    const up = path.dirname(dir)
    if (up === dir) return "not installed"
    dir = up
  }
}

const packageName = (specifier: string) => {
  const parts = specifier.split("/")
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!
}

// ------------------------------------------------------------------ fingerprints

interface Parsed {
  readonly hash: string
  readonly imports: ReadonlyArray<Import>
  readonly reexports: Reexports
  readonly assets: ReadonlyArray<string>
}

const parsed = new Map<string, Parsed>()

const parse = (file: string): Parsed => {
  const known = parsed.get(file)
  if (known !== undefined) return known
  const source = normalise(fs.readFileSync(file, "utf8"))
  const result: Parsed = {
    hash: sha256(source),
    imports: importsOf(source),
    reexports: reexportsOf(source),
    // Files only: a folder a module lists (a plugin folder) is not code it runs.
    assets: [...source.matchAll(assetPattern)].map((m) => path.resolve(path.dirname(file), m[1]!))
      .filter((asset) => fs.statSync(asset, { throwIfNoEntry: false })?.isFile() === true)
  }
  parsed.set(file, result)
  return result
}

/** The modules of `index` that export `names` (every module it re-exports when a name is not found by name). */
const exporters = (index: string, names: ReadonlyArray<string> | undefined): ReadonlyArray<string> => {
  const { named, star } = parse(index).reexports
  if (names === undefined) return [index]
  const resolve = (from: string) => path.resolve(path.dirname(index), from)
  const files = new Set<string>()
  for (const name of names) {
    const from = named.get(name)
    if (from !== undefined) files.add(resolve(from))
    else {
      // Declared in the index itself, or behind an `export *`.
      files.add(index)
      for (const s of star) files.add(resolve(s))
    }
  }
  return [...files]
}

interface Closure {
  /** Repository-relative path → sha256 of its normalised source (of its bytes, for assets). */
  readonly files: ReadonlyMap<string, string>
  /** External packages as name@version. */
  readonly externals: ReadonlySet<string>
}

/** The module, and the project modules and packages it reaches, not entering excluded modules. */
const closure = (code: Code): Closure => {
  const root = fileURLToPath(code.module)
  const excluded = new Set((code.exclude ?? []).map((m) => fileURLToPath(m)))
  const workspace = workspaceOf(root)
  const relative = (file: string) => path.relative(workspace.root, file).split(path.sep).join("/")
  const isIndex = (file: string) => parse(file).reexports.named.size > 0 || parse(file).reexports.star.length > 0
  const files = new Map<string, string>()
  const externals = new Set<string>()
  const pending = [root]
  while (pending.length > 0) {
    const file = pending.pop()!
    if (files.has(relative(file))) continue
    const module = parse(file)
    files.set(relative(file), module.hash)
    for (const asset of module.assets) files.set(relative(asset), sha256(fs.readFileSync(asset)))
    for (const { specifier, names } of module.imports) {
      if (specifier.startsWith("node:")) continue
      const target = specifier.startsWith(".") ? path.resolve(path.dirname(file), specifier) : workspace.packages.get(specifier)
      if (target === undefined) {
        const name = packageName(specifier)
        externals.add(`${name}@${versionOf(name, file)}`)
        continue
      }
      // An index is followed through what it re-exports by the names imported.
      for (const f of isIndex(target) ? exporters(target, names) : [target]) if (!excluded.has(f)) pending.push(f)
    }
  }
  return { files, externals }
}

const memo = new Map<string, string>()

/** The fingerprint of a module and the project code it imports (24 hex digits of a sha256). */
export const of = (code: Code): string => {
  const memoKey = JSON.stringify([code.module, [...(code.exclude ?? [])].sort()])
  const known = memo.get(memoKey)
  if (known !== undefined) return known
  const { files, externals } = closure(code)
  const fingerprint = sha256(JSON.stringify({
    files: [...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    packages: [...externals].sort()
  })).slice(0, digits)
  memo.set(memoKey, fingerprint)
  return fingerprint
}

/** The files a fingerprint covers, repository-relative and sorted, and the external packages. */
export const covers = (code: Code): { readonly files: ReadonlyArray<string>; readonly packages: ReadonlyArray<string> } => {
  const { files, externals } = closure(code)
  return { files: [...files.keys()].sort(), packages: [...externals].sort() }
}
