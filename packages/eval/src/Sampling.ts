/**
 * How evaluation samples a model: the sampler and its steps, classifier-free
 * guidance, the seed, and the randomness of each batch.
 *
 *   ddpm, ddim   DiT's Gaussian diffusion; `steps` is the respacing ("250",
 *                "ddim50", "10,15,20"), one network evaluation per kept step
 *   ode          SiT's probability-flow ODE, Heun on `steps` grid points
 *                (two evaluations per update, as the reference's default
 *                "heun2"; its adaptive dopri5 is not here)
 *   sde          SiT's Euler–Maruyama SDE on `steps` grid points
 *
 * Randomness, as a pure function of (seed, batch): x_T of batch b from the
 * stream "evaluation/x_T" at index b, the sampler's noise from the stream
 * "evaluation/noise/b", so a batch recomputed after a resume is the same
 * bits; labels from "evaluation/labels" over all N samples at once. Samples
 * therefore depend on the batch size (part of the evaluation's config).
 *
 * The network runs block by block (`DiT.infer`) so that a large sampling
 * batch stays within the wasm heap.
 */
import { Effect, Schema } from "effect"
import { GaussianDiffusion, Network, Respacing, Transport } from "@tinyfusion/diffusion"
import { Config, DiT } from "@tinyfusion/models"
import { type ParamTree, Rng, tf } from "@tinyfusion/tensor"

export const SamplerName = Schema.Literals(["ddpm", "ddim", "ode", "sde"])
export type SamplerName = typeof SamplerName.Type

/** The family of models a sampler is for. */
export const familyOf = (sampler: SamplerName): "dit" | "sit" => (sampler === "ddpm" || sampler === "ddim" ? "dit" : "sit")

/** The grid points of an ODE/SDE sampler, or an error text. */
const gridPoints = (steps: string): number | string => {
  const n = Number(steps.trim())
  return Number.isInteger(n) && n >= 2 ? n : `steps "${steps}" must be an integer ≥ 2 (grid points) for the ODE and SDE samplers`
}

export const Options = Schema.Struct({
  sampler: SamplerName,
  /** ddpm/ddim: the timestep respacing; ode/sde: the number of grid points. */
  steps: Schema.String,
  /** Classifier-free guidance scale; 1 samples without guidance (DiT's sample.py: guided only above 1). */
  cfgScale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Which output channels guidance moves: the reference's first 3, or all latent channels. */
  guidedChannels: Schema.Literals(["first-3", "all"]),
  seed: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
}).check(Schema.makeFilter((o) => {
  if (familyOf(o.sampler) === "sit") {
    const n = gridPoints(o.steps)
    return typeof n === "string" ? n : undefined
  }
  try {
    Respacing.spaceTimesteps(1000, o.steps)
    return undefined
  } catch (e) {
    return (e as Respacing.InvalidRespacing).message
  }
}))
export type Options = typeof Options.Type

/** Network evaluations per sample of a sampler (each one a forward of the batch, doubled under guidance). */
export const evaluations = (o: Options): number => {
  switch (o.sampler) {
    case "ddpm":
    case "ddim":
      return Respacing.spaceTimesteps(1000, o.steps).length
    case "ode":
      return 2 * ((gridPoints(o.steps) as number) - 1)
    case "sde":
      return gridPoints(o.steps) as number
  }
}

/** A sampler that cannot run this model. */
export class IncompatibleModel extends Schema.TaggedError<IncompatibleModel>()("IncompatibleModel", {
  model: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `cannot sample ${this.model}: ${this.reason}`
  }
}

export interface Model {
  readonly family: "dit" | "sit"
  readonly config: Config.Config
  /** Weights on the device. */
  readonly params: ParamTree.ParamTree
}

/** Fails unless the sampler suits the model's family and the model has a null class when guided. */
export const check = Effect.fn("Sampling.check")(function*(model: Pick<Model, "family" | "config">, o: Options) {
  const describe = `a ${model.family === "dit" ? "DiT" : "SiT"} ${Config.describe(model.config)}`
  if (familyOf(o.sampler) !== model.family) {
    return yield* new IncompatibleModel({
      model: describe,
      reason: `the ${o.sampler} sampler is for ${familyOf(o.sampler) === "dit" ? "DiT (ddpm, ddim)" : "SiT (ode, sde)"} models`
    })
  }
  if (o.cfgScale > 1 && Config.labelRows(model.config) === model.config.numClasses) {
    return yield* new IncompatibleModel({ model: describe, reason: `guidance (scale ${o.cfgScale}) needs the null class, and the model has none (class dropout 0)` })
  }
  if (o.cfgScale > 1 && o.guidedChannels === "first-3" && model.config.inChannels < 3) {
    return yield* new IncompatibleModel({
      model: describe,
      reason: `guidance on the first 3 channels needs at least 3 latent channels, the model has ${model.config.inChannels} (guide all of them)`
    })
  }
})

/** The class each of `count` samples is made for: uniform draws, or classes in turn. */
export const labels = (seed: number, count: number, classes: number, mode: "random" | "balanced"): Int32Array =>
  mode === "random"
    ? Rng.integers(Rng.stream(seed, "evaluation/labels"), 0, count, 0, classes)
    : Int32Array.from({ length: count }, (_, i) => i % classes)

/** The model as the sampler's denoiser for these labels: guided above scale 1 (conditional and null halves in one doubled batch). */
export const denoiser = (model: Model, o: Options, labels: ReadonlyArray<number>): Network.Denoiser => {
  const { config, params } = model
  const network: Network.Network = model.family === "dit"
    ? (x, t, y) => DiT.infer(config, params, { x, t, y })
    : (x, t, y) => Network.velocity(config, DiT.infer(config, params, { x, t, y }))
  return Network.denoiser(network, labels, {
    scale: o.cfgScale,
    nullClass: Config.nullClass(config),
    channels: o.guidedChannels,
    inChannels: config.inChannels
  })
}

/** Everything about a sampler that does not change between batches (DDPM tables). */
export interface Sampler {
  readonly options: Options
  /** Latents of batch `batch` for its labels; a new tensor. */
  readonly sample: (model: Model, batch: number, labels: ReadonlyArray<number>) => tf.Tensor4D
}

export const make = Effect.fn("Sampling.make")(function*(o: Options) {
  const diffusion = familyOf(o.sampler) === "dit"
    ? yield* GaussianDiffusion.make({ respacing: o.steps })
    : undefined
  const sample = (model: Model, batch: number, labels: ReadonlyArray<number>): tf.Tensor4D => {
    const { inputSize: s, inChannels: c } = model.config
    const shape = [labels.length, s, s, c]
    const denoise = denoiser(model, o, labels)
    const noise = Rng.stream(o.seed, `evaluation/noise/${batch}`)
    const xT = Rng.normalTensor(Rng.stream(o.seed, "evaluation/x_T"), batch, shape) as tf.Tensor4D
    const gridPoints = Number(o.steps)
    try {
      switch (o.sampler) {
        case "ddpm":
          return GaussianDiffusion.ddpmSample({ ...diffusion!, learnSigma: model.config.learnSigma }, denoise, xT, { noise })
        case "ddim":
          return GaussianDiffusion.ddimSample({ ...diffusion!, learnSigma: model.config.learnSigma }, denoise, xT, { noise })
        case "ode":
          return Transport.sampleOde(denoise, xT, { numSteps: gridPoints, method: "heun" })
        case "sde":
          return Transport.sampleSde(denoise, xT, { numSteps: gridPoints, noise })
      }
    } finally {
      xT.dispose()
    }
  }
  return { options: o, sample } satisfies Sampler
})
