import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { fileURLToPath } from "node:url"
import { AdamW, Compute, HostTensor, ParamTree, TorchFile, tidy } from "@tinyfusion/tensor"
import { Fixtures, MarFile, MarReference, MarStateDict } from "@tinyfusion/models"
import * as MarPretrain from "./MarPretrain.ts"
import * as Trainer from "./Trainer.ts"

/** The tiny MAR with one block per half and a one-block head, so every key can be listed by hand. */
const one = { ...Fixtures.mar, encoderDepth: 1, decoderDepth: 1, difflossDepth: 1 }

describe("MAR's pre-training recipe", () => {
  it("weight decay on exactly add_weight_decay's keys: matrices and embeddings outside the head", () => {
    const optimiser = Trainer.optimiser(MarPretrain.mini.training)
    const shapes = MarStateDict.referenceShapes(one)
    const decayed = shapes.filter(([key, shape]) => AdamW.groupOf(optimiser, key, shape).weightDecay > 0).map(([key]) => key)
    // main_mar.py's groups: no decay where len(shape) == 1, name ends in ".bias", or "diffloss" is in the name.
    assert.deepStrictEqual(decayed.toSorted(), [
      "class_emb.weight",
      "decoder_blocks.0.attn.proj.weight",
      "decoder_blocks.0.attn.qkv.weight",
      "decoder_blocks.0.mlp.fc1.weight",
      "decoder_blocks.0.mlp.fc2.weight",
      "decoder_embed.weight",
      "decoder_pos_embed_learned",
      "diffusion_pos_embed_learned",
      "encoder_blocks.0.attn.proj.weight",
      "encoder_blocks.0.attn.qkv.weight",
      "encoder_blocks.0.mlp.fc1.weight",
      "encoder_blocks.0.mlp.fc2.weight",
      "encoder_pos_embed_learned",
      "fake_latent",
      "mask_token",
      "z_proj.weight"
    ])
    assert.strictEqual(shapes.length, 60)
    assert.isTrue(shapes.filter(([k]) => k.startsWith("diffloss.")).every(([k, s]) => AdamW.groupOf(optimiser, k, s).weightDecay === 0))
    assert.deepStrictEqual(optimiser.groups.map((g) => [g.name, g.lr, g.weightDecay]), [["no-decay", 1e-4, 0], ["decay", 1e-4, 0.02]])
    assert.deepStrictEqual([optimiser.beta1, optimiser.beta2, optimiser.eps], [0.9, 0.95, 1e-8])
  })

  it("the learning rate: blr · batch / 256, a quarter of the steps warming up linearly from 0, then constant", () => {
    const paper = MarPretrain.recipeTraining(250_000, 2048)
    assert.strictEqual(paper.lr, 8e-4)
    assert.strictEqual(paper.warmup, 62_500) // 100 of 400 epochs of 625 steps
    const settings = MarPretrain.mini.training
    assert.deepStrictEqual([settings.lr, settings.warmup, settings.maxGradNorm, settings.weightDecay], [1e-4, 1250, 3, 0.02])
    const lr = (step: number) => Trainer.lrScale(settings)(step) * settings.lr
    assert.strictEqual(lr(0), 0)
    assert.closeTo(lr(1), 1e-4 / 1250, 1e-20)
    assert.closeTo(lr(625), 5e-5, 1e-20)
    assert.closeTo(lr(1249), (1e-4 * 1249) / 1250, 1e-20)
    assert.strictEqual(lr(1250), 1e-4)
    assert.strictEqual(lr(4999), 1e-4)
    // With a floor the cosine spans the steps after the warm-up (lr_sched's "cosine").
    const cosine = { ...settings, lrFloor: 0 }
    const c = (step: number) => Trainer.lrScale(cosine)(step) * cosine.lr
    assert.closeTo(c(1250 + 1875), 5e-5, 1e-18)
    assert.closeTo(c(4999), 1e-4 * 0.5 * (1 + Math.cos((Math.PI * 3749) / 3750)), 1e-18)
  })

  it.effect("the partition and one AdamW step equal the reference's own (misc.add_weight_decay, torch.optim.AdamW) on its checkpoint", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      const optimiser = Trainer.optimiser({ ...MarPretrain.mini.training, lr: 1e-2 })
      const shapes = MarStateDict.referenceShapes(fixture.config)
      const exempt = shapes.filter(([key, shape]) => AdamW.groupOf(optimiser, key, shape).weightDecay === 0).map(([key]) => key)
      assert.deepStrictEqual(exempt, fixture.noDecay)
      // The optimizer's groups list add_weight_decay's no-decay parameters, then the decayed, each in named_parameters order.
      const order = [...fixture.noDecay, ...fixture.order.filter((k) => !fixture.noDecay.includes(k))]
      const path = fileURLToPath(MarReference.checkpoint)
      const grads = yield* Effect.scoped(Effect.gen(function*() {
        const file = yield* TorchFile.open(path)
        const entry = (value: TorchFile.Value, key: TorchFile.Value) => (value as TorchFile.Dict).get(key)!
        const state = entry(entry(file.root, "optimizer"), "state") as TorchFile.Dict
        const out: Array<readonly [string, HostTensor.HostTensor]> = []
        for (const [i, key] of order.entries()) {
          // After one step exp_avg = (1 − β1)·g: the clipped gradient the reference stepped with.
          const m = yield* file.load(entry(entry(state, i), "exp_avg") as TorchFile.TensorRef)
          out.push([key, HostTensor.float32(m.shape, Float32Array.from(m.data, (x) => x / 0.1))])
        }
        return out
      }))
      const after = yield* MarFile.read(path, { entry: "model", infer: { heads: 2 } })
      const stepped = tidy(() => {
        const params = HostTensor.treeToTensors(fixture.params)
        const next = AdamW.update(optimiser, AdamW.init(params), params, HostTensor.treeToTensors(ParamTree.unflatten(grads) as HostTensor.HostTree))
        return ParamTree.flattenTensors(next.params).map(([k, t]) => [k, t.dataSync()] as const)
      })
      const expected = new Map(ParamTree.flatten(after.params, HostTensor.isHostTensor))
      let worst = 0
      for (const [key, values] of stepped) {
        const reference = expected.get(key)!.data
        for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i]! - reference[i]!))
      }
      assert.isBelow(worst, 2e-6)
    }).pipe(Effect.provide(Compute.cpu)))
})
