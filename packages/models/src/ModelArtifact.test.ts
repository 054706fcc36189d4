import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as Init from "./Init.ts"
import * as ModelArtifact from "./ModelArtifact.ts"

const Tiny = Stage.make({
  name: "tiny-model",
  module: import.meta.url,
  config: Schema.Struct({ seed: Schema.Int }),
  output: ModelArtifact.Model,
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

  it.effect("the Model port: any stage's model artifact, opened by key, feeds a stage that needs a model; other outputs do not fit", () =>
    Effect.gen(function*() {
      const made = yield* Stage.run(Tiny, { seed: 5 }, {})
      const Depth = Stage.make({
        name: "depth",
        module: import.meta.url,
        config: Schema.Struct({}),
        output: Schema.Struct({ depth: Schema.Int }),
        inputs: { model: ModelArtifact.Model },
        run: (_config, { model }) => Effect.succeed({ depth: model.output.config.depth })
      })
      const depth = yield* Stage.run(Depth, {}, { model: yield* Stage.open(made.key) })
      assert.strictEqual(depth.output.depth, 2)
      assert.strictEqual(depth.manifest.inputs["model"], made.key)
      const notModel = yield* Effect.flip(Stage.run(Depth, {}, { model: depth }))
      assert.match(notModel.message, /stage depth: input model \(depth artifact depth-\w+\) does not fit: .*\["family"\]/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(Layer.mergeAll(NodeServices.layer))))
})
