import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { Compute, HostTensor, ParamTree, tf, tidy, WebGpuFixture } from "@tinyfusion/tensor"
import * as Mar from "./Mar.ts"
import * as MarStateDict from "./MarStateDict.ts"
import * as MarConfig from "./MarConfig.ts"
import * as MarReference from "./fixtures/MarReference.ts"
import * as Fixtures from "./fixtures/Tiny.ts"

const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))

/** max |a − b| over the values, and the largest |b| (so a tolerance is not met by a trivially small reference). */
const compare = (got: ArrayLike<number>, expected: ArrayLike<number>) => {
  assert.strictEqual(got.length, expected.length)
  let worst = 0
  let scale = 0
  for (let i = 0; i < got.length; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - expected[i]!))
    scale = Math.max(scale, Math.abs(expected[i]!))
  }
  return { worst, scale }
}

/** z and the DiffLoss head on the reference fixture, on the layer's backend, against PyTorch's float64 values. */
const referenceParity = Effect.gen(function*() {
  const compute = yield* Compute
  const fixture = yield* MarReference.load
  const { config } = fixture
  const params = HostTensor.treeToTensors(fixture.params)
  const latents = fixture.tensor("in.latents")
  const labels = Array.from(fixture.tensor("in.labels").data)
  const mask = Mar.mask(fixture.tensor("in.mask").data, 3, 4)
  const z = tidy(() => {
    const tokens = Mar.patchify(tf.tensor4d(latents.data, latents.shape as [number, number, number, number]), config.patchSize)
    return Mar.forward(config, params, { tokens, mask, labels })
  })
  assert.deepStrictEqual(z.shape, [3, 4, 12])
  const zDiff = compare(yield* compute.read(z), fixture.exact("out.z"))
  assert.isBelow(zDiff.worst, 1e-4 * zDiff.scale, `z: max |ours − reference| = ${zDiff.worst}`)
  assert.isAbove(zDiff.scale, 0.5)

  // The head on the loss rows (z repeated diffusion_batch_mul times), from the reference's z.
  const steps = Array.from(fixture.tensor("in.steps").data)
  const zRows = tf.tile(tf.tensor2d(Float32Array.from(fixture.exact("out.z")), [12, 12]), [2, 1]) as tf.Tensor2D
  const xt = fixture.tensor("in.x_t")
  const head = tidy(() => Mar.head(params, tf.tensor2d(xt.data, [24, 8]), steps, zRows))
  const headDiff = compare(yield* compute.read(head), fixture.exact("out.head"))
  assert.isBelow(headDiff.worst, 1e-4 * headDiff.scale, `head: max |ours − reference| = ${headDiff.worst}`)
  assert.isAbove(headDiff.scale, 0.5)
  tf.dispose([z, head, zRows])
  ParamTree.dispose(params)
})

describe("MAR", () => {
  it.effect("reference keys in state_dict order; MAR-B/L and TinyMAR-D16 have the reference's parameter counts (README: 208 M, 479 M; paper: 277 M)", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      assert.deepStrictEqual(fixture.config, Fixtures.mar)
      assert.deepStrictEqual(MarStateDict.referenceShapes(fixture.config).map(([k]) => k), fixture.order)
      // Counted on the reference's mar_base/mar_large (DiffLoss 6×1024, 8×1280) under PyTorch.
      assert.strictEqual(MarStateDict.parameterCount(MarConfig.presets["MAR-B"]), 207_924_768)
      assert.strictEqual(MarStateDict.parameterCount(MarConfig.presets["MAR-L"]), 478_326_304)
      assert.strictEqual(Math.round(MarStateDict.parameterCount(MarConfig.presets["TinyMAR-D16"]) / 1e6), 277)
      assert.strictEqual(MarConfig.depth(MarConfig.presets["MAR-L"]), 32)
      assert.strictEqual(MarConfig.depth(MarConfig.presets.mini), 32)
      assert.strictEqual(MarConfig.depth(MarConfig.presets["mini-base"]), 24)
      assert.strictEqual(MarConfig.tokens(MarConfig.presets.mini), 16)
      assert.strictEqual(MarConfig.tokenDim(MarConfig.presets.mini), MarConfig.tokenDim(MarConfig.presets["MAR-L"]))
    }))

  it.effect("z and the DiffLoss head equal the reference (PyTorch, float64) on random weights", () => referenceParity.pipe(Effect.provide(Compute.wasm)))

  it.effect("export → import is bit-exact, with exactly the reference keys; a mismatched file names what differs", () =>
    Effect.gen(function*() {
      const config = MarConfig.presets.mini
      const params = MarStateDict.init(config, 3)
      const bytes = yield* MarStateDict.encode(config, params)
      const loaded = yield* MarStateDict.decode(config, bytes)
      const a = flat(params)
      const b = flat(loaded.params)
      assert.deepStrictEqual([...b.keys()], MarStateDict.referenceShapes(config).map(([k]) => k))
      for (const [k, t] of a) assert.isTrue(HostTensor.bitEqual(t, b.get(k)!), k)
      assert.deepStrictEqual(Option.getOrThrow(yield* MarStateDict.storedConfig(loaded.metadata)), config)
      assert.deepStrictEqual(yield* MarStateDict.encode(config, loaded.params), bytes)
      const shallower = yield* Effect.flip(MarStateDict.decode({ ...config, decoderDepth: 15 }, bytes))
      if (shallower._tag !== "StateDictMismatch") return assert.fail(shallower.message)
      assert.strictEqual(shallower.count, 12)
      assert.match(shallower.mismatches[0]!, /^unexpected decoder_blocks\.15\./)
      // The reference's init: LayerNorms 1 and 0, zero head output, N(0, 0.02) embeddings, Xavier bounds.
      assert.isTrue(a.get("encoder_blocks.0.norm1.weight")!.data.every((v) => v === 1))
      assert.isTrue(a.get("diffloss.net.final_layer.linear.weight")!.data.every((v) => v === 0))
      const std = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length)
      assert.approximately(std(a.get("encoder_pos_embed_learned")!.data as Float32Array), 0.02, 0.002)
      const qkv = a.get("decoder_blocks.3.attn.qkv.weight")!.data as Float32Array
      assert.isAtMost(Math.max(...qkv.map(Math.abs)), Math.sqrt(6 / (384 + 128)))
    }), { timeout: 60_000 })

  it.effect("gates: 1 is the plain model bit for bit, 0 on a block is the model without it; keepBlocks splits the stack into its halves", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      const { config } = fixture
      const params = HostTensor.treeToTensors(fixture.params)
      const latents = fixture.tensor("in.latents")
      const inputs = {
        tokens: Mar.patchify(tf.tensor4d(latents.data, [3, 4, 4, 2]), 2),
        mask: Mar.mask(fixture.tensor("in.mask").data, 3, 4),
        labels: [0, 2, 3]
      }
      const plain = tidy(() => Mar.forward(config, params, inputs))
      const ones = tidy(() => Mar.forward(config, params, inputs, { gates: tf.ones([3, 4]) as tf.Tensor2D }))
      assert.deepStrictEqual(ones.dataSync(), plain.dataSync())
      // Block 1 (the last encoder block) and block 2 (the first decoder block) gated off.
      for (const dropped of [1, 2]) {
        const gates = tf.tensor2d([1, 1, 1, 1].map((_, i) => (i === dropped ? 0 : 1)), [1, 4])
        const mixed = tidy(() => Mar.forwardHidden(config, params, inputs, { gates: tf.tile(gates, [3, 1]) as tf.Tensor2D }))
        const kept = [0, 1, 2, 3].filter((k) => k !== dropped)
        const pruned = Mar.keepBlocks(config, params, kept)
        assert.deepStrictEqual([pruned.config.encoderDepth, pruned.config.decoderDepth], dropped === 1 ? [1, 2] : [2, 1])
        const out = tidy(() => Mar.forward(pruned.config, pruned.params, inputs))
        const diff = compare(mixed.z.dataSync(), out.dataSync())
        assert.isBelow(diff.worst, 1e-6)
        assert.deepStrictEqual(mixed.blocks[dropped]!.output.dataSync(), mixed.blocks[dropped]!.input.dataSync())
        assert.strictEqual(mixed.blocks.length, 4)
        // Encoder blocks see the buffer and the unmasked tokens, decoder blocks every position.
        assert.deepStrictEqual(mixed.blocks[0]!.input.shape, [3, 2 + 2, 16])
        assert.deepStrictEqual(mixed.blocks[3]!.input.shape, [3, 2 + 4, 12])
      }
      // Only decoder blocks left: the encoder is its norm alone, as the reference with encoder_depth 0.
      const decoderOnly = Mar.keepBlocks(config, params, [2, 3])
      assert.strictEqual(decoderOnly.config.encoderDepth, 0)
      assert.isFalse("encoder_blocks" in decoderOnly.params)
      const z = tidy(() => Mar.forward(decoderOnly.config, decoderOnly.params, inputs))
      assert.deepStrictEqual(z.shape, [3, 4, 12])
      assert.throws(() => Mar.keepBlocks(config, params, [2, 1]), /ascending and distinct/)
      assert.throws(() => Mar.mask([1, 0, 0, 0, 1, 1, 0, 0], 2, 4), /sample 1 masks 2 tokens, sample 0 masks 1/)
      const infer = tidy(() => Mar.infer(config, params, inputs))
      assert.deepStrictEqual(infer.dataSync(), plain.dataSync())
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("patchify orders a token's features (c, i, j) as the reference; unpatchify inverts it", () =>
    Effect.gen(function*() {
      // Latent value = 100·row + 10·col + channel on a 4×4×2 grid.
      const values = Float32Array.from({ length: 32 }, (_, k) => 100 * Math.floor(k / 8) + 10 * (Math.floor(k / 2) % 4) + (k % 2))
      const x = tf.tensor4d(values, [1, 4, 4, 2])
      const tokens = Mar.patchify(x, 2)
      assert.deepStrictEqual(tokens.shape, [1, 4, 8])
      // Token 1 (grid row 0, column 1): channel 0 then 1, each over (i, j) of rows 0–1, columns 2–3.
      assert.deepStrictEqual(Array.from(tokens.dataSync().slice(8, 16)), [20, 30, 120, 130, 21, 31, 121, 131])
      assert.deepStrictEqual(Mar.unpatchify(tokens, 2, 2).dataSync(), values)
    }).pipe(Effect.provide(Compute.wasm)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("z and the DiffLoss head equal the reference there too", () => referenceParity.pipe(Effect.provide(Compute.webgpu)), 60_000)
  })
})
