/**
 * The scales the grids run at. A preset resolves everything a cell leaves
 * open: the data stages, the teachers, the pruners' budgets, the paper's
 * step budgets ("100K", "500K", "10K") as step counts, and the two
 * evaluation protocols.
 *
 *   quick   CPU, minutes: every stage of every cell runs, on tiny models and
 *           a few hundred images; the numbers test the plumbing, not the paper
 *   small   Fashion-MNIST and a 28 × 64 teacher, sized by pilots for a 2-core
 *           CPU (156 minutes with two workers, measured): the reproduction we run
 *   mini    Fashion-MNIST and the 28 × 128 mini teacher: the reproduction at
 *           the scale of a GPU
 *   paper   DiT-XL/2 shapes: a user's image folder and the official
 *           checkpoint brought in with `tinyfusion checkpoint import`
 */
import { Effect, FileSystem, Layer, Path, Schema } from "effect"
import { Autoencoder, Codec, Dataset, type DatasetError, defaultFashionMnistDir, FeatureNet, fashionMnistFiles, Inception, Stages } from "@tinyfusion/data"
import { MarPretrain, Pretrain } from "@tinyfusion/diffusion"
import { Evaluation, type MarSampling, Reference, type Sampling } from "@tinyfusion/eval"
import { Config, MarConfig, ModelFile } from "@tinyfusion/models"
import type { Budget } from "./grids.ts"

export const presetNames = ["quick", "small", "mini", "paper"] as const
export type PresetName = (typeof presetNames)[number]

export interface Preset {
  readonly name: PresetName
  /** Whether the preset is sized for its verdicts to be evidence (quick is not, and its report says so first). */
  readonly evidence: boolean
  /** The most recovery seeds a cell runs with: a grid's declared seeds (Grid.seeds) are cut to this. */
  readonly maxSeeds: number
  readonly autoencoder: Stages.AutoencoderConfig
  readonly latents: Stages.LatentsConfig
  readonly featureNet: Stages.FeatureNetConfig
  readonly reference: Reference.ReferenceConfig
  /** The teacher of each family, trained here (the paper preset imports its DiT instead). */
  readonly teacher: { readonly dit: Pretrain.PretrainConfig; readonly sit: Pretrain.PretrainConfig }
  /** Table 2's MARs, trained here on one loop: the MAR-L teacher and the MAR-B from scratch; how both sample. */
  readonly mar: {
    readonly large: MarPretrain.MarPretrainConfig
    readonly base: MarPretrain.MarPretrainConfig
    readonly sampling: { readonly full: MarSampling.Options; readonly short: MarSampling.Options }
  }
  readonly prune: {
    readonly seed: number
    /** Samples in the fixed calibration set. */
    readonly calibration: number
    /**
     * Per method, the options that scale it (the learnable method's iterations and batch, the random
     * search's sample count; paper: 100,000; Diff-Pruning's stride, where the reference visits every
     * timestep); a cell's own options go over them, a method's defaults under.
     */
    readonly options: { readonly [method: string]: { readonly [name: string]: Schema.Json } }
  }
  readonly recovery: {
    readonly batchSize: number
    readonly seed: number
    /** Steps of each of the paper's budgets. */
    readonly steps: Readonly<Record<Budget, number>>
    /** The paper's 0.9999 only at the paper's step counts (see Pretrain.mini). */
    readonly emaDecay: number
    readonly checkpointEvery: number
    readonly curveEvery: number
  }
  readonly evaluation: { readonly full: Evaluation.EvaluationConfig; readonly short: Evaluation.EvaluationConfig }
  /** Sampling it/s of every shape of the run, in interleaved rounds (speed.ts). */
  readonly speed: { readonly batch: number; readonly warmup: number; readonly rounds: number; readonly sampling: Sampling.Options }
}

const guided = (steps: string): Sampling.Options => ({ sampler: "ddpm", steps, cfgScale: 1.5, guidedChannels: "first-3", seed: 0 })

/** MAR's reference evaluation: guidance 3.0 on the linear schedule, temperature 1 (README, MAR-L). */
const marSampling = (iterations: number): MarSampling.Options => ({ iterations, cfgScale: 3, cfgSchedule: "linear", temperature: 1, seed: 0 })

/** The MAR-L teacher and the MAR-B (24 blocks, width × 3/4) on one loop, and MAR's sampling at full and short protocols. */
const mars = (large: MarPretrain.MarPretrainConfig, base: MarConfig.MarConfig, iterations: { readonly full: number; readonly short: number }) => ({
  large,
  base: { ...large, model: base },
  sampling: { full: marSampling(iterations.full), short: marSampling(iterations.short) }
})

/** The mini MAR-L and MAR-B narrowed to `large` and `base` widths (heads of 2), with a DiffLoss head of `head` width over `headSteps` steps. */
const narrowMars = (
  widths: { readonly large: number; readonly base: number; readonly head: number; readonly headSteps: string },
  training: MarPretrain.MarPretrainConfig["training"],
  iterations: { readonly full: number; readonly short: number }
) => {
  const narrow = (model: MarConfig.MarConfig, width: number): MarConfig.MarConfig => ({
    ...model,
    encoderEmbedDim: width,
    decoderEmbedDim: width,
    encoderNumHeads: 2,
    decoderNumHeads: 2,
    difflossWidth: widths.head,
    numSamplingSteps: widths.headSteps
  })
  return mars({ model: narrow(MarConfig.presets.mini, widths.large), training }, narrow(MarConfig.presets["mini-base"], widths.base), iterations)
}

/** The teachers of both families on one shape and loop. */
const teachers = (dit: Pretrain.PretrainConfig) => ({ dit, sit: { ...dit, family: "sit" as const } })

/** Every sample its own group (32 or 16), the reference in 32; few replicates of sFID, the costly ones. */
const quickBootstrap = { replicates: 30, spatialReplicates: 10, groups: 32, seed: 0 }

/** 200 replicates of FID (0.06 s each at 128 dimensions), 20 of sFID (0.45 s each at 448), 50 groups. */
const smallBootstrap = { replicates: 200, spatialReplicates: 20, groups: 50, seed: 0 }

/** The small preset's teachers (28 × 64): the DiT with a cosine decay, its SiT (one row of Table 2) at the piloted 1,000 steps of a constant rate. */
const smallTraining = { ...Pretrain.mini.training, batchSize: 64, lr: 1e-3, maxGradNorm: 1, emaDecay: 0.995, checkpointEvery: 250, curveEvery: 25 }
const smallModel = { ...Config.presets.mini, hiddenSize: 64 }
const smallTeachers = {
  dit: { family: "dit" as const, model: smallModel, training: { ...smallTraining, steps: 2000, lrFloor: 1e-4 } },
  sit: { family: "sit" as const, model: smallModel, training: { ...smallTraining, steps: 1000 } }
}

/** The quick preset on a dataset of 32×32 single-channel images named `dataset` (a Fashion-MNIST subset, or the synthetic fixture). */
export const quick = (dataset: string): Preset => ({
  name: "quick",
  evidence: false,
  maxSeeds: 1,
  autoencoder: {
    dataset,
    model: { ...Autoencoder.mini, channels: [8, 16, 32] },
    training: { ...Autoencoder.miniTraining, steps: 60, batchSize: 16 },
    checkpointEvery: 20,
    scaleImages: 256,
    evalImages: 256
  },
  latents: { dataset, seed: 0, shardSize: 1024, batchSize: 256 },
  featureNet: {
    dataset,
    model: { ...FeatureNet.mini, channels: [8, 16, 32], hidden: 32 },
    training: { ...FeatureNet.miniTraining, steps: 60, batchSize: 16 },
    checkpointEvery: 20
  },
  reference: { dataset, split: "test", images: 0, batchSize: 256, k: 3, splitSize: 16 },
  teacher: teachers({
    family: "dit",
    model: { ...Config.presets.mini, hiddenSize: 32, numHeads: 2 },
    training: { ...Pretrain.mini.training, steps: 60, batchSize: 16, lr: 1e-3, emaDecay: 0.9, checkpointEvery: 20, curveEvery: 5 }
  }),
  mar: narrowMars(
    { large: 32, base: 24, head: 32, headSteps: "8" },
    // MAR's recipe over 60 steps (15 warming up), at the quick DiT teacher's raised rate and short EMA.
    { ...MarPretrain.mini.training, ...MarPretrain.recipeTraining(60, 16), lr: 1e-3, emaDecay: 0.9, checkpointEvery: 20, curveEvery: 5 },
    { full: 4, short: 2 }
  ),
  prune: {
    seed: 0,
    calibration: 16,
    options: {
      learnable: { iterations: 10, batchSize: 8, logEvery: 2, checkpointEvery: 5 },
      random: { samples: 16 },
      "diff-pruning": { stride: 50, batchSize: 16 }
    }
  },
  recovery: { batchSize: 8, seed: 0, steps: { "100K": 6, "500K": 12, "10K": 3, "40ep": 6 }, emaDecay: 0.5, checkpointEvery: 3, curveEvery: 1 },
  evaluation: {
    full: { ...Evaluation.miniEvaluation, samples: 32, batchSize: 16, sampling: guided("8"), splitSize: 16, gridImages: 16, partBatches: 1, bootstrap: quickBootstrap },
    short: { ...Evaluation.miniEvaluation, samples: 16, batchSize: 16, sampling: guided("4"), splitSize: 16, gridImages: 16, partBatches: 1, bootstrap: quickBootstrap }
  },
  // Six rounds: the fewest whose median interval reaches 95% (96.9%).
  speed: { batch: 8, warmup: 1, rounds: 6, sampling: guided("250") }
})

/**
 * The reproduction on this project's CPU: all of Fashion-MNIST, the mini data stages, a 28 × 64 teacher
 * (the mini shape at half width; the grids' depths are the paper's) and every budget sized by pilots
 * to about 280 core-minutes: about 150 minutes of wall on 2 idle cores with two workers (estimated from the
 * pilots' unit costs and the plan's counts: 85 evaluations, 80 recoveries, 14 mask learnings; at 800 samples
 * and 250 recovery steps it came to 315, so both were cut to fit). Measured by the committed run
 * (experiments/results/small): 273 core-minutes of stages, 156 minutes of wall with two workers.
 * Pilot figures: CPU seconds (user + sys, wasm on one thread) at load 5–14 on the 2-core EPYC; FID on
 * 1,000 samples, 25 DDPM steps, guidance 1.5, ± the 95% bootstrap half-width (200 replicates).
 * - Feature network: 800 steps gave 87.4% test accuracy on 10,000 images (chance 10%); 290 s with the reference.
 *   The autoencoder at its mini budget: PSNR 26.0 dB, about 950 s; the latents 155 s.
 * - Teacher: 1,000 steps of 64 at a constant lr 1e-3 (0.62 s a step) gave FID 168.3 ± 8.4 against
 *   559.0 ± 16.1 untrained and 299.3 ± 11.1 for ShortGPT's D14 before recovery: clearly trained. But
 *   ShortGPT's D14 after 400 recovery steps beat it (145.2 ± 7.7, paired −23.2 ± 4.7): the constant
 *   rate leaves it short of converged, so the DiT teacher gets twice the steps and a cosine decay to 1e-4 (not piloted).
 *   The SiT teacher (Table 2's one SiT row) keeps the piloted 1,000 steps.
 * - Recovery: 400 fine-tuning steps of 64 cost 140 s (0.33 s a step at D14) and took ShortGPT's D14 from
 *   299.3 to 145.2 ± 7.7; the learnable 1:2 mask (200 iterations) recovered to 158.9 ± 9.1. Paired, learnable −
 *   ShortGPT = +13.8 ± 3.6 (unpaired ±11.9; one seed, so the bootstrap alone): at 1,000 samples a
 *   difference this size is resolved four times over (at 600 samples, about three times). "100K" is 200 steps, "500K" 500; "10K" (Tables 4 and 7) 100, not
 *   piloted; MAR's 40 epochs 10% of its 600.
 * - Evaluation: 164 s at D28 and 104 s at D14 for 1,000 samples; 600 (full) and 400 (short) keep the
 *   suite's 85 evaluations near 75 core-minutes. sFID's 20 replicates cost 0.45 s each.
 * - Mask learning: 0.7 s an iteration (LoRA; Full 0.77, Frozen 0.41) at batch 64, 14 of them in the suite:
 *   150 iterations with the gates' EMA at 0.99 (200 at 0.999 gave confidence 0.60).
 * - MAR: a training step costs 3.9 times the DiT's of the same size, so the MARs train 600 steps of 32.
 */
export const small: Preset = {
  name: "small",
  evidence: true,
  maxSeeds: 3,
  autoencoder: Stages.miniAutoencoder,
  latents: Stages.miniLatents,
  featureNet: { ...Stages.miniFeatureNet, training: { ...Stages.miniFeatureNet.training, steps: 800 } },
  reference: Reference.miniReference,
  teacher: smallTeachers,
  mar: narrowMars(
    { large: 64, base: 48, head: 64, headSteps: "25" },
    // MAR's recipe (the first quarter warming up, then constant) at the DiT teacher's rate: the recipe's
    // 1e-4 · 32 / 256 would barely move in 600 steps. Not piloted beyond the cost of a step.
    { ...MarPretrain.mini.training, ...MarPretrain.recipeTraining(600, 32), lr: 1e-3, emaDecay: 0.99, checkpointEvery: 100, curveEvery: 10 },
    { full: 8, short: 4 }
  ),
  prune: {
    seed: 0,
    calibration: 128,
    options: {
      learnable: { iterations: 150, batchSize: 64, emaDecay: 0.99, logEvery: 10, checkpointEvery: 50 },
      random: { samples: 100 },
      "diff-pruning": { stride: 25, batchSize: 64, checkpointEvery: 10 }
    }
  },
  recovery: { batchSize: 64, seed: 0, steps: { "100K": 200, "500K": 500, "10K": 100, "40ep": 60 }, emaDecay: 0.99, checkpointEvery: 50, curveEvery: 10 },
  evaluation: {
    full: { ...Evaluation.miniEvaluation, samples: 600, sampling: guided("25"), splitSize: 300, gridImages: 64, bootstrap: smallBootstrap },
    short: { ...Evaluation.miniEvaluation, samples: 400, sampling: guided("25"), splitSize: 200, gridImages: 64, bootstrap: smallBootstrap }
  },
  speed: { batch: 16, warmup: 1, rounds: 6, sampling: guided("25") }
}

/**
 * The mini reproduction on Fashion-MNIST: the data stages and the reference
 * at their defaults, the mini teacher, and the paper's budgets scaled down 50× (100K →
 * 2,000 steps of 64).
 */
export const mini: Preset = {
  name: "mini",
  evidence: true,
  maxSeeds: 3,
  autoencoder: Stages.miniAutoencoder,
  latents: Stages.miniLatents,
  featureNet: Stages.miniFeatureNet,
  reference: Reference.miniReference,
  teacher: teachers(Pretrain.mini),
  // One token per step at full protocol (the README's 256 steps for 256 tokens), a quarter of that at short.
  mar: mars(MarPretrain.mini, MarConfig.presets["mini-base"], { full: 16, short: 4 }),
  prune: {
    seed: 0,
    calibration: 256,
    options: {
      // One epoch of the 120,000 latents, as the paper's one epoch of mask learning: fewer leave the
      // 0.999 EMA of the gates near its uniform start (400 iterations gave confidence 0.57 for 1:2).
      learnable: { iterations: 1875, batchSize: 64, logEvery: 25, checkpointEvery: 250 },
      random: { samples: 1000 },
      // At most 100 timesteps of the 256-sample calibration set (the threshold usually ends the sweep sooner).
      "diff-pruning": { stride: 10, batchSize: 64, checkpointEvery: 20 }
    }
  },
  // MAR's 40 epochs are 10% of its teacher's pre-training: 500 of the mini MAR-L's 5,000 steps.
  recovery: { batchSize: 64, seed: 0, steps: { "100K": 2000, "500K": 4000, "10K": 500, "40ep": 500 }, emaDecay: 0.999, checkpointEvery: 500, curveEvery: 50 },
  evaluation: {
    full: { ...Evaluation.miniEvaluation, samples: 5000, sampling: guided("50"), splitSize: 2500 },
    short: { ...Evaluation.miniEvaluation, samples: 2000, sampling: guided("25"), splitSize: 1000 }
  },
  speed: { batch: 64, warmup: 1, rounds: 9, sampling: guided("250") }
}

/**
 * At Inception's 2048 dimensions a replicate costs seconds (an eigendecomposition) and a group
 * 16 MB a feature kind, so fewer of both, and no interval for sFID (2023 dimensions).
 */
const paperBootstrap = { replicates: 50, spatialReplicates: 0, groups: 10, seed: 0 }

/**
 * DiT-XL/2 at the paper's settings on a class-per-folder image set named
 * `dataset` (256×256, 32×32×4 latents). Its DiT teacher is the imported
 * official checkpoint; `teacher.dit` only names the shape (and the SiT
 * teacher of Table 2, which has no import here, is trained).
 */
export const paper = (dataset: string): Preset => ({
  name: "paper",
  evidence: true,
  maxSeeds: 1,
  autoencoder: {
    dataset,
    model: { imageSize: 256, imageChannels: 3, channels: [128, 256, 512, 512], latentChannels: 4, klWeight: 1e-6 },
    training: { seed: 0, steps: 100_000, batchSize: 32, lr: 1e-4, clip: 1 },
    checkpointEvery: 1000,
    scaleImages: 10_000,
    evalImages: 10_000
  },
  latents: { dataset, seed: 0, shardSize: 10_000, batchSize: 64 },
  featureNet: {
    dataset,
    model: { imageSize: 256, imageChannels: 3, channels: [64, 128, 256, 512], classes: 1000, hidden: 2048, spatialChannels: 7 },
    training: { seed: 0, steps: 100_000, batchSize: 64, lr: 1e-3, weightDecay: 1e-4, clip: 1 },
    checkpointEvery: 1000
  },
  reference: { dataset, split: "test", images: 0, batchSize: 250, k: 3, splitSize: 5000 },
  teacher: teachers({
    family: "dit",
    model: Config.presets["DiT-XL/2"],
    training: { ...Pretrain.mini.training, steps: 400_000, batchSize: 256, emaDecay: 0.9999, checkpointEvery: 10_000 }
  }),
  // MAR's 400 epochs of ImageNet at its batch of 2048 (32 × 64) at its recipe: lr 1e-4 · 2048/256, 100 epochs
  // (62,500 steps) of warm-up, AdamW (0.9, 0.95) with weight decay 0.02 off norms, biases and the head, clip 3,
  // EMA 0.9999. The
  // suite's latents are the 32×32×4 of DiT's VAE, not MAR's KL-16 16×16×16: 2×2 patches give MAR's 256 tokens
  // of 16 features, so MAR-L and MAR-B keep their shapes and parameter counts.
  mar: mars(
    {
      model: { ...MarConfig.presets["MAR-L"], inputSize: 32, patchSize: 2, inChannels: 4 },
      training: { ...MarPretrain.mini.training, ...MarPretrain.recipeTraining(250_000, 2048), checkpointEvery: 10_000 }
    },
    { ...MarConfig.presets["MAR-B"], inputSize: 32, patchSize: 2, inChannels: 4 },
    { full: 256, short: 64 }
  ),
  prune: {
    seed: 0,
    calibration: 1024,
    options: { learnable: { iterations: 10_000, batchSize: 128 }, random: { samples: 100_000 }, "diff-pruning": { stride: 1, batchSize: 64 } }
  },
  recovery: {
    batchSize: 256,
    seed: 0,
    // 40 epochs of ImageNet at MAR's batch of 2048.
    steps: { "100K": 100_000, "500K": 500_000, "10K": 10_000, "40ep": 25_000 },
    emaDecay: 0.9999,
    checkpointEvery: 10_000,
    curveEvery: 100
  },
  evaluation: {
    // The 50K samples also as an ADM sample batch (samples.npz), for the official evaluator.
    full: { ...Evaluation.miniEvaluation, samples: 50_000, sampling: guided("250"), splitSize: 5000, bootstrap: paperBootstrap, sampleBatch: true },
    short: { ...Evaluation.miniEvaluation, samples: 10_000, sampling: guided("64"), splitSize: 5000, bootstrap: paperBootstrap }
  },
  speed: { batch: 64, warmup: 1, rounds: 9, sampling: guided("250") }
})

/** The quick preset's share of Fashion-MNIST, and the synthetic fixture it falls back to. */
export const quickFashionMnist = { train: 2048, test: 512 } as const
export const quickSynthetic = { classes: 10, train: 512, test: 256, size: 32, channels: 1, seed: 0 } as const

export class PresetInput extends Schema.TaggedError<PresetInput>()("PresetInput", {
  preset: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `preset ${this.preset}: ${this.reason}`
  }
}

/** The files a researcher downloads, as the paper preset's flags name them. */
export interface PaperFiles {
  /** DiT-XL-2-256x256.pt (or any DiT checkpoint: .pt, safetensors). */
  readonly teacher?: string | undefined
  /** SiT-XL-2-256x256.pt, for Table 2's SiT rows (otherwise a SiT teacher is trained). */
  readonly sitTeacher?: string | undefined
  /** sd-vae-ft-ema's diffusion_pytorch_model.safetensors (or -mse, or latent-diffusion's kl-f8 checkpoint). */
  readonly vae?: string | undefined
  /** pytorch-fid's pt_inception-2015-12-05-6726825d.pth. */
  readonly inception?: string | undefined
  /** ADM's VIRTUAL_imagenet256_labeled.npz. */
  readonly reference?: string | undefined
}

/** The paper preset's shared stages from those files, each checked (keys, shapes, layouts) and hashed. */
export interface Imported {
  readonly autoencoder: { readonly path: string; readonly config: Stages.ImportedAutoencoderConfig }
  readonly featureNet: { readonly path: string; readonly config: Stages.ImportedFeatureNetConfig }
  readonly reference: { readonly path: string; readonly config: Reference.BatchConfig }
  readonly teachers: { readonly dit: string; readonly sit?: string }
}

/** What the paper path's networks are at: the paper's (256 × 256, the FID Inception), or a toy for tests. */
export interface PaperSizes {
  readonly imageSize: number
  readonly inception: Inception.Config
  /** Test images the VAE's PSNR is measured on. */
  readonly vaeEvalImages: number
}

export const paperSizes: PaperSizes = { imageSize: 256, inception: Inception.fid, vaeEvalImages: 1000 }

/**
 * Checks every file of the paper preset before anything runs: presence,
 * format, keys and shapes (no tensor data is read), and that they fit
 * together (the teachers' latents are the VAE's, the reference batch's images
 * and statistics are the Inception's). Every problem is reported, one line each.
 */
export const checkPaperFiles = Effect.fn("Presets.checkPaperFiles")(function*(
  dataset: string,
  files: PaperFiles,
  sizes: PaperSizes = paperSizes
) {
  const problems: Array<string> = []
  const attempt = <A, E extends { readonly message: string }, R>(flag: string, check: Effect.Effect<A, E, R>) =>
    Effect.map(Effect.result(check), (r) => {
      if (r._tag === "Success") return r.success
      problems.push(`--${flag}: ${r.failure.message}`)
      return undefined
    })
  const required = (flag: keyof PaperFiles, name: string) => {
    const file = files[flag]
    if (file === undefined) problems.push(`--${flag.replace("sitTeacher", "sit-teacher")} FILE is missing: ${name}`)
    return file
  }
  const teacherFile = required("teacher", "the DiT-XL/2 checkpoint (DiT-XL-2-256x256.pt)")
  const vaeFile = required("vae", "Stable Diffusion's VAE (sd-vae-ft-ema's diffusion_pytorch_model.safetensors)")
  const inceptionFile = required("inception", "pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
  const referenceFile = required("reference", "ADM's reference batch (VIRTUAL_imagenet256_labeled.npz)")
  const vae = vaeFile === undefined ? undefined : yield* attempt("vae", Stages.inspectSdVae(vaeFile, { image: sizes.imageSize }))
  const latent = vae === undefined ? undefined : Codec.shapes(vae.model).latentShape
  const teacher = (flag: string, file: string | undefined, family: "dit" | "sit") =>
    Effect.gen(function*() {
      if (file === undefined) return undefined
      const described = yield* attempt(flag, ModelFile.inspect(file, { family }))
      if (described === undefined || latent === undefined) return described
      const { inputSize, inChannels } = described.config
      if (inputSize !== latent[0] || inChannels !== latent[2]) {
        problems.push(`--${flag}: the model takes ${inputSize}×${inputSize}×${inChannels} latents, the VAE makes ${latent.join("×")} of ${sizes.imageSize}×${sizes.imageSize} images`)
      }
      return described
    })
  const dit = yield* teacher("teacher", teacherFile, "dit")
  const sit = yield* teacher("sit-teacher", files.sitTeacher, "sit")
  const inception = inceptionFile === undefined ? undefined : yield* attempt("inception", Stages.inspectInception(inceptionFile, sizes.inception, sizes.imageSize))
  const batch = referenceFile === undefined ? undefined : yield* attempt("reference", Reference.inspectBatch(referenceFile, {
    imageShape: [sizes.imageSize, sizes.imageSize, 3],
    poolDim: Inception.poolDim(sizes.inception),
    spatialDim: Inception.spatialDim(sizes.inception)
  }))
  if (problems.length > 0 || dit === undefined || vae === undefined || inception === undefined || batch === undefined) {
    return yield* new PresetInput({ preset: "paper", reason: `${problems.length} problem${problems.length === 1 ? "" : "s"} with its files:\n  ${problems.join("\n  ")}` })
  }
  return {
    autoencoder: {
      path: vaeFile!,
      config: { dataset, sha256: vae.sha256, layout: vae.layout, model: vae.model, evalImages: sizes.vaeEvalImages }
    },
    featureNet: { path: inceptionFile!, config: { sha256: inception.sha256, model: inception.model } },
    reference: { path: referenceFile!, config: { sha256: batch.sha256, batchSize: 250, k: 3, splitSize: 5000 } },
    teachers: { dit: dit.path, ...(sit === undefined ? {} : { sit: sit.path }) }
  } satisfies Imported
})

/**
 * Where a preset's images come from, as data: what a worker in another
 * process (or on another machine, at the same path) opens to run a stage
 * that reads the dataset.
 */
export const DataSource = Schema.Union([
  Schema.TaggedStruct("FashionMnist", { dir: Schema.String, quick: Schema.Boolean }),
  Schema.TaggedStruct("Synthetic", {}),
  Schema.TaggedStruct("ImageFolder", { root: Schema.String, test: Schema.String })
])
export type DataSource = typeof DataSource.Type

/** The Dataset layer of a source. */
export const dataLayer = (source: DataSource): Layer.Layer<Dataset, DatasetError> => {
  switch (source._tag) {
    case "FashionMnist":
      return source.quick
        ? Layer.provide(Dataset.firstImages(quickFashionMnist), Dataset.fashionMnist({ dir: source.dir }))
        : Dataset.fashionMnist({ dir: source.dir })
    case "Synthetic":
      return Dataset.synthetic(quickSynthetic)
    case "ImageFolder":
      return Dataset.imageFolder({ root: source.root, test: source.test, size: 256 })
  }
}

/** A preset with the dataset it runs on: its layer and source, and what it is in words; the paper preset's checked files. */
export interface Resolved {
  readonly preset: Preset
  readonly data: Layer.Layer<Dataset, DatasetError>
  readonly source: DataSource
  readonly dataset: string
  readonly imported?: Imported
}

/**
 * The preset of a name on the data there is. quick: the first images of
 * Fashion-MNIST from `data`, or — only when no `data` is given — from the
 * Debian package's folder (`fashionMnistDir`) when its four files are
 * there, else, with a warning, the synthetic fixture (also with
 * `synthetic`); mini and small: Fashion-MNIST; paper: an image folder with `train/`
 * and `val/` class folders. A `data` folder without the files is refused,
 * never replaced: a typo must not turn a reproduction into a toy.
 */
export const resolve = Effect.fn("Presets.resolve")(function*(
  name: PresetName,
  options: {
    readonly data?: string | undefined
    readonly synthetic: boolean
    readonly files?: PaperFiles
    /** Where Fashion-MNIST is looked for without `data` (default: the Debian package's folder). */
    readonly fashionMnistDir?: string
  }
) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const dir = options.data ?? options.fashionMnistDir ?? defaultFashionMnistDir
  const missingFashion = Effect.filter(Object.values(fashionMnistFiles), (f) => Effect.map(fs.exists(path.join(dir, f)), (there) => !there))
  const refuseData = (absent: ReadonlyArray<string>) =>
    new PresetInput({
      preset: name,
      reason: `--data ${dir} does not hold Fashion-MNIST (missing ${absent.join(", ")})`
    })
  if (options.synthetic && options.data !== undefined) {
    return yield* new PresetInput({ preset: name, reason: "--synthetic and --data: give one (the synthetic dataset needs no folder)" })
  }
  switch (name) {
    case "quick": {
      const absent = options.synthetic ? [] : yield* missingFashion
      if (!options.synthetic && absent.length > 0 && options.data !== undefined) return yield* refuseData(absent)
      if (!options.synthetic && absent.length === 0) {
        const source: DataSource = { _tag: "FashionMnist", dir, quick: true }
        const named = `fashion-mnist[:${quickFashionMnist.train}/:${quickFashionMnist.test}]`
        return {
          preset: quick(named),
          data: dataLayer(source),
          source,
          dataset: `Fashion-MNIST from ${dir} (the first ${quickFashionMnist.train} training and ${quickFashionMnist.test} test images)`
        } satisfies Resolved
      }
      const why = options.synthetic ? "asked for with --synthetic" : `Fashion-MNIST was not found in ${dir}`
      if (!options.synthetic) {
        yield* Effect.logWarning(
          `Fashion-MNIST was not found in ${dir}: running on the built-in synthetic dataset, whose numbers say nothing about the paper ` +
            "(install the Debian package dataset-fashion-mnist, or pass --data DIR)"
        )
      }
      return {
        preset: quick("synthetic"),
        data: dataLayer({ _tag: "Synthetic" }),
        source: { _tag: "Synthetic" },
        dataset: `the built-in synthetic dataset (${quickSynthetic.train} training and ${quickSynthetic.test} test images; ${why})`
      } satisfies Resolved
    }
    case "small":
    case "mini": {
      if (options.synthetic) return yield* new PresetInput({ preset: name, reason: "runs on Fashion-MNIST only; --synthetic is for the quick preset" })
      const absent = yield* missingFashion
      if (absent.length > 0) {
        return yield* options.data !== undefined ? refuseData(absent) : new PresetInput({
          preset: name,
          reason: `Fashion-MNIST is not in ${dir} (missing ${absent.join(", ")}): install the Debian package dataset-fashion-mnist, or pass --data DIR`
        })
      }
      const source: DataSource = { _tag: "FashionMnist", dir, quick: false }
      return { preset: name === "mini" ? mini : small, data: dataLayer(source), source, dataset: `Fashion-MNIST from ${dir}` } satisfies Resolved
    }
    case "paper": {
      if (options.synthetic) return yield* new PresetInput({ preset: name, reason: "runs on an image folder; --synthetic is for the quick preset" })
      if (options.data === undefined) {
        return yield* new PresetInput({ preset: name, reason: "needs --data DIR, a folder with train/ and val/ class folders (ImageNet's layout)" })
      }
      const root = path.join(options.data, "train")
      const missing = yield* Effect.filter([root, path.join(options.data, "val")], (d) => Effect.map(fs.exists(d), (e) => !e))
      const dataProblems = missing.map((d) => `--data: no folder ${d} (class folders of 256×256-croppable images)`)
      const imported = yield* Effect.result(checkPaperFiles(`images:${root}`, options.files ?? {}))
      const problems = [...dataProblems, ...(imported._tag === "Failure" ? [imported.failure.reason] : [])]
      if (problems.length > 0 || imported._tag === "Failure") return yield* new PresetInput({ preset: name, reason: problems.join("\n") })
      const source: DataSource = { _tag: "ImageFolder", root, test: path.join(options.data, "val") }
      return {
        preset: paper(`images:${root}`),
        data: dataLayer(source),
        source,
        dataset: `images of ${options.data} (256×256 centre crops)`,
        imported: imported.success
      } satisfies Resolved
    }
  }
})
