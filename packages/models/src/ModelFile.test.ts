import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger, Schema } from "effect"
import { fileURLToPath } from "node:url"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Hashed, HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as Init from "./Init.ts"
import * as ModelArtifact from "./ModelArtifact.ts"
import * as ModelFile from "./ModelFile.ts"

// torch.save files of a tiny DiT (depth 2, width 16, patch 2, 8×8×4, 10 classes, learn_sigma), written by
// parity/write_fixtures.py under Debian's python3-torch: a bare state_dict, and train.py's {model, ema, opt, args}.
const torchFixture = (name: string) => fileURLToPath(new URL(`./fixtures/torch/${name}`, import.meta.url))
const tinyTorch: Config.Config = {
  inputSize: 8,
  patchSize: 2,
  inChannels: 4,
  hiddenSize: 16,
  depth: 2,
  numHeads: 2,
  mlpRatio: 4,
  numClasses: 10,
  classDropoutProb: 0.1,
  learnSigma: true
}

const layers = Layer.provideMerge(ArtifactStore.layerTemp, NodeServices.layer)

const values = (params: HostTensor.HostTree, key: string) =>
  [...(new Map(ParamTree.flatten(params, HostTensor.isHostTensor)).get(key)!.data)]

describe("ModelFile", () => {
  it.effect("our checkpoint file becomes a model artifact keyed by its contents and family, not its path", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const model = yield* Config.make("mini", { depth: 1, hiddenSize: 16, numHeads: 2, inputSize: 4 })
      yield* fs.writeFile(`${dir}/d1.safetensors`, yield* StateDict.encode(model, Init.host(model, 2)))
      const { described: loaded, artifact } = yield* ModelFile.store(`${dir}/d1.safetensors`, { family: "dit" })
      assert.deepStrictEqual(loaded.config, model)
      assert.strictEqual(loaded.configFrom, "from the file's metadata")
      assert.deepStrictEqual(artifact.output, { family: "dit", config: model, parameters: ModelArtifact.parameterCount(model) })
      assert.isFalse((yield* ModelArtifact.read(artifact, { ema: true })).ema)
      yield* fs.copyFile(`${dir}/d1.safetensors`, `${dir}/elsewhere.safetensors`)
      assert.isTrue((yield* ModelFile.store(`${dir}/elsewhere.safetensors`, { family: "dit" })).artifact.cached)
      assert.notStrictEqual((yield* ModelFile.store(`${dir}/d1.safetensors`, { family: "sit" })).artifact.key, artifact.key)
      // The file changed after it was inspected: the stage refuses it.
      const described = yield* ModelFile.inspect(`${dir}/elsewhere.safetensors`, { family: "dit" })
      yield* fs.writeFile(`${dir}/elsewhere.safetensors`, yield* StateDict.encode(model, Init.host(model, 3)))
      const changed = yield* Effect.flip(Stage.run(ModelFile.stage(described), { ...ModelFile.stageConfig(described), entry: "model" as const }, {}))
      assert.match(changed.message, /sha256 is [0-9a-f]{64}, the stage config names/)
    }).pipe(Effect.scoped, Effect.provide(layers)))

  it.effect("a file without our metadata: config from the shapes; heads asked for only when the width names no model", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const model = yield* Config.make("mini", { depth: 2, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
      yield* fs.writeFile(`${dir}/bare.safetensors`, Safetensors.encode(ParamTree.flatten(Init.host(model, 2), HostTensor.isHostTensor)))
      const asked = yield* Effect.flip(ModelFile.read(`${dir}/bare.safetensors`, { family: "dit" }))
      assert.match(asked.message, /hidden width 16 names no known model \(1152: 16 heads, 1024: 16 heads, 768: 12 heads, 384: 6 heads, 128: 4 heads\); give --heads/)
      const read = yield* ModelFile.read(`${dir}/bare.safetensors`, { family: "dit", infer: { heads: 2 } })
      assert.deepStrictEqual(read.config, model)
      assert.match(read.configFrom, /^inferred from the tensor shapes; assumed class dropout 0.1 \(DiT's\): the last of the 4 label rows is the null class/)
      const noNull = yield* ModelFile.read(`${dir}/bare.safetensors`, { family: "dit", infer: { heads: 2, classDropoutProb: 0 } })
      assert.deepStrictEqual([noNull.config.numClasses, noNull.config.classDropoutProb], [4, 0])
      // The DiT-XL/2 shape names its heads.
      const xl = yield* Config.infer(new Map(StateDict.referenceShapes(Config.presets["DiT-XL/2"])))
      assert.deepStrictEqual(xl.config, Config.presets["DiT-XL/2"])
      assert.strictEqual(Config.presetOf(xl.config), "DiT-XL/2")
      assert.strictEqual(ModelFile.describeModel("sit", Config.presets["TinyDiT-D14"]), "TinyDiT-D14: SiT(depth 14, hidden 1152, heads 16, patch 2, 32×32×4, 1000 classes, learn_sigma)")
    }).pipe(Effect.scoped, Effect.provide(layers)))

  it.effect("torch.save files: DiT's bare state_dict, and a training checkpoint's ema (default) or model entry", () =>
    Effect.gen(function*() {
      const bare = yield* ModelFile.read(torchFixture("dit-bare.pt"), { family: "dit", infer: { heads: 2 } })
      assert.deepStrictEqual(bare.config, tinyTorch)
      assert.strictEqual(bare.weights.source, "the file")
      assert.deepStrictEqual(values(bare.params, "blocks.1.mlp.fc2.weight"), [...Hashed.values("bare/blocks.1.mlp.fc2.weight", 16 * 64, -1, 1)])
      assert.deepStrictEqual(ModelFile.stageConfig(bare), { family: "dit", config: tinyTorch, sha256: bare.sha256 })

      const ema = yield* ModelFile.read(torchFixture("dit-train.pt"), { family: "sit", infer: { heads: 2 } })
      assert.strictEqual(ema.weights.source, "entry ema of model, ema, opt, args, train_steps")
      assert.deepStrictEqual(ema.weights.unread, ["model", "opt", "args", "train_steps"])
      assert.deepStrictEqual(values(ema.params, "pos_embed").slice(0, 3), [...Hashed.values("ema/pos_embed", 3, -1, 1)])
      assert.strictEqual(ModelFile.stageConfig(ema).entry, "ema")
      const model = yield* ModelFile.read(torchFixture("dit-train.pt"), { family: "sit", entry: "model", infer: { heads: 2 } })
      // (train.py's model entry; the fixture took one AdamW step on its pos_embed and x_embedder only.)
      assert.deepStrictEqual(values(model.params, "blocks.0.attn.qkv.bias"), [...Hashed.values("model/blocks.0.attn.qkv.bias", 48, -1, 1)])

      const wrong = yield* Effect.flip(ModelFile.read(torchFixture("dit-bare.pt"), { family: "dit", preset: "DiT-S/2" }))
      assert.strictEqual(wrong._tag, "StateDictMismatch")
      assert.include(wrong.message, "pos_embed is [1, 16, 16], expected [1, 256, 384]")
      const missing = yield* Effect.flip(ModelFile.read(torchFixture("absent.pt"), { family: "dit" }))
      assert.match(missing.message, /absent\.pt: file not found/)
    }).pipe(Effect.provide(layers)))

  it.effect("a model artifact's files record its family; a file asked to be another family is refused", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const model = yield* Config.make("mini", { depth: 1, hiddenSize: 16, numHeads: 2, inputSize: 4 })
      const Sit = Stage.make({
        name: "sit-model",
        module: import.meta.url,
        config: Schema.Struct({}),
        output: ModelArtifact.Model,
        run: (_config, _inputs, ctx) => ModelArtifact.write(ctx, { family: "sit", config: model, params: Init.host(model, 1), ema: Init.host(model, 2) })
      })
      const made = yield* Stage.run(Sit, {}, {})
      for (const name of [ModelArtifact.files.raw, ModelArtifact.files.ema]) {
        const bytes = yield* made.bytes(name)
        assert.strictEqual((yield* Safetensors.decode(bytes)).metadata[StateDict.familyKey], "sit")
        // Taken out of the store, the file says what it holds: no flag needed, a wrong one refused.
        const file = `${dir}/${name}`
        yield* fs.writeFile(file, bytes)
        assert.strictEqual((yield* ModelFile.inspect(file, {})).family, "sit")
        assert.strictEqual((yield* ModelFile.inspect(file, { family: "sit" })).family, "sit")
        const wrong = yield* Effect.flip(ModelFile.inspect(file, { family: "dit" }))
        assert.strictEqual(wrong.message, `${file} holds a sit model (its metadata records the family), not a dit one`)
      }
      // A file that records no family (a reference checkpoint imported without --family) is what it is asked to be, dit by default.
      yield* fs.writeFile(`${dir}/plain.safetensors`, yield* StateDict.encode(model, Init.host(model, 1)))
      assert.deepStrictEqual(
        [(yield* ModelFile.inspect(`${dir}/plain.safetensors`, {})).family, (yield* ModelFile.inspect(`${dir}/plain.safetensors`, { family: "sit" })).family],
        ["dit", "sit"]
      )
    }).pipe(Effect.scoped, Effect.provide(layers), Effect.provide(Logger.layer([]))))
})
