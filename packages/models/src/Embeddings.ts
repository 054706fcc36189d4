/**
 * DiT's fixed embeddings and the patch (un)folding.
 *
 * The sinusoidal tables are computed on the host in float64 and uploaded once
 * rounded to float32: timesteps are always known on the host (drawn by our
 * Rng or set by a sampler loop), and GPU sin/cos lose accuracy on arguments in
 * the hundreds, so this keeps every backend on the same bits.
 */
import { tf } from "@tinyfusion/tensor"

/** Frequency width of the timestep embedding (the t-MLP's input). */
export const timestepFrequencies = 256

/**
 * TimestepEmbedder.timestep_embedding: half = dim/2 frequencies
 * f_i = exp(−ln(maxPeriod)·i/half); row b = [cos(t_b·f), sin(t_b·f)], cos first,
 * and a zero column when dim is odd. Row-major [t.length, dim].
 */
export function timestepEmbedding(t: ArrayLike<number>, dim = timestepFrequencies, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2)
  const out = new Float32Array(t.length * dim)
  for (let b = 0; b < t.length; b++) {
    for (let i = 0; i < half; i++) {
      const arg = t[b]! * Math.exp((-Math.log(maxPeriod) * i) / half)
      out[b * dim + i] = Math.cos(arg)
      out[b * dim + half + i] = Math.sin(arg)
    }
  }
  return out
}

/**
 * get_2d_sincos_pos_embed(D, grid): token k = row·grid + col; the first D/2
 * channels encode the column, the last D/2 the row; each half is
 * [sin(pos·ω), cos(pos·ω)] with ω_j = 1/10000^(j/(D/4)). Row-major [grid², D].
 */
export function positionEmbedding(dim: number, grid: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`position embedding width ${dim} is not a multiple of 4`)
  const quarter = dim / 4
  const out = new Float32Array(grid * grid * dim)
  for (let row = 0; row < grid; row++) {
    for (let col = 0; col < grid; col++) {
      const base = (row * grid + col) * dim
      for (let j = 0; j < quarter; j++) {
        const omega = 1 / 10000 ** (j / quarter)
        out[base + j] = Math.sin(col * omega)
        out[base + quarter + j] = Math.cos(col * omega)
        out[base + 2 * quarter + j] = Math.sin(row * omega)
        out[base + 3 * quarter + j] = Math.cos(row * omega)
      }
    }
  }
  return out
}

/**
 * Images [N, H, W, C] → tokens [N, (H/p)·(W/p), p·p·C], tokens row-major over
 * the grid and each token's features ordered (i, j, c): the order in which
 * the reference's final linear lays out a patch (unpatchify reads
 * "nhwpqc"), and the order the patch-embedding conv weight is flattened to.
 */
export function patchify(x: tf.Tensor4D, p: number): tf.Tensor3D {
  const [n, h, w, c] = x.shape
  if (h % p !== 0 || w % p !== 0) throw new Error(`image ${h}×${w} is not divisible into ${p}×${p} patches`)
  return tf.tidy(() => {
    const grid = tf.reshape(x, [n, h / p, p, w / p, p, c])
    return tf.reshape(tf.transpose(grid, [0, 1, 3, 2, 4, 5]), [n, (h / p) * (w / p), p * p * c])
  })
}

/** Tokens [N, T, p·p·C] on a square grid → images [N, H, W, C]; the inverse of patchify. */
export function unpatchify(tokens: tf.Tensor3D, p: number, channels: number): tf.Tensor4D {
  const [n, t, features] = tokens.shape
  const side = Math.round(Math.sqrt(t))
  if (side * side !== t) throw new Error(`${t} tokens do not form a square grid`)
  if (features !== p * p * channels) throw new Error(`tokens of ${features} features are not ${p}×${p}×${channels} patches`)
  return tf.tidy(() => {
    const grid = tf.reshape(tokens, [n, side, side, p, p, channels])
    return tf.reshape(tf.transpose(grid, [0, 1, 3, 2, 4, 5]), [n, side * p, side * p, channels])
  })
}
