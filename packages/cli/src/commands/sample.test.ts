import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Dataset, Png, Stages } from "@tinyfusion/data"
import { type Config, Fixtures, Init, ModelArtifact, SdVae, StateDict } from "@tinyfusion/models"
import { HostTensor, Safetensors } from "@tinyfusion/tensor"
import { cli, tinyAutoencoder, tinyStore } from "../fixtures/Commands.ts"

const model: Config.Config = { ...Fixtures.tiny, hiddenSize: 16, depth: 2 }

const Tiny = Stage.make({
  name: "tiny-model",
  module: import.meta.url,
  config: Schema.Struct({ seed: Schema.Int }),
  output: ModelArtifact.Model,
  run: (config, _inputs, ctx) =>
    ModelArtifact.write(ctx, { family: "dit", config: model, params: Init.host(model, config.seed), ema: Init.host(model, config.seed + 1) })
})

const size = (bytes: Uint8Array) => Effect.map(Png.decode(bytes, "samples"), (p) => [p.width, p.height])

describe("tinyfusion sample", () => {
  it.live("grids of the right size from an artifact key or a file, decoded or as latents; bad inputs are named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-sample-" })
      const keys = yield* Effect.gen(function*() {
        const ae = yield* Stage.run(Stages.AutoencoderStage, tinyAutoencoder, {})
        const tiny = yield* Stage.run(Tiny, { seed: 1 }, {})
        yield* fs.writeFile(`${root}/ae.safetensors`, yield* ae.bytes("params.safetensors"))
        return { ae: ae.key, model: tiny.key }
      }).pipe(Effect.provide(tinyStore(root)))
      yield* fs.writeFile(`${root}/model.safetensors`, yield* StateDict.encode(model, Init.host(model, 3)))
      // The model has 2 latent channels: guidance moves all of them unless a case says otherwise; a run without
      // its own --out writes in the temporary folder (a flag is given once).
      const run = (args: ReadonlyArray<string>) =>
        cli([
          "sample", "--backend", "wasm", "--store", root, "--steps", "3", ...args,
          ...(args.includes("--guided-channels") ? [] : ["--guided-channels", "all"]),
          ...(args.includes("--out") ? [] : ["--out", `${root}/default.png`])
        ])

      // Artifact key, decoded through the autoencoder artifact: 2 rows of 3 tiles of 8×8 with 2-pixel gaps.
      const decoded = yield* run(["--model", keys.model, "--autoencoder", keys.ae, "--classes", "0,2", "--per-class", "3", "--out", `${root}/a.png`])
      assert.isTrue(decoded.ok, decoded.failure)
      assert.deepStrictEqual(yield* size(yield* fs.readFile(`${root}/a.png`)), [3 * 8 + 4 * 2, 2 * 8 + 3 * 2])
      assert.match(decoded.lines[0]!, /classes 0,2 × 3, dit .* \(ema\.safetensors\), ddpm 3 steps, cfg 4 \(all\), seed 0, decoded by KL autoencoder \(channels [0-9/]+\) \(scale [0-9.]+\)$/)

      // A file, every class (3 rows), DDIM, latents shown as their 2 channels side by side: tiles of 8×4.
      const latent = yield* run(["--model", `${root}/model.safetensors`, "--per-class", "2", "--sampler", "ddim", "--out", `${root}/b.png`])
      assert.isTrue(latent.ok, latent.failure)
      assert.deepStrictEqual(yield* size(yield* fs.readFile(`${root}/b.png`)), [2 * 8 + 3 * 2, 3 * 4 + 4 * 2])

      // An autoencoder file needs the scale the latents were multiplied by.
      const unscaled = yield* run(["--model", keys.model, "--autoencoder", `${root}/ae.safetensors`, "--out", `${root}/c.png`])
      assert.match(unscaled.failure, /ae\.safetensors: an autoencoder file needs --latent-scale/)
      assert.isFalse(yield* fs.exists(`${root}/c.png`))
      const scaled = yield* run(["--model", keys.model, "--raw", "--autoencoder", `${root}/ae.safetensors`, "--latent-scale", "0.5", "--per-class", "1", "--out", `${root}/c.png`])
      assert.isTrue(scaled.ok, scaled.failure)
      assert.match(scaled.lines[0]!, /\(model\.safetensors\).*decoded by the autoencoder \(scale 0\.5\)/)
      assert.deepStrictEqual(yield* size(yield* fs.readFile(`${root}/c.png`)), [8 + 2 * 2, 3 * 8 + 4 * 2])

      const missing = yield* run(["--model", "no-such-key"])
      assert.match(missing.failure, /no-such-key: neither a file nor an artifact of the store/)
      const family = yield* run(["--model", keys.model, "--family", "sit"])
      assert.match(family.failure, /holds a dit model, not sit/)
      const sampler = yield* run(["--model", keys.model, "--sampler", "ode"])
      assert.match(sampler.failure, /the ode sampler is for SiT \(ode, sde\) models/)
      const firstThree = yield* run(["--model", keys.model, "--guided-channels", "first-3"])
      assert.match(firstThree.failure, /guidance on the first 3 channels needs at least 3 latent channels, the model has 2/)
      const classes = yield* run(["--model", keys.model, "--classes", "1,5"])
      assert.match(classes.failure, /5 is not a class of 0\.\.2/)
      const notModel = yield* run(["--model", keys.ae])
      assert.match(notModel.failure, /an artifact of stage autoencoder holds no model/)
      const bare = yield* Safetensors.decode(yield* fs.readFile(`${root}/model.safetensors`))
      yield* fs.writeFile(`${root}/bare.safetensors`, Safetensors.encode(bare.tensors))
      const noConfig = yield* run(["--model", `${root}/bare.safetensors`])
      assert.match(noConfig.failure, /carries no tinyfusion\.dit metadata; convert it with tinyfusion checkpoint import/)
    })).pipe(Effect.provide(NodeServices.layer)), 60_000)

  it.live("decodes through a published SD-VAE file (--vae), as its autoencoder artifact does; a VAE that does not fit is named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-sample-vae-" })
      // A DiT on the toy VAE's 4 × 4 × 4 latents (images 32 × 32 × 3), and the VAE as diffusers publishes it, random weights.
      const latent4: Config.Config = { ...Fixtures.tiny, inChannels: 4, hiddenSize: 16, depth: 2 }
      yield* fs.writeFile(`${root}/dit.safetensors`, yield* StateDict.encode(latent4, Init.host(latent4, 3)))
      yield* fs.writeFile(`${root}/model2.safetensors`, yield* StateDict.encode(model, Init.host(model, 3)))
      const weights = Fixtures.publishedWeights(SdVae.referenceShapes(Fixtures.sdVae))
      const vae = `${root}/diffusion_pytorch_model.safetensors`
      yield* fs.writeFile(vae, Safetensors.encode(weights))
      const run = (args: ReadonlyArray<string>) =>
        cli(["sample", "--backend", "wasm", "--store", root, "--steps", "3", "--classes", "0,1", "--per-class", "2", ...args])

      const decoded = yield* run(["--model", `${root}/dit.safetensors`, "--vae", vae, "--out", `${root}/vae.png`])
      assert.isTrue(decoded.ok, decoded.failure)
      assert.match(decoded.lines[0]!, /decoded by SD-VAE \(channels 32\/32\/32\/32, 1 resnets per level, 4 latent channels\) \(scale 0\.18215\)$/)
      // 2 rows of 2 RGB tiles of 32 × 32 (the VAE's factor 8 on the 4 × 4 latents), 2-pixel gaps.
      const grid = yield* Png.decode(yield* fs.readFile(`${root}/vae.png`), "vae.png")
      assert.deepStrictEqual([grid.width, grid.height, grid.channels], [2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3])

      // The same file as the paper path's autoencoder stage: sampling through its artifact writes the same grid.
      const inspected = yield* Stages.inspectSdVae(vae, { image: 32 })
      const artifact = yield* Stage.run(Stages.importedAutoencoder(vae), {
        dataset: "synthetic",
        sha256: inspected.sha256,
        layout: inspected.layout,
        model: inspected.model,
        evalImages: 1
      }, {}).pipe(Effect.provide(Dataset.synthetic({ classes: 2, train: 2, test: 2, size: 32, channels: 3, seed: 0 })), Effect.provide(tinyStore(root)))
      const viaArtifact = yield* run(["--model", `${root}/dit.safetensors`, "--autoencoder", artifact.key, "--out", `${root}/artifact.png`])
      assert.isTrue(viaArtifact.ok, viaArtifact.failure)
      assert.deepStrictEqual(yield* fs.readFile(`${root}/artifact.png`), yield* fs.readFile(`${root}/vae.png`))

      const both = yield* run(["--model", `${root}/dit.safetensors`, "--vae", vae, "--autoencoder", artifact.key])
      assert.strictEqual(both.message, "--autoencoder and --vae: give one decoder")
      const channels = yield* run(["--model", `${root}/model2.safetensors`, "--guided-channels", "all", "--vae", vae])
      assert.strictEqual(channels.message, `${vae}: is not a decoder of 2-channel latents (SD-VAE (channels 32/32/32/32, 1 resnets per level, 4 latent channels) decodes 4)`)
      const notVae = yield* run(["--model", `${root}/dit.safetensors`, "--vae", `${root}/dit.safetensors`])
      assert.match(notVae.message, /dit\.safetensors: no VAE keys \(encoder\.down_blocks\.… or encoder\.down\.…\)/)
      // A VAE with one weight not finite decodes nothing.
      const broken = new Map(weights)
      const bias = broken.get("decoder.conv_in.bias")!
      broken.set("decoder.conv_in.bias", HostTensor.float32(bias.shape, Float32Array.from(bias.data, (x, i) => (i === 3 ? Number.NaN : x))))
      yield* fs.writeFile(`${root}/nan-vae.safetensors`, Safetensors.encode(broken))
      const nan = yield* run(["--model", `${root}/dit.safetensors`, "--vae", `${root}/nan-vae.safetensors`, "--out", `${root}/nan.png`])
      assert.match(nan.message, /^the weights of SD-VAE \(channels 32\/32\/32\/32, .*\): 1 of \d+ values are not finite \(the first in decoder\.conv_in\.bias\)/)
      assert.isFalse(yield* fs.exists(`${root}/nan.png`))
    })).pipe(Effect.provide(NodeServices.layer)), 120_000)
})
