import { assert, describe, it } from "@effect/vitest"
import * as Fingerprint from "./Fingerprint.ts"
import { project, workspace } from "./fixtures/Workspace.ts"

const stage = "packages/app/src/Stage.ts"
const fingerprint = (files: Readonly<Record<string, string>>) => Fingerprint.of({ module: workspace(files)(stage) })
const edit = (file: string, f: (text: string) => string) => ({ ...project, [file]: f(project[file]!) })

describe("Fingerprint", () => {
  it("normalise drops comments and blank lines, and keeps strings, templates and regular expressions whole", () => {
    const source = [
      "/** doc */",
      "const a = \"// not a comment\" // a comment",
      "const b = '/* nor this */'   ",
      "",
      "const c = `x ${a /* gone */ + `inner // kept`} // kept too`",
      "const d = s.replace(/\\/\\/*[/]/g, \"\") / 2 // halved",
      "const e = x / y /* ratio */ / z"
    ].join("\r\n")
    assert.strictEqual(
      Fingerprint.normalise(source),
      [
        "const a = \"// not a comment\"",
        "const b = '/* nor this */'",
        "const c = `x ${a   + `inner // kept`} // kept too`",
        "const d = s.replace(/\\/\\/*[/]/g, \"\") / 2",
        "const e = x / y   / z"
      ].join("\n")
    )
    // Unterminated literals: the source is kept as it is (hashing more is safe).
    assert.strictEqual(Fingerprint.normalise("const s = \"open // x"), "const s = \"open // x")
  })

  it("covers the module, the local modules and the package modules it imports by value, and external versions", () => {
    assert.deepStrictEqual(Fingerprint.covers({ module: workspace(project)(stage) }), {
      files: ["packages/app/src/Local.ts", "packages/app/src/Stage.ts", "packages/lib/src/Used.ts"],
      packages: ["ext@1.0.0"]
    })
    const at = workspace(project)
    assert.notInclude(Fingerprint.covers({ module: at(stage), exclude: [at("packages/app/src/Local.ts")] }).files, "packages/app/src/Local.ts")
  })

  it("is the same in another checkout and with CRLF endings; comments, tests, READMEs, types and unimported modules leave it", () => {
    const base = fingerprint(project)
    assert.match(base, /^[0-9a-f]{24}$/)
    assert.strictEqual(fingerprint(project), base)
    assert.strictEqual(fingerprint(Object.fromEntries(Object.entries(project).map(([k, v]) => [k, v.replaceAll("\n", "\r\n")]))), base)
    for (
      const same of [
        edit(stage, (t) => t.replace("// the computation", "// what it computes, explained at length")),
        edit(stage, (t) => t.replace(" * The stage.", " * The stage, documented.")),
        edit("packages/lib/src/Used.ts", (t) => t.replace("Adds one.", "Adds one to x.")),
        edit("packages/app/src/Stage.test.ts", (t) => `${t}run(2)\n`),
        edit("README.md", (t) => `${t}more\n`),
        edit("packages/app/src/Types.ts", (t) => t.replace("n: number", "n: string")),
        edit("packages/lib/src/Unused.ts", () => "export const g = 3\n")
      ]
    ) assert.strictEqual(fingerprint(same), base)
  })

  it("changes with the module's code, an imported module's, or an external package's version", () => {
    const base = fingerprint(project)
    const changed = [
      edit(stage, (t) => t.replace("+ Local.k", "- Local.k")),
      edit("packages/app/src/Local.ts", () => "export const k = 2\n"),
      edit("packages/lib/src/Used.ts", (t) => t.replace("x + 1", "x + 2")),
      edit("packages/app/node_modules/ext/package.json", () => JSON.stringify({ name: "ext", version: "1.0.1" }))
    ].map(fingerprint)
    assert.strictEqual(new Set([base, ...changed]).size, 1 + changed.length)
  })

  it("the fused kernels count by their wasm binary and gemm.c, never by the compiled native addon (its bytes vary with the compiler, its results do not)", () => {
    const { files } = Fingerprint.covers({ module: new URL("../../tensor/src/FusedKernels.ts", import.meta.url).href })
    assert.include(files, "packages/tensor/wasm/kernels.wasm")
    assert.include(files, "packages/tensor/native/gemm.c")
    assert.notInclude(files, "packages/tensor/native/gemm.node")
  })
})
