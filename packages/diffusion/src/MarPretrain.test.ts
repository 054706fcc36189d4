import { assert, describe, it } from "@effect/vitest"
import { AdamW } from "@tinyfusion/tensor"
import { Fixtures, MarStateDict } from "@tinyfusion/models"
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
})
