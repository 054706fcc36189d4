/**
 * The autoencoder's interface, what the latents and evaluation stages use:
 * images in [-1, 1] → posterior, latents → images. Two models provide it:
 * the KL autoencoder trained here (mini and quick presets) and Stable
 * Diffusion's kl-f8 VAE imported from its published file (paper preset),
 * whose latents the official DiT and SiT checkpoints generate.
 *
 * An `autoencoder` artifact's output names its model (`Model`); its weights
 * are params.safetensors either way.
 */
import { Schema } from "effect"
import { SdVae } from "@tinyfusion/models"
import type { ParamTree, tf } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"

export const SdVaeModel = Schema.Struct({
  kind: Schema.Literal("sd-vae"),
  config: SdVae.Config,
  /** Side of the images it encodes (256 for ImageNet 256 × 256). */
  imageSize: Schema.Int
})
export type SdVaeModel = typeof SdVaeModel.Type

/** The trained autoencoder's config, or an imported SD-VAE. */
export const Model = Schema.Union([Autoencoder.Config, SdVaeModel])
export type Model = typeof Model.Type

const isSdVae = (model: Model): model is SdVaeModel => "kind" in model && model.kind === "sd-vae"

export interface Codec {
  /** [H, W, C] of the images. */
  readonly imageShape: readonly [number, number, number]
  /** [h, w, c] of the (unscaled) latents. */
  readonly latentShape: readonly [number, number, number]
  readonly encode: (x: tf.Tensor4D) => Autoencoder.Posterior
  /** Unscaled latents → images (unclamped). */
  readonly decode: (z: tf.Tensor4D) => tf.Tensor4D
}

export const shapes = (model: Model): Pick<Codec, "imageShape" | "latentShape"> =>
  isSdVae(model)
    ? { imageShape: [model.imageSize, model.imageSize, model.config.imageChannels], latentShape: SdVae.latentShape(model.config, model.imageSize) }
    : { imageShape: [model.imageSize, model.imageSize, model.imageChannels], latentShape: Autoencoder.latentShape(model) }

/** The codec of a model on its device weights. */
export const make = (model: Model, params: ParamTree.ParamTree): Codec => ({
  ...shapes(model),
  encode: isSdVae(model) ? (x) => SdVae.encode(model.config, params, x) : (x) => Autoencoder.encode(params, x),
  decode: isSdVae(model) ? (z) => SdVae.decode(model.config, params, z) : (z) => Autoencoder.decode(params, z)
})

export const describe = (model: Model): string =>
  isSdVae(model) ? SdVae.describe(model.config) : `KL autoencoder (channels ${model.channels.join("/")})`
