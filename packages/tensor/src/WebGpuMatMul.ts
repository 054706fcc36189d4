/**
 * Reproducible matmuls on the tfjs webgpu backend. For a product with one
 * batch, a long inner dimension and an output of a few 32×32 tiles, tfjs runs
 * its split-K program: workgroups each multiply a slice of the inner
 * dimension and add their part into the output with float atomics, so the
 * order of the additions — and the result's bits — change from run to run
 * (on lavapipe: 20 runs of a 64×4096 · 4096×64 product, 20 different results).
 * A weight's gradient is such a product once batch × tokens reaches 2000 (the
 * mini preset trains on 256 × 16), so a run could neither be repeated nor
 * resumed to the same bits.
 *
 * `install` wraps BatchMatMul and _FusedMatMul for webgpu: the products tfjs
 * would split run its small-output program instead (one invocation per
 * output element, no atomics; tfjs's choice for the same shapes below 2000),
 * and every other product keeps tfjs's choice. The Compute.webgpu layer calls
 * it. (tfjs's 1×1 convolutions call the same matmul directly; none of ours has
 * the 2000 input channels that would split.)
 */
import { tf } from "./tf.ts"

/** tfjs-backend-webgpu's MatMulProgramType.MatMulSmallOutputSizeProgram (4.22). */
const smallOutputSizeProgram = 2
const programFlag = "WEBGPU_MATMUL_PROGRAM_TYPE"

interface Product {
  readonly a: ReadonlyArray<number>
  readonly b: ReadonlyArray<number>
  readonly transposeA: boolean
  readonly transposeB: boolean
}

const size = (shape: ReadonlyArray<number>): number => shape.reduce((p, d) => p * d, 1)

/**
 * Whether tfjs 4.22's webgpu BatchMatMul runs this product with its split-K
 * program (the choice in its BatchMatMul_impl, for a device whose threshold
 * of "few workgroups" is `threshold`: 8, or 16 on Intel Gen12+).
 */
export const splitsK = (p: Product, threshold: number): boolean => {
  const [ra, rb] = [p.a.length, p.b.length]
  const inner = p.transposeB ? p.b[rb - 1]! : p.b[rb - 2]!
  const m = p.transposeA ? p.a[ra - 1]! : p.a[ra - 2]!
  const n = p.transposeB ? p.b[rb - 2]! : p.b[rb - 1]!
  const batch = Math.max(size(p.a.slice(0, -2)), size(p.b.slice(0, -2)))
  const workgroups = batch * Math.ceil(m / 32) * Math.ceil(n / 32)
  const few = workgroups <= threshold || (m <= 8 && workgroups <= threshold * 2)
  return few && batch * m * n > 128 && batch === 1 && inner >= 2000
}

interface WebGpuBackend {
  readonly thresholdToIncreaseWorkgroups: number
}

const deterministic = (config: tf.KernelConfig): tf.KernelConfig => ({
  ...config,
  kernelFunc: (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
    const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs
    const env = tf.env()
    const chosen = env.getNumber(programFlag)
    const flagged = env.getNumber("WEBGPU_THRESHOLD_TO_INCREASE_WORKGROUPS_FOR_MATMUL")
    const threshold = flagged > 0 ? flagged : (args.backend as unknown as WebGpuBackend).thresholdToIncreaseWorkgroups
    if (chosen >= 0 || !splitsK({ a: a.shape, b: b.shape, transposeA, transposeB }, threshold)) return config.kernelFunc(args)
    env.set(programFlag, smallOutputSizeProgram)
    try {
      return config.kernelFunc(args)
    } finally {
      env.set(programFlag, chosen)
    }
  }
})

/** tfjs's own kernels, kept while ours are installed. */
let originals: ReadonlyArray<tf.KernelConfig> | undefined

const replace = (config: tf.KernelConfig): void => {
  tf.unregisterKernel(config.kernelName, config.backendName)
  tf.registerKernel(config)
}

/** Wraps webgpu's BatchMatMul and _FusedMatMul (idempotent; the webgpu backend package must be imported first). */
export const install = (): void => {
  if (originals !== undefined) return
  const kernels = [tf.BatchMatMul, tf._FusedMatMul].map((name) => {
    const config = tf.getKernel(name, "webgpu")
    if (config === undefined) throw new Error(`the webgpu backend registers no ${name} kernel (is @tensorflow/tfjs-backend-webgpu imported?)`)
    return config
  })
  originals = kernels
  for (const k of kernels) replace(deterministic(k))
}

/** Restores tfjs's own webgpu matmul kernels. */
export const uninstall = (): void => {
  if (originals === undefined) return
  for (const k of originals) replace(k)
  originals = undefined
}

/** Whether the wrapped kernels are the registered ones. */
export const installed = (): boolean => originals !== undefined
