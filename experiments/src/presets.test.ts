import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { MarPretrain, Pretrain } from "@tinyfusion/diffusion"
import { Evaluation } from "@tinyfusion/eval"
import { MarStateDict, MarConfig } from "@tinyfusion/models"
import { grids, seedsOf } from "./grids.ts"
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
      for (const preset of ["quick", "small", "mini"] as const) {
        for (const data of [empty, path.join(empty, "no-such-dir")]) {
          const refused = yield* Effect.flip(Presets.resolve(preset, { data, synthetic: false }))
          assert.match(refused.message, new RegExp(`^preset ${preset}: --data ${data} does not hold Fashion-MNIST \\(missing train-images-idx3-ubyte.gz, `))
        }
      }
      assert.match((yield* Effect.flip(Presets.resolve("mini", { synthetic: false, fashionMnistDir: empty }))).message, /install the Debian package/)
      assert.match((yield* Effect.flip(Presets.resolve("small", { synthetic: true, fashionMnistDir: empty }))).message, /^preset small: runs on Fashion-MNIST only/)
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
      // small and mini run on the whole of Fashion-MNIST, each its own preset.
      for (const name of ["small", "mini"] as const) {
        const resolved = yield* Presets.resolve(name, { data: empty, synthetic: false })
        assert.strictEqual(resolved.preset.name, name)
        assert.strictEqual(resolved.preset.latents.dataset, "fashion-mnist")
      }
      // The grids' budgets resolve to step counts in every preset, shortest to longest.
      for (const p of [Presets.quick("synthetic"), Presets.small, Presets.mini, Presets.paper("images:/x")]) {
        assert.isTrue(p.recovery.steps["10K"] < p.recovery.steps["100K"] && p.recovery.steps["100K"] < p.recovery.steps["500K"], p.name)
        assert.strictEqual(p.teacher.dit.model.depth, 28, p.name)
      }
      assert.deepStrictEqual(Presets.paper("images:/x").recovery.steps, { "100K": 100_000, "500K": 500_000, "10K": 10_000, "40ep": 25_000 })
      // Table 2's MARs: a 32-block MAR-L and a 24-block MAR-B on one loop; TinyMAR recovers for 10% of MAR-L's pre-training.
      for (const p of [Presets.quick("synthetic"), Presets.small, Presets.mini, Presets.paper("images:/x")]) {
        const { large, base } = p.mar
        assert.deepStrictEqual([MarConfig.depth(large.model), MarConfig.depth(base.model)], [32, 24], p.name)
        assert.deepStrictEqual(base.training, large.training, p.name)
      }
      for (const p of [Presets.small, Presets.mini]) assert.strictEqual(p.recovery.steps["40ep"], p.mar.large.training.steps / 10, p.name)
      // At paper scale the MARs take the suite's 32×32×4 latents in 2×2 patches: MAR's 256 tokens of 16 features, its parameter count.
      const paperMar = Presets.paper("images:/x").mar.large.model
      assert.deepStrictEqual([MarConfig.tokens(paperMar), MarConfig.tokenDim(paperMar)], [256, 16])
      assert.strictEqual(MarStateDict.parameterCount(paperMar), MarStateDict.parameterCount(MarConfig.presets["MAR-L"]))
    }).pipe(Effect.provide(NodeServices.layer)))

  it("small answers the key claims with 3 recovery seeds a cell, and its intervals are 95% ones", () => {
    const { small } = Presets
    assert.isTrue(small.evidence)
    const seeds = (id: string) => Math.min(seedsOf(id), small.maxSeeds)
    // The claims issue 21 names: Table 3's pruners against the learnable one, Table 4's schemes and ΔW kinds, Table 5's strategies.
    const key = grids.filter((g) => ["3", "4", "5"].includes(g.table)).flatMap((g) => g.cells.map((c) => c.id))
    assert.includeMembers(key, ["t3/learnable", "t3/shortgpt", "t3/flux-lite", "t3/sensitivity", "t3/min-loss", "t4/7:14-frozen", "t5/masked-kd-2"])
    assert.strictEqual(key.length, 8 + 9 + 6)
    for (const id of key) assert.isAtLeast(seeds(id), 3, id)
    // Six interleaved rounds are the fewest whose median interval reaches 95%; sFID's replicates are a share of FID's.
    assert.isAtLeast(small.speed.rounds, 6)
    for (const protocol of [small.evaluation.full, small.evaluation.short]) {
      assert.isAtLeast(protocol.bootstrap.replicates, 200)
      assert.isAtMost(protocol.bootstrap.spatialReplicates, protocol.bootstrap.replicates)
    }
    // The teacher learns from more latents than any recovery sees.
    const teacher = small.teacher.dit.training
    assert.isAbove(teacher.steps * teacher.batchSize, small.recovery.steps["500K"] * small.recovery.batchSize)
    assert.strictEqual(small.teacher.dit.model.depth, 28)
    // Its own shapes and loops are valid configs (heads divide widths, the cosine floor is below the rate).
    for (const config of [small.teacher.dit, small.teacher.sit]) Schema.decodeUnknownSync(Pretrain.PretrainConfig)(config)
    for (const config of [small.mar.large, small.mar.base]) Schema.decodeUnknownSync(MarPretrain.MarPretrainConfig)(config)
    for (const config of [small.evaluation.full, small.evaluation.short]) Schema.decodeUnknownSync(Evaluation.EvaluationConfig)(config)
  })
})
