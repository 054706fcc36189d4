/**
 * The numbers the paper publishes (Fang et al., TinyFusion, CVPR 2025, and its
 * supplementary material), transcribed as data. These are the only
 * hand-written numbers of the report: everything we print beside them comes
 * from stored metrics.
 */
import type { Metrics as EvalMetrics } from "@tinyfusion/eval"

/** A cell's numbers, under the names its stages' outputs and manifests use: the evaluation's scores (eval Metrics.Scores), and the rest. */
export interface Metrics extends Partial<EvalMetrics.Results> {
  /** Sampling iterations per second (forward passes of a batch), the paper's "it/s". */
  readonly itPerS?: number
  /** Calibration loss right after pruning (Table 3). */
  readonly calibrationLoss?: number
  /** Distillation loss at the first fine-tuning step (Table 5). */
  readonly initDistillLoss?: number
  /** The run diverged (NaN), as Table 3's max-loss row and Table 5's RepKD rows. */
  readonly diverged?: boolean
  /** Mean over groups of the learned decision's probability at the end of mask learning. */
  readonly confidence?: number
  /** Parameters of the shape timed (Figure 4). */
  readonly parameters?: number
}

export interface Row extends Metrics {
  /** The grid cell this row is reproduced by, or undefined when we have no counterpart. */
  readonly cell: string | undefined
  readonly label: string
  readonly depth?: string
  readonly params?: string
  readonly iters?: string
}

/** Table 1: layer pruning of DiT-XL/2 (FID on 50K samples, 250 DDPM steps, cfg 1.5). */
export const table1: ReadonlyArray<Row> = [
  { cell: "t1/teacher", label: "DiT-XL/2", depth: "28", params: "675 M", iters: "7,000 K", is: 278.24, fid: 2.27, sfid: 4.6, precision: 0.83, recall: 0.57, itPerS: 6.91 },
  { cell: undefined, label: "DiT-XL/2", depth: "28", params: "675 M", iters: "2,000 K", is: 240.22, fid: 2.73, sfid: 4.46, precision: 0.83, recall: 0.55, itPerS: 6.91 },
  { cell: undefined, label: "DiT-XL/2", depth: "28", params: "675 M", iters: "1,000 K", is: 157.83, fid: 5.53, sfid: 4.6, precision: 0.8, recall: 0.53, itPerS: 6.91 },
  { cell: undefined, label: "U-ViT-H/2", depth: "29", params: "501 M", iters: "500 K", is: 265.3, fid: 2.3, sfid: 5.6, precision: 0.82, recall: 0.58, itPerS: 8.21 },
  { cell: "t1/shortgpt-d19", label: "ShortGPT", depth: "28⇒19", params: "459 M", iters: "100 K", is: 132.79, fid: 7.93, sfid: 5.25, precision: 0.76, recall: 0.53, itPerS: 10.07 },
  { cell: "t1/tinydit-d19-kd", label: "TinyDiT-D19 (KD)", depth: "28⇒19", params: "459 M", iters: "100 K", is: 242.29, fid: 2.9, sfid: 4.63, precision: 0.84, recall: 0.54, itPerS: 10.07 },
  { cell: undefined, label: "TinyDiT-D19 (KD)", depth: "28⇒19", params: "459 M", iters: "500 K", is: 251.02, fid: 2.55, sfid: 4.57, precision: 0.83, recall: 0.55, itPerS: 10.07 },
  { cell: undefined, label: "DiT-L/2", depth: "24", params: "458 M", iters: "1,000 K", is: 196.26, fid: 3.73, sfid: 4.62, precision: 0.82, recall: 0.54, itPerS: 9.73 },
  { cell: undefined, label: "U-ViT-L", depth: "21", params: "287 M", iters: "300 K", is: 221.29, fid: 3.44, sfid: 6.58, precision: 0.83, recall: 0.52, itPerS: 13.48 },
  { cell: undefined, label: "U-DiT-L", depth: "22", params: "204 M", iters: "400 K", is: 246.03, fid: 3.37, sfid: 4.49, precision: 0.86, recall: 0.5 },
  { cell: "t1/diff-pruning-50", label: "Diff-Pruning-50%", depth: "28", params: "338 M", iters: "100 K", is: 186.02, fid: 3.85, sfid: 4.92, precision: 0.82, recall: 0.54, itPerS: 10.43 },
  { cell: "t1/diff-pruning-75", label: "Diff-Pruning-75%", depth: "28", params: "169 M", iters: "100 K", is: 83.78, fid: 14.58, sfid: 6.28, precision: 0.72, recall: 0.53, itPerS: 13.59 },
  { cell: "t1/shortgpt-d14", label: "ShortGPT", depth: "28⇒14", params: "340 M", iters: "100 K", is: 66.1, fid: 22.28, sfid: 6.2, precision: 0.63, recall: 0.56, itPerS: 13.54 },
  { cell: "t1/flux-lite-d14", label: "Flux-Lite", depth: "28⇒14", params: "340 M", iters: "100 K", is: 54.54, fid: 25.92, sfid: 5.98, precision: 0.62, recall: 0.55, itPerS: 13.54 },
  { cell: "t1/sensitivity-d14", label: "Sensitivity Analysis", depth: "28⇒14", params: "340 M", iters: "100 K", is: 70.36, fid: 21.15, sfid: 6.22, precision: 0.63, recall: 0.57, itPerS: 13.54 },
  { cell: "t1/oracle-d14", label: "Oracle (BK-SDM)", depth: "28⇒14", params: "340 M", iters: "100 K", is: 141.18, fid: 7.43, sfid: 6.09, precision: 0.75, recall: 0.55, itPerS: 13.54 },
  { cell: "t1/tinydit-d14", label: "TinyDiT-D14", depth: "28⇒14", params: "340 M", iters: "100 K", is: 151.88, fid: 5.73, sfid: 4.91, precision: 0.8, recall: 0.55, itPerS: 13.54 },
  { cell: undefined, label: "TinyDiT-D14", depth: "28⇒14", params: "340 M", iters: "500 K", is: 198.85, fid: 3.92, sfid: 5.69, precision: 0.78, recall: 0.58, itPerS: 13.54 },
  { cell: "t1/tinydit-d14-kd", label: "TinyDiT-D14 (KD)", depth: "28⇒14", params: "340 M", iters: "100 K", is: 207.27, fid: 3.73, sfid: 5.04, precision: 0.81, recall: 0.54, itPerS: 13.54 },
  { cell: undefined, label: "TinyDiT-D14 (KD)", depth: "28⇒14", params: "340 M", iters: "500 K", is: 234.5, fid: 2.86, sfid: 4.75, precision: 0.82, recall: 0.55, itPerS: 13.54 },
  { cell: undefined, label: "DiT-B/2", depth: "12", params: "130 M", iters: "1,000 K", is: 119.63, fid: 10.12, sfid: 5.39, precision: 0.73, recall: 0.55, itPerS: 28.3 },
  { cell: undefined, label: "U-DiT-B", depth: "22", iters: "400 K", is: 85.15, fid: 16.64, sfid: 6.33, precision: 0.64, recall: 0.63 },
  { cell: "t1/tinydit-d7-kd", label: "TinyDiT-D7 (KD)", depth: "14⇒7", params: "173 M", iters: "500 K", is: 166.91, fid: 5.87, sfid: 5.43, precision: 0.78, recall: 0.53, itPerS: 26.81 }
]

/** Table 2: MAR and SiT (FID, IS). */
export const table2: ReadonlyArray<Row> = [
  { cell: "t2/mar-large", label: "MAR-Large", depth: "32", params: "479 M", iters: "400 ep", fid: 1.78, is: 296.0 },
  { cell: "t2/mar-base", label: "MAR-Base", depth: "24", params: "208 M", iters: "400 ep", fid: 2.31, is: 281.7 },
  { cell: "t2/tinymar-d16", label: "TinyMAR-D16", depth: "32⇒16", params: "277 M", iters: "40 ep", fid: 2.28, is: 283.4 },
  { cell: "t2/sit-teacher", label: "SiT-XL/2", depth: "28", params: "675 M", iters: "1,400 ep", fid: 2.06, is: 277.5 },
  { cell: "t2/tinysit-d14", label: "TinySiT-D14", depth: "28⇒14", params: "340 M", iters: "100 ep", fid: 3.02, is: 220.1 }
]

/** Table 3: calibration loss right after pruning vs FID after 100K steps of fine-tuning without KD. */
export const table3: ReadonlyArray<Row> = [
  { cell: "t3/max-loss", label: "Max. Loss", calibrationLoss: 37.69, diverged: true },
  { cell: "t3/median-loss", label: "Med. Loss", calibrationLoss: 0.99, is: 149.51, fid: 6.45, precision: 0.78, recall: 0.53 },
  { cell: "t3/min-loss", label: "Min. Loss", calibrationLoss: 0.2, is: 73.1, fid: 20.69, precision: 0.63, recall: 0.58 },
  { cell: "t3/sensitivity", label: "Sensitivity", calibrationLoss: 0.21, is: 70.36, fid: 21.15, precision: 0.63, recall: 0.57 },
  { cell: "t3/shortgpt", label: "ShortGPT", calibrationLoss: 0.2, is: 66.1, fid: 22.28, precision: 0.63, recall: 0.56 },
  { cell: "t3/flux-lite", label: "Flux-Lite", calibrationLoss: 0.85, is: 54.54, fid: 25.92, precision: 0.62, recall: 0.55 },
  { cell: "t3/oracle", label: "Oracle (BK-SDM)", calibrationLoss: 1.28, is: 141.18, fid: 7.43, precision: 0.75, recall: 0.55 },
  { cell: "t3/learnable", label: "Learnable", calibrationLoss: 0.98, is: 151.88, fid: 5.73, precision: 0.8, recall: 0.55 }
]

/** Table 4: pruning scheme × recoverability estimate, 10K fine-tuning steps, FID on 10K samples, 64 steps. */
export const table4: ReadonlyArray<Row> = [
  { cell: "t4/1:2-lora", label: "1:2 LoRA", is: 54.75, fid: 33.39, sfid: 29.56, precision: 0.56, recall: 0.62 },
  { cell: "t4/2:4-lora", label: "2:4 LoRA", is: 53.07, fid: 34.21, sfid: 27.61, precision: 0.55, recall: 0.63 },
  { cell: "t4/7:14-lora", label: "7:14 LoRA", is: 34.97, fid: 49.41, sfid: 28.48, precision: 0.46, recall: 0.56 },
  { cell: "t4/1:2-full", label: "1:2 Full", is: 53.11, fid: 35.77, sfid: 32.68, precision: 0.54, recall: 0.61 },
  { cell: "t4/2:4-full", label: "2:4 Full", is: 53.63, fid: 34.41, sfid: 29.93, precision: 0.55, recall: 0.62 },
  { cell: "t4/7:14-full", label: "7:14 Full", is: 45.03, fid: 38.76, sfid: 31.31, precision: 0.52, recall: 0.62 },
  { cell: "t4/1:2-frozen", label: "1:2 Frozen", is: 45.08, fid: 39.56, sfid: 31.13, precision: 0.52, recall: 0.6 },
  { cell: "t4/2:4-frozen", label: "2:4 Frozen", is: 48.09, fid: 37.82, sfid: 31.91, precision: 0.53, recall: 0.62 },
  { cell: "t4/7:14-frozen", label: "7:14 Frozen", is: 34.09, fid: 49.75, sfid: 31.06, precision: 0.46, recall: 0.56 }
]

/** Table 5: fine-tuning strategies for TinyDiT-D14, FID at 100K steps. */
export const table5: ReadonlyArray<Row> = [
  { cell: "t5/finetune", label: "fine-tuning", fid: 5.79 },
  { cell: "t5/logits-kd", label: "Logits KD", fid: 4.66 },
  { cell: "t5/repkd", label: "RepKD", initDistillLoss: 2840.1, diverged: true },
  { cell: "t5/masked-kd-0.1", label: "Masked KD (0.1σ)", initDistillLoss: 15.4, diverged: true },
  { cell: "t5/masked-kd-2", label: "Masked KD (2σ)", initDistillLoss: 387.1, fid: 3.73 },
  { cell: "t5/masked-kd-4", label: "Masked KD (4σ)", initDistillLoss: 391.4, fid: 3.75 }
]

/** Table 7 (appendix): TinyDiT-D7 by teacher and pruning source, 10K steps, 64 sampling steps. */
export const table7: ReadonlyArray<Row> = [
  { cell: "t7/teacher-xl-from-xl", label: "teacher DiT-XL/2, pruned from DiT-XL/2", is: 29.46, fid: 56.18, sfid: 26.03, precision: 0.43, recall: 0.51 },
  { cell: "t7/teacher-xl-from-d14", label: "teacher DiT-XL/2, pruned from TinyDiT-D14", is: 51.96, fid: 36.69, sfid: 28.28, precision: 0.53, recall: 0.59 },
  { cell: "t7/teacher-d14-from-xl", label: "teacher TinyDiT-D14, pruned from DiT-XL/2", is: 28.3, fid: 58.73, sfid: 29.53, precision: 0.41, recall: 0.5 },
  { cell: "t7/teacher-d14-from-d14", label: "teacher TinyDiT-D14, pruned from TinyDiT-D14", is: 57.97, fid: 32.47, sfid: 26.05, precision: 0.55, recall: 0.6 }
]

/** Table 8 (appendix): learning rate of TinyDiT-D14 fine-tuning. */
export const table8: ReadonlyArray<Row> = [
  { cell: "t8/lr-2e-4", label: "lr = 2e-4", is: 207.27, fid: 3.73, sfid: 5.04, precision: 0.8127, recall: 0.5401 },
  { cell: "t8/lr-1e-4", label: "lr = 1e-4", is: 194.31, fid: 4.1, sfid: 5.01, precision: 0.8053, recall: 0.5413 },
  { cell: "t8/lr-5e-5", label: "lr = 5e-5", is: 161.4, fid: 6.63, sfid: 6.69, precision: 0.7419, recall: 0.5705 }
]

/**
 * Figure 4: depth pruning's speed-up is close to linear in the compression
 * ratio; width pruning's (Diff-Pruning) is well below it. Sampling it/s of
 * DiT-XL/2 and its pruned versions, with their parameters (Table 1).
 */
export const figure4 = {
  itPerS: [
    { depth: 28, itPerS: 6.91, parameters: 675e6 },
    { depth: 19, itPerS: 10.07, parameters: 459e6 },
    { depth: 14, itPerS: 13.54, parameters: 340e6 },
    { depth: 7, itPerS: 26.81, parameters: 173e6 }
  ],
  /** Diff-Pruning-50% and -75%: every block, narrower. */
  width: [
    { removed: 0.5, itPerS: 10.43, parameters: 338e6 },
    { removed: 0.75, itPerS: 13.59, parameters: 169e6 }
  ],
  /** "pruning 50% of the layers results in a 2× speedup" — 13.54 / 6.91. */
  speedupAtHalf: 1.96,
  /** "50% width pruning only yields a 1.6× speedup" (introduction); Table 1's it/s give 10.43 / 6.91 = 1.51. */
  widthSpeedupAtHalf: 1.51
} as const

/** Figure 5: random pruning at 50% of DiT-XL/2 (100,000 masks) spans these calibration losses. */
export const figure5 = { samples: 100_000, minLoss: 0.195, maxLoss: 37.694 } as const
