import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Console, Effect, FileSystem, Layer, Logger } from "effect"
import { fileURLToPath } from "node:url"
import { Command } from "effect/cli"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Config, Init, MarReference, MarStateDict, ModelArtifact, StateDict } from "@tinyfusion/models"
import { Fixtures, PruneStage, Width } from "@tinyfusion/pruning"
import { Compute, Hashed, HostTensor, ParamTree, Safetensors, WeightsFile } from "@tinyfusion/tensor"
import { checkpoint } from "./checkpoint.ts"

const run = Command.runWith(checkpoint, { version: "test" })

/** What the command prints, kept in `lines` rather than shown. */
const captured = () => {
  const lines: Array<string> = []
  const quiet = Effect.provideService(Console.Console, Object.assign(Object.create(console), { log: (...xs: Array<unknown>) => lines.push(xs.join(" ")) }))
  return { lines, quiet }
}

describe("tinyfusion checkpoint", () => {
  it.effect("import of a BF16 reference file, then export, reproduces the file; mismatches fail and write nothing", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const config = yield* Config.make("mini", { depth: 2, hiddenSize: 16 })
      const params = Init.host(config, 4)
      const reference = yield* StateDict.encode(config, params, { dtype: "BF16" })
      yield* fs.writeFile(`${dir}/ref.safetensors`, reference)

      yield* run(["import", `${dir}/ref.safetensors`, "--out", `${dir}/ours.safetensors`, "--model", "mini", "--depth", "2", "--hidden", "16"])
      const ours = yield* Safetensors.decode(yield* fs.readFile(`${dir}/ours.safetensors`))
      assert.deepStrictEqual([...new Set(ours.dtypes.values())], ["F32"])
      assert.deepStrictEqual(JSON.parse(ours.metadata[StateDict.configKey]!), config)

      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/back.safetensors`, "--dtype", "bf16"])
      assert.deepStrictEqual(yield* fs.readFile(`${dir}/back.safetensors`), reference)
      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/back32.safetensors`])
      const back = yield* Safetensors.decode(yield* fs.readFile(`${dir}/back32.safetensors`))
      const original = new Map(ParamTree.flatten(params, HostTensor.isHostTensor))
      assert.deepStrictEqual([...back.tensors.keys()].sort(), [...original.keys()].sort())
      for (const [key, t] of back.tensors) assert.isTrue(HostTensor.bitEqual(t, ours.tensors.get(key)!), key)

      const wrong = yield* Effect.flip(run(["import", `${dir}/ref.safetensors`, "--out", `${dir}/bad.safetensors`, "--model", "mini", "--depth", "3", "--hidden", "16"]))
      assert.strictEqual(wrong._tag, "StateDictMismatch")
      assert.match(wrong.message, /10 mismatches:\n  missing blocks\.2\.attn\.qkv\.weight \[48, 16\]/)
      assert.isFalse(yield* fs.exists(`${dir}/bad.safetensors`))
      const bare = yield* Safetensors.decode(reference)
      yield* fs.writeFile(`${dir}/plain.safetensors`, Safetensors.encode(bare.tensors))
      const noConfig = yield* Effect.flip(run(["export", `${dir}/plain.safetensors`, "--out", `${dir}/x.safetensors`]))
      assert.strictEqual(noConfig._tag, "InvalidConfig")
      assert.match(noConfig.message, /no tinyfusion\.dit metadata; name its shape with --model/)
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))

  it.effect("import of DiT's .pt files: the config from the shapes, --heads asked for an unknown width, the ema entry of a training checkpoint", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const { lines, quiet } = captured()
      const bare = fileURLToPath(new URL("../../../models/src/fixtures/torch/dit-bare.pt", import.meta.url))
      const train = fileURLToPath(new URL("../../../models/src/fixtures/torch/dit-train.pt", import.meta.url))
      const asked = yield* Effect.flip(run(["import", bare, "--out", `${dir}/a.safetensors`]).pipe(quiet))
      assert.match(asked.message, /hidden width 16 names no known model .*; give --heads/)
      assert.isFalse(yield* fs.exists(`${dir}/a.safetensors`))
      yield* run(["import", train, "--out", `${dir}/b.safetensors`, "--heads", "2"]).pipe(quiet)
      assert.match(lines.join("\n"), /imported .*dit-train\.pt \(torch, entry ema of model, ema, opt, args, train_steps; left unread: model, opt, args, train_steps\)/)
      assert.match(lines.join("\n"), /config inferred from the tensor shapes; assumed class dropout 0\.1/)
      const ours = yield* Safetensors.decode(yield* fs.readFile(`${dir}/b.safetensors`))
      assert.deepStrictEqual(JSON.parse(ours.metadata[StateDict.configKey]!), {
        inputSize: 8, patchSize: 2, inChannels: 4, hiddenSize: 16, depth: 2, numHeads: 2, mlpRatio: 4, numClasses: 10, classDropoutProb: 0.1, learnSigma: true
      })
      yield* run(["import", train, "--out", `${dir}/c.safetensors`, "--heads", "2", "--weights", "model", "--class-dropout", "0"]).pipe(quiet)
      const raw = yield* Safetensors.decode(yield* fs.readFile(`${dir}/c.safetensors`))
      assert.strictEqual(JSON.parse(raw.metadata[StateDict.configKey]!).numClasses, 11)
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))

  it.effect("a width-pruned DiT (Diff-Pruning's shape) imports without our metadata: head and MLP widths from the shapes", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const { lines, quiet } = captured()
      // Width 32 (4 heads of 8) narrowed to 20: 3 whole heads of 8 (24 ≠ 20 wide) and MLP 80 (4 × 20, the default).
      const pruned = Width.narrowed(yield* Config.make("mini", { depth: 2, hiddenSize: 32 }), 20)
      assert.deepStrictEqual([pruned.hiddenSize, pruned.numHeads, pruned.headDim, pruned.mlpHidden], [20, 3, 8, 80])
      const params = Init.host(pruned, 5)
      yield* fs.writeFile(`${dir}/ours.safetensors`, yield* StateDict.encode(pruned, params))
      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/ref.safetensors`]).pipe(quiet)
      // The reference code loads it and saves its state_dict again: our metadata is gone.
      const exported = yield* Safetensors.decode(yield* fs.readFile(`${dir}/ref.safetensors`))
      yield* fs.writeFile(`${dir}/plain.safetensors`, Safetensors.encode(exported.tensors))
      const asked = yield* Effect.flip(run(["import", `${dir}/plain.safetensors`, "--out", `${dir}/a.safetensors`]).pipe(quiet))
      assert.match(asked.message, /hidden width 20 names no known model .*; give --heads/)
      yield* run(["import", `${dir}/plain.safetensors`, "--out", `${dir}/back.safetensors`, "--heads", "3"]).pipe(quiet)
      const back = yield* Safetensors.decode(yield* fs.readFile(`${dir}/back.safetensors`))
      const { mlpHidden: _, ...withoutMlp } = pruned
      assert.deepStrictEqual(JSON.parse(back.metadata[StateDict.configKey]!), withoutMlp)
      for (const [key, t] of ParamTree.flatten(params, HostTensor.isHostTensor)) assert.isTrue(HostTensor.bitEqual(t, back.tensors.get(key)!), key)
      // A heads count the qkv rows do not split into is refused, naming them.
      const odd = yield* Effect.flip(run(["import", `${dir}/plain.safetensors`, "--out", `${dir}/b.safetensors`, "--heads", "5"]).pipe(quiet))
      assert.match(odd.message, /blocks\.0\.attn\.qkv\.weight has 72 rows, not 3 × 5 heads × a head width/)

      // torch.save of a width-pruned state_dict (parity/write_fixtures.py): 3 heads of 8 in a 16-wide stream, MLP 40.
      const torchFile = fileURLToPath(new URL("../../../models/src/fixtures/torch/dit-width.pt", import.meta.url))
      yield* run(["import", torchFile, "--out", `${dir}/c.safetensors`, "--heads", "3"]).pipe(quiet)
      assert.match(lines.join("\n"), /DiT\(depth 2, hidden 16, heads 3 × 8, MLP 40, patch 2, 8×8×4, 10 classes, learn_sigma\): [\d,]+ parameters/)
      const fromTorch = yield* Safetensors.decode(yield* fs.readFile(`${dir}/c.safetensors`))
      assert.deepStrictEqual(JSON.parse(fromTorch.metadata[StateDict.configKey]!), {
        inputSize: 8, patchSize: 2, inChannels: 4, hiddenSize: 16, depth: 2, numHeads: 3, mlpRatio: 4, headDim: 8, mlpHidden: 40,
        numClasses: 10, classDropoutProb: 0.1, learnSigma: true
      })
      assert.deepStrictEqual([...fromTorch.tensors.get("blocks.1.mlp.fc2.weight")!.data], [...Hashed.values("width/blocks.1.mlp.fc2.weight", 16 * 40, -1, 1)])
      assert.deepStrictEqual(fromTorch.tensors.get("blocks.0.attn.proj.weight")!.shape, [16, 24])
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))

  it.effect("import --family mar of main_mar.py's checkpoint-last.pth (model_ema, config from shapes and args), export to the reference keys; misfit flags refused", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const { lines, quiet } = captured()
      const pth = fileURLToPath(MarReference.checkpoint)
      const fixture = yield* MarReference.load
      yield* run(["import", pth, "--family", "mar", "--heads", "2", "--out", `${dir}/ours.safetensors`]).pipe(quiet)
      assert.match(lines.join("\n"), /entry model_ema of model, model_ema, optimizer, epoch, scaler, args; left unread: model, optimizer, epoch, scaler, args\)/)
      assert.match(lines.join("\n"), /config inferred from the tensor shapes and the checkpoint's args\nMAR\(encoder 2×16, decoder 2×12, .*\): 16,080 parameters/)
      const ours = yield* Safetensors.decode(yield* fs.readFile(`${dir}/ours.safetensors`))
      assert.deepStrictEqual(JSON.parse(ours.metadata[MarStateDict.configKey]!), fixture.config)
      assert.strictEqual(ours.metadata[StateDict.familyKey], "mar")

      yield* run(["export", `${dir}/ours.safetensors`, "--out", `${dir}/back.safetensors`]).pipe(quiet)
      const back = yield* Safetensors.decode(yield* fs.readFile(`${dir}/back.safetensors`))
      const ema = yield* WeightsFile.read(pth)
      assert.deepStrictEqual([...back.tensors.keys()].sort(), [...fixture.order].sort())
      for (const [key, t] of back.tensors) assert.isTrue(HostTensor.bitEqual(t, ema.tensors.get(key)!), key)

      const depth = yield* Effect.flip(run(["import", pth, "--family", "mar", "--depth", "2", "--out", `${dir}/x.safetensors`]).pipe(quiet))
      assert.match(depth.message, /a MAR takes its shape from the file \(or --model, --heads, --patch\); not --depth/)
      const dit = yield* Effect.flip(run(["import", pth, "--family", "mar", "--model", "DiT-S/2", "--out", `${dir}/x.safetensors`]).pipe(quiet))
      assert.match(dit.message, /--model DiT-S\/2 is not a MAR preset \(MAR-B, MAR-L, MAR-H, TinyMAR-D16, mini, mini-base\)/)
      const base = yield* Effect.flip(run(["import", pth, "--family", "mar", "--model", "mini-base", "--out", `${dir}/x.safetensors`]).pipe(quiet))
      assert.strictEqual(base._tag, "StateDictMismatch")
      const asDit = yield* Effect.flip(run(["import", pth, "--out", `${dir}/x.safetensors`]).pipe(quiet))
      assert.match(asDit.message, /no x_embedder\.proj\.weight: not a DiT\/SiT state_dict/)
      assert.isFalse(yield* fs.exists(`${dir}/x.safetensors`))
    }).pipe(Effect.scoped, Effect.provide(NodeServices.layer)))

  it.live("a pruned model from the prune-export stage exports with exactly the reference keys of its depth", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const config = Fixtures.tiny(6)
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config, weights: { random: 0 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const pruned = yield* Fixtures.prune({ method: "oracle", keep: 3, seed: 0, calibration: 4 }, { teacher, data })
      const exported = yield* Stage.run(PruneStage.ExportStage, {}, { decision: pruned, teacher })
      yield* run(["export", exported.path(ModelArtifact.files.raw), "--out", `${dir}/ref.safetensors`])
      const ref = yield* Safetensors.decode(yield* fs.readFile(`${dir}/ref.safetensors`))
      const shapes = StateDict.referenceShapes({ ...config, depth: 3 })
      assert.deepStrictEqual([...ref.tensors.keys()].sort(), shapes.map(([k]) => k).sort())
      const model = yield* Safetensors.decode(yield* fs.readFile(exported.path(ModelArtifact.files.raw)))
      for (const [key, t] of ref.tensors) assert.isTrue(HostTensor.bitEqual(t, model.tensors.get(key)!), key)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([])))))
})
