import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { MarStateDict, MarConfig } from "@tinyfusion/models"
import * as Presets from "./presets.ts"

describe("presets", () => {
  it.effect("quick runs on Fashion-MNIST's first images when its files are there; only without --data does it fall back, loudly, to the synthetic fixture", () =>
    Effect.gen(function*() {
      const empty = fs.mkdtempSync(path.join(os.tmpdir(), "presets-"))
      const warnings: Array<string> = []
      const fallback = yield* Presets.resolve("quick", { synthetic: false, fashionMnistDir: empty }).pipe(
        Effect.provide(Logger.layer([Logger.make(({ logLevel, message }) => void (logLevel === "Warn" && warnings.push(String(message))))]))
      )
      assert.strictEqual(fallback.preset.autoencoder.dataset, "synthetic")
      assert.match(fallback.dataset, new RegExp(`the built-in synthetic dataset .*Fashion-MNIST was not found in ${empty}`))
      assert.deepStrictEqual(warnings, [
        `Fashion-MNIST was not found in ${empty}: running on the built-in synthetic dataset, whose numbers say nothing about the paper ` +
        "(install the Debian package dataset-fashion-mnist, or pass --data DIR)"
      ])
      // A --data folder without the files (a typo, an empty folder) is refused, for quick and mini alike.
      for (const preset of ["quick", "mini"] as const) {
        for (const data of [empty, path.join(empty, "no-such-dir")]) {
          const refused = yield* Effect.flip(Presets.resolve(preset, { data, synthetic: false }))
          assert.match(refused.message, new RegExp(`^preset ${preset}: --data ${data} does not hold Fashion-MNIST \\(missing train-images-idx3-ubyte.gz, `))
        }
      }
      assert.match((yield* Effect.flip(Presets.resolve("mini", { synthetic: false, fashionMnistDir: empty }))).message, /install the Debian package/)
      assert.match((yield* Effect.flip(Presets.resolve("quick", { data: empty, synthetic: true }))).message, /--synthetic and --data: give one/)
      for (const name of ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]) {
        fs.writeFileSync(path.join(empty, name), "")
      }
      const fashion = yield* Presets.resolve("quick", { data: empty, synthetic: false })
      // Every data stage names the subset, so its artifacts are not the full set's.
      const named = "fashion-mnist[:2048/:512]"
      assert.deepStrictEqual(
        [fashion.preset.autoencoder.dataset, fashion.preset.latents.dataset, fashion.preset.featureNet.dataset, fashion.preset.reference.dataset],
        [named, named, named, named]
      )
      assert.strictEqual((yield* Presets.resolve("quick", { synthetic: true, fashionMnistDir: empty })).preset.latents.dataset, "synthetic")
      // The grids' budgets resolve to step counts in every preset, shortest to longest.
      for (const p of [Presets.quick("synthetic"), Presets.mini, Presets.paper("images:/x")]) {
        assert.isTrue(p.recovery.steps["10K"] < p.recovery.steps["100K"] && p.recovery.steps["100K"] < p.recovery.steps["500K"], p.name)
        assert.strictEqual(p.teacher.dit.model.depth, 28, p.name)
      }
      assert.deepStrictEqual(Presets.paper("images:/x").recovery.steps, { "100K": 100_000, "500K": 500_000, "10K": 10_000, "40ep": 25_000 })
      // Table 2's MARs: a 32-block MAR-L and a 24-block MAR-B on one loop; TinyMAR recovers for 10% of MAR-L's pre-training.
      for (const p of [Presets.quick("synthetic"), Presets.mini, Presets.paper("images:/x")]) {
        const { large, base } = p.mar
        assert.deepStrictEqual([MarConfig.depth(large.model), MarConfig.depth(base.model)], [32, 24], p.name)
        assert.deepStrictEqual(base.training, large.training, p.name)
      }
      assert.strictEqual(Presets.mini.recovery.steps["40ep"], Presets.mini.mar.large.training.steps / 10)
      // At paper scale the MARs take the suite's 32×32×4 latents in 2×2 patches: MAR's 256 tokens of 16 features, its parameter count.
      const paperMar = Presets.paper("images:/x").mar.large.model
      assert.deepStrictEqual([MarConfig.tokens(paperMar), MarConfig.tokenDim(paperMar)], [256, 16])
      assert.strictEqual(MarStateDict.parameterCount(paperMar), MarStateDict.parameterCount(MarConfig.presets["MAR-L"]))
    }).pipe(Effect.provide(NodeServices.layer)))
})
