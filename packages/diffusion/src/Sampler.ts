/**
 * Class-conditional samples from a trained model, as DiT's and SiT's
 * sample.py: DDPM or DDIM over the respaced chain (DiT), the Heun ODE or the
 * Euler–Maruyama SDE (SiT), with classifier-free guidance above scale 1.
 * Randomness comes from `Rng` streams of the seed at the batch index: the
 * starting noise from "sample/x", each sampler step's noise from
 * "sample/noise/<batch>".
 */
import { Effect, Schema } from "effect"
import { Config, type ModelArtifact } from "@tinyfusion/models"
import { type ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Network from "./Network.ts"
import * as Transport from "./Transport.ts"

export const Kind = Schema.Literals(["ddpm", "ddim", "ode", "sde"])
export type Kind = typeof Kind.Type

export const Options = Schema.Struct({
  sampler: Kind,
  /** DDPM/DDIM: respaced chain steps ("250"); ODE/SDE: grid points. */
  steps: Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)),
  /** Classifier-free guidance scale; 1: none. */
  cfgScale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1)),
  /** The reference guides the first 3 latent channels; "all" guides every one. */
  guidedChannels: Schema.Literals(["first-3", "all"])
})
export type Options = typeof Options.Type

/** DiT's sample.py defaults: 250 DDPM steps, scale 4.0 for pictures, on the first 3 channels. */
export const pictures: Options = { sampler: "ddpm", steps: 250, cfgScale: 4, guidedChannels: "first-3" }

export class InvalidSampling extends Schema.TaggedError<InvalidSampling>()("InvalidSampling", {
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot sample: ${this.reason}`
  }
}

const samplers: Record<ModelArtifact.Family, ReadonlyArray<Kind>> = { dit: ["ddpm", "ddim"], sit: ["ode", "sde"] }

/**
 * Latents [labels.length, H, W, C] for the labels, from batch `batch` of the
 * seed's streams. The caller owns the result.
 */
export const sample = Effect.fn("Sampler.sample")(function*(
  model: { readonly family: ModelArtifact.Family; readonly config: Config.Config; readonly params: ParamTree.ParamTree },
  labels: ReadonlyArray<number>,
  options: Options & { readonly seed: number; readonly batch: number }
) {
  const { family, config, params } = model
  if (!samplers[family].includes(options.sampler)) {
    return yield* new InvalidSampling({ reason: `a ${family} model samples with ${samplers[family].join(" or ")}, not ${options.sampler}` })
  }
  const bad = labels.find((y) => !Number.isInteger(y) || y < 0 || y >= config.numClasses)
  if (bad !== undefined) return yield* new InvalidSampling({ reason: `class ${bad} is not in 0..${config.numClasses - 1}` })
  if (options.cfgScale > 1 && config.classDropoutProb === 0) {
    return yield* new InvalidSampling({ reason: "guidance needs the null class, and this model was trained without label dropout" })
  }
  const guidance: Network.Guidance = {
    scale: options.cfgScale,
    nullClass: Config.nullClass(config),
    channels: options.guidedChannels,
    inChannels: config.inChannels
  }
  const shape = [labels.length, config.inputSize, config.inputSize, config.inChannels]
  const noise = Rng.stream(options.seed, `sample/noise/${options.batch}`)
  if (family === "sit") {
    const denoiser = Network.denoiser(Network.sit(config, params), labels, guidance)
    return tf.tidy(() => {
      const x0 = Rng.normalTensor(Rng.stream(options.seed, "sample/x"), options.batch, shape) as tf.Tensor4D
      return options.sampler === "ode"
        ? Transport.sampleOde(denoiser, x0, { numSteps: options.steps, method: "heun" })
        : Transport.sampleSde(denoiser, x0, { numSteps: options.steps, noise })
    })
  }
  const diffusion = yield* GaussianDiffusion.make({ respacing: String(options.steps), learnSigma: config.learnSigma }).pipe(
    Effect.mapError((e) => new InvalidSampling({ reason: e.message }))
  )
  const denoiser = Network.denoiser(Network.dit(config, params), labels, guidance)
  return tf.tidy(() => {
    const xT = Rng.normalTensor(Rng.stream(options.seed, "sample/x"), options.batch, shape) as tf.Tensor4D
    return options.sampler === "ddpm"
      ? GaussianDiffusion.ddpmSample(diffusion, denoiser, xT, { noise })
      : GaussianDiffusion.ddimSample(diffusion, denoiser, xT, { noise })
  })
})
