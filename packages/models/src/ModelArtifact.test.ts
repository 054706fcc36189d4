import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as Checkpoint from "./Checkpoint.ts"
import * as Config from "./Config.ts"
import * as Init from "./Init.ts"
import * as ModelArtifact from "./ModelArtifact.ts"
import * as ModelFile from "./ModelFile.ts"

const Tiny = Stage.make({
  name: "tiny-model",
  version: 1,
  config: Schema.Struct({ seed: Schema.Int }),
  output: ModelArtifact.Output,
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const model = yield* Config.make("mini", { depth: 2, hiddenSize: 16, numHeads: 2, inputSize: 4 })
      return yield* ModelArtifact.write(ctx, {
        family: "sit",
        config: model,
        params: Init.host(model, config.seed),
        ema: Init.host(model, config.seed + 1)
      })
    })
})

const flat = (tree: HostTensor.HostTree) => ParamTree.flatten(tree, HostTensor.isHostTensor)

describe("ModelArtifact", () => {
  it.effect("writes reference-keyed raw and EMA weights and reads either back bit for bit", () =>
    Effect.gen(function*() {
      const artifact = yield* Stage.run(Tiny, { seed: 3 }, {})
      assert.strictEqual(artifact.output.family, "sit")
      assert.strictEqual(artifact.output.parameters, flat(Init.host(artifact.output.config, 3)).reduce((n, [, t]) => n + t.data.length, 0))
      const raw = yield* ModelArtifact.read(artifact, { ema: false })
      const ema = yield* ModelArtifact.read(artifact, { ema: true })
      assert.isFalse(raw.ema)
      assert.isTrue(ema.ema)
      const expect = (got: HostTensor.HostTree, seed: number) => {
        const want = new Map(flat(Init.host(artifact.output.config, seed)))
        for (const [key, t] of flat(got)) assert.isTrue(HostTensor.bitEqual(t, want.get(key)!), key)
        assert.strictEqual(flat(got).length, want.size)
      }
      expect(raw.params, 3)
      expect(ema.params, 4)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(Layer.mergeAll(NodeServices.layer))))

  it.effect("open: a model artifact by key with a stand-in for its producer, which feeds a downstream stage", () =>
    Effect.gen(function*() {
      const made = yield* Stage.run(Tiny, { seed: 5 }, {})
      const { stage, artifact } = yield* ModelArtifact.open(made.key)
      assert.strictEqual(stage.name, "tiny-model")
      assert.deepStrictEqual(artifact.output, made.output)
      const Depth = Stage.make({
        name: "depth",
        version: 1,
        config: Schema.Struct({}),
        output: Schema.Struct({ depth: Schema.Int }),
        inputs: { model: stage },
        run: (_config, { model }) => Effect.succeed({ depth: model.output.config.depth })
      })
      const depth = yield* Stage.run(Depth, {}, { model: artifact })
      assert.strictEqual(depth.output.depth, 2)
      assert.strictEqual(depth.manifest.inputs["model"], made.key)
      assert.match((yield* Effect.flip(ModelArtifact.open("tiny-model-000000000000000000000000"))).message, /no model artifact .*nothing committed/)
      // An artifact whose output is not a model's.
      assert.match((yield* Effect.flip(ModelArtifact.open(depth.key))).message, /no depth artifact .*: output does not decode/)
      assert.match((yield* Effect.flip(ModelArtifact.open("a/b"))).message, /not a key/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(Layer.mergeAll(NodeServices.layer))))

  it.effect("model-file: our checkpoint file becomes a model artifact keyed by its contents, not its path", () =>
    Effect.gen(function*() {
      const model = yield* Config.make("mini", { depth: 1, hiddenSize: 16, numHeads: 2, inputSize: 4 })
      const bytes = yield* Checkpoint.encode(model, Init.host(model, 2))
      const { stage, config } = yield* ModelFile.describe(bytes, "dit", "d1.safetensors")
      assert.deepStrictEqual(config.config, model)
      const imported = yield* Stage.run(stage, config, {})
      assert.deepStrictEqual(imported.output, { family: "dit", config: model, parameters: ModelArtifact.parameterCount(model) })
      const read = yield* ModelArtifact.read(imported, { ema: true })
      assert.isFalse(read.ema)
      const again = yield* ModelFile.describe(Uint8Array.from(bytes), "dit", "elsewhere.safetensors")
      assert.isTrue((yield* Stage.run(again.stage, again.config, {})).cached)
      // Other bytes under the same config: the stage refuses them.
      const other = yield* Checkpoint.encode(model, Init.host(model, 3))
      const sit: ModelFile.ModelFileConfig = { ...config, family: "sit" }
      const changed = yield* Effect.flip(Stage.run(ModelFile.stage(other), sit, {}))
      assert.match(changed.message, /sha256 is [0-9a-f]{64}, the stage config names/)
      const bare = Safetensors.encode(ParamTree.flatten(Init.host(model, 2), HostTensor.isHostTensor))
      assert.match((yield* Effect.flip(ModelFile.describe(bare, "dit", "bare.safetensors"))).message, /bare.safetensors carries no tinyfusion.dit metadata/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(Layer.mergeAll(NodeServices.layer))))

  it.effect("a model artifact's files record its family; a file asked to be another family is refused", () =>
    Effect.gen(function*() {
      const model = yield* Config.make("mini", { depth: 1, hiddenSize: 16, numHeads: 2, inputSize: 4 })
      const Sit = Stage.make({
        name: "sit-model",
        version: 1,
        config: Schema.Struct({}),
        output: ModelArtifact.Output,
        run: (_config, _inputs, ctx) => ModelArtifact.write(ctx, { family: "sit", config: model, params: Init.host(model, 1), ema: Init.host(model, 2) })
      })
      const made = yield* Stage.run(Sit, {}, {})
      for (const name of [ModelArtifact.files.raw, ModelArtifact.files.ema]) {
        const bytes = yield* made.bytes(name)
        assert.strictEqual((yield* Safetensors.decode(bytes)).metadata[Checkpoint.familyKey], "sit")
        // Taken out of the store, the file says what it holds: no flag needed, a wrong one refused.
        assert.strictEqual((yield* ModelFile.describe(bytes, undefined, name)).config.family, "sit")
        assert.strictEqual((yield* ModelFile.describe(bytes, "sit", name)).config.family, "sit")
        const wrong = yield* Effect.flip(ModelFile.describe(bytes, "dit", name))
        assert.strictEqual(wrong.message, `${name} holds a sit model (its metadata records the family), not a dit one`)
      }
      // A file that records no family (an imported reference checkpoint) is what it is asked to be, dit by default.
      const plain = yield* Checkpoint.encode(model, Init.host(model, 1))
      assert.deepStrictEqual(
        [(yield* ModelFile.describe(plain, undefined, "p")).config.family, (yield* ModelFile.describe(plain, "sit", "p")).config.family],
        ["dit", "sit"]
      )
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(Layer.mergeAll(NodeServices.layer, Logger.layer([])))))
})
