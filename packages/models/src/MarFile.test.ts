import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { fileURLToPath } from "node:url"
import { Compute, HostTensor, ParamTree, tf, tidy } from "@tinyfusion/tensor"
import * as Mar from "./Mar.ts"
import * as MarFile from "./MarFile.ts"
import * as MarReference from "./fixtures/MarReference.ts"
import * as Fixtures from "./fixtures/Tiny.ts"

const checkpoint = fileURLToPath(MarReference.checkpoint)

/** max |ours − reference| / max |reference| of z for the fixture's inputs through `params`. */
const zError = (fixture: Effect.Success<typeof MarReference.load>, params: HostTensor.HostTree, expected: string) => {
  const latents = fixture.tensor("in.latents")
  const z = tidy(() => {
    const tokens = Mar.patchify(tf.tensor4d(latents.data, latents.shape as [number, number, number, number]), fixture.config.patchSize)
    const mask = Mar.mask(fixture.tensor("in.mask").data, 3, 4)
    return Mar.forward(fixture.config, HostTensor.treeToTensors(params), { tokens, mask, labels: Array.from(fixture.tensor("in.labels").data) })
  })
  const got = z.dataSync()
  const reference = fixture.exact(expected)
  assert.strictEqual(got.length, reference.length)
  let worst = 0
  let scale = 0
  for (let i = 0; i < got.length; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - reference[i]!))
    scale = Math.max(scale, Math.abs(reference[i]!))
  }
  assert.isAbove(scale, 0.5)
  return worst / scale
}

describe("MarFile: main_mar.py's checkpoint-last.pth", () => {
  it.effect("the config from the shapes and the checkpoint's args; model_ema by default, model on request; z equals the reference's on both", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      const ema = yield* MarFile.read(checkpoint, { infer: { heads: 2 } })
      assert.deepStrictEqual(ema.config, Fixtures.mar)
      assert.strictEqual(ema.configFrom, "inferred from the tensor shapes and the checkpoint's args")
      assert.strictEqual(ema.weights.source, "entry model_ema of model, model_ema, optimizer, epoch, scaler, args")
      assert.strictEqual(ema.weights.entry, "ema")
      assert.deepStrictEqual(ema.weights.unread, ["model", "optimizer", "epoch", "scaler", "args"])
      assert.strictEqual(ema.weights.args?.["model"], "mar_tiny")
      assert.isBelow(zError(fixture, ema.params, "out.ckpt_z_ema"), 1e-5)

      const model = yield* MarFile.read(checkpoint, { entry: "model", infer: { heads: 2 } })
      assert.strictEqual(model.weights.entry, "model")
      assert.isBelow(zError(fixture, model.params, "out.ckpt_z_model"), 1e-5)
      // One AdamW step apart: the two entries differ.
      const a = new Map(ParamTree.flatten(ema.params, HostTensor.isHostTensor))
      const b = ParamTree.flatten(model.params, HostTensor.isHostTensor)
      assert.isTrue(b.some(([k, t]) => !HostTensor.bitEqual(t, a.get(k)!)))
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("heads asked when nothing names them; a preset that does not fit names the mismatches; a patch the args contradict is refused", () =>
    Effect.gen(function*() {
      const asked = yield* Effect.flip(MarFile.read(checkpoint))
      assert.match(asked.message, /width 16 names no known MAR .*; give --heads/)
      const wrong = yield* Effect.flip(MarFile.read(checkpoint, { preset: "MAR-B" }))
      assert.strictEqual(wrong._tag, "StateDictMismatch")
      assert.match(wrong.message, /fake_latent is \[1, 16\], expected \[1, 768\]/)
      // Patch 1 would make the 4 tokens of 8 features a 2×2 latent of 8 channels; the args say 4×4 (img_size 4, vae_stride 1).
      const contradicted = yield* Effect.flip(MarFile.read(checkpoint, { infer: { heads: 2, patch: 1 } }))
      assert.match(contradicted.message, /args img_size 4 \/ vae_stride 1 is not the 2 latent side of 4 tokens of patch 1/)
    }))
})
