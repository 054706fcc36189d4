// AssemblyScript: fused float32 kernels that run on the tfjs wasm backend's
// own heap. The module imports that backend's memory; every pointer is a byte
// offset into it (a tensor's memoryOffset, or scratch the caller allocated).
// The module has no data segments and no globals, so it writes nothing but
// what a call is given. Built by `pnpm --filter @tinyfusion/tensor build:wasm`
// into kernels.wasm (committed; a test rebuilds it and compares the bytes).

// ---- helpers ----------------------------------------------------------------

@inline function at(p: usize, i: i32): usize {
  return p + (<usize>i << 2)
}
@inline function ld(p: usize, i: i32): f32 {
  return load<f32>(at(p, i))
}
@inline function st(p: usize, i: i32, v: f32): void {
  store<f32>(at(p, i), v)
}

/** y[0..n) = 0. */
function zero(y: usize, n: i32): void {
  let i = 0
  for (; i + 4 <= n; i += 4) v128.store(at(y, i), f32x4.splat(0))
  for (; i < n; i++) st(y, i, 0)
}

/** y[0..n) += a·x[0..n). */
@inline function axpy(y: usize, x: usize, a: f32, n: i32): void {
  const av = f32x4.splat(a)
  let i = 0
  for (; i + 4 <= n; i += 4) v128.store(at(y, i), f32x4.add(v128.load(at(y, i)), f32x4.mul(av, v128.load(at(x, i)))))
  for (; i < n; i++) st(y, i, ld(y, i) + a * ld(x, i))
}

@inline function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3))
}

/** Σ x[0..n) (four lanes, then the tail). */
function sum(x: usize, n: i32): f32 {
  let acc = f32x4.splat(0)
  let i = 0
  for (; i + 4 <= n; i += 4) acc = f32x4.add(acc, v128.load(at(x, i)))
  let s = hsum(acc)
  for (; i < n; i++) s += ld(x, i)
  return s
}

// e^x to about 2 ulp: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6
// polynomial (Cephes expf), 2^n through the exponent bits. n is rounded by
// adding 1.5·2²³ (its integer then sits in the low mantissa bits). Inputs are
// clamped to [-87.3, 88.7], where e^x is a normal float.
const LOG2E: f32 = 1.44269504
const LN2_HI: f32 = 0.693359375
const LN2_LO: f32 = -2.12194440e-4
const ROUND: f32 = 12582912 // 1.5·2²³
const P0: f32 = 1.9875691500e-4
const P1: f32 = 1.3981999507e-3
const P2: f32 = 8.3334519073e-3
const P3: f32 = 4.1665795894e-2
const P4: f32 = 1.6666665459e-1
const P5: f32 = 5.0000001201e-1

@inline function expv(x0: v128): v128 {
  // pmin/pmax are one instruction each (min/max order NaNs, several); x0 first keeps a NaN.
  const x = f32x4.pmax(f32x4.pmin(x0, f32x4.splat(88.7)), f32x4.splat(-87.3))
  const rounded = f32x4.relaxed_madd(x, f32x4.splat(LOG2E), f32x4.splat(ROUND))
  const n = f32x4.sub(rounded, f32x4.splat(ROUND))
  const r = f32x4.relaxed_nmadd(n, f32x4.splat(LN2_LO), f32x4.relaxed_nmadd(n, f32x4.splat(LN2_HI), x))
  let p = f32x4.relaxed_madd(f32x4.splat(P0), r, f32x4.splat(P1))
  p = f32x4.relaxed_madd(p, r, f32x4.splat(P2))
  p = f32x4.relaxed_madd(p, r, f32x4.splat(P3))
  p = f32x4.relaxed_madd(p, r, f32x4.splat(P4))
  p = f32x4.relaxed_madd(p, r, f32x4.splat(P5))
  p = f32x4.add(f32x4.relaxed_madd(f32x4.mul(p, r), r, r), f32x4.splat(1))
  const scale = i32x4.add(i32x4.shl(i32x4.sub(rounded, f32x4.splat(ROUND)), 23), i32x4.splat(0x3f800000))
  return f32x4.mul(p, scale)
}

@inline function exps(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0)
}

@inline function sigmoidv(z: v128): v128 {
  return f32x4.div(f32x4.splat(1), f32x4.add(f32x4.splat(1), expv(f32x4.neg(z))))
}

@inline function sigmoids(z: f32): f32 {
  return f32x4.extract_lane(sigmoidv(f32x4.splat(z)), 0)
}

/** Four rows of four floats (at s0..s3) stored transposed: column c of them at dst + c·dstStride bytes. */
@inline function transpose4(s0: usize, s1: usize, s2: usize, s3: usize, dst: usize, dstStride: usize): void {
  const v0 = v128.load(s0)
  const v1 = v128.load(s1)
  const v2 = v128.load(s2)
  const v3 = v128.load(s3)
  const lo01 = v128.shuffle<f32>(v0, v1, 0, 4, 1, 5)
  const lo23 = v128.shuffle<f32>(v2, v3, 0, 4, 1, 5)
  const hi01 = v128.shuffle<f32>(v0, v1, 2, 6, 3, 7)
  const hi23 = v128.shuffle<f32>(v2, v3, 2, 6, 3, 7)
  v128.store(dst, v128.shuffle<f32>(lo01, lo23, 0, 1, 4, 5))
  v128.store(dst + dstStride, v128.shuffle<f32>(lo01, lo23, 2, 3, 6, 7))
  v128.store(dst + 2 * dstStride, v128.shuffle<f32>(hi01, hi23, 0, 1, 4, 5))
  v128.store(dst + 3 * dstStride, v128.shuffle<f32>(hi01, hi23, 2, 3, 6, 7))
}

// ---- matrix product -----------------------------------------------------------

// C[m,n] = A·B (+ bias[n] on every row), A(i,p) = a[i·ars + p·acs],
// B(p,j) = b[p·brs + j·bcs]: any transposes through the strides. Blocked as
// in GotoBLAS: B packed k-major in panels of NR columns (edges zero-padded),
// A packed k-major in panels of MR rows (edges repeat the last row), a 4×8
// register tile whose loop is two pointers, six loads and eight multiply-adds.
// Each C entry sums its products in order of p, with relaxed SIMD's
// multiply-add: one rounding where the CPU fuses it (FMA), two where it does
// not; the same bits on a given machine. (Measured on the project's EPYC: the
// loop runs at the FMA units' 128-bit peak; fused is 25% faster; 6×8 and 5×8
// tiles spill in V8, 3×8 is slower; packing A, through 4×4 transposes in
// registers, is 15% faster than reading it in place, 30% for Aᵀ.) native/gemm.c
// computes the same sums with 256-bit vectors; NativeGemm.test.ts holds the two
// to the same bits, so change them together.
const MR: i32 = 4
const NR: i32 = 8
const MC: i32 = 16 * MR
const KC: i32 = 256
const NC: i32 = 256
/** Bytes of scratch `gemm` needs. */
export function gemmScratchBytes(): i32 {
  return (KC * NC + MR * NR + MC * KC) << 2
}
/** A's rows i0..i0+mc, columns p0..p0+kc into MR-row panels, k-major. */
function packA(a: usize, ars: i32, acs: i32, i0: i32, mc: i32, p0: i32, kc: i32, dst: usize): void {
  for (let ip = 0; ip < mc; ip += MR) {
    const h = min(MR, mc - ip)
    const r0 = at(a, (i0 + ip) * ars + p0 * acs)
    const r1 = at(a, (i0 + ip + min(1, h - 1)) * ars + p0 * acs)
    const r2 = at(a, (i0 + ip + min(2, h - 1)) * ars + p0 * acs)
    const r3 = at(a, (i0 + ip + min(3, h - 1)) * ars + p0 * acs)
    const panel = at(dst, ip * kc)
    let p = 0
    if (acs == 1) {
      // Rows in memory: transpose 4×4 blocks in registers.
      for (; p + 4 <= kc; p += 4) transpose4(at(r0, p), at(r1, p), at(r2, p), at(r3, p), at(panel, p * MR), MR << 2)
    } else if (ars == 1 && h == MR) {
      // Aᵀ in memory: a panel's four entries at p are adjacent.
      for (; p < kc; p++) v128.store(at(panel, p * MR), v128.load(at(r0, p * acs)))
    }
    for (; p < kc; p++) {
      const out = at(panel, p * MR)
      st(out, 0, ld(r0, p * acs))
      st(out, 1, ld(r1, p * acs))
      st(out, 2, ld(r2, p * acs))
      st(out, 3, ld(r3, p * acs))
    }
  }
}

function packB(b: usize, brs: i32, bcs: i32, p0: i32, kc: i32, j0: i32, nc: i32, dst: usize): void {
  for (let jp = 0; jp < nc; jp += NR) {
    const w = min(NR, nc - jp)
    let p = 0
    if (w == NR && brs == 1) {
      // B's columns are rows in memory (x·Wᵀ): transpose 4×4 blocks in registers.
      for (; p + 4 <= kc; p += 4) {
        for (let jj = 0; jj < NR; jj += 4) {
          const row = at(b, (p0 + p) + (j0 + jp + jj) * bcs)
          const step = <usize>bcs << 2
          transpose4(row, row + step, row + 2 * step, row + 3 * step, at(dst, p * NR + jj), NR << 2)
        }
      }
    }
    for (; p < kc; p++) {
      const row = at(b, (p0 + p) * brs + (j0 + jp) * bcs)
      const out = at(dst, p * NR)
      if (w == NR && bcs == 1) {
        v128.store(out, v128.load(row))
        v128.store(out, v128.load(row, 16), 16)
      } else {
        for (let j = 0; j < NR; j++) st(out, j, j < w ? ld(row, j * bcs) : 0)
      }
    }
    dst = at(dst, kc * NR)
  }
}

export function gemm(
  a: usize, ars: i32, acs: i32,
  b: usize, brs: i32, bcs: i32,
  c: usize, m: i32, n: i32, k: i32,
  bias: usize, scratch: usize
): void {
  if (k == 0) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) st(c, i * n + j, bias != 0 ? ld(bias, j) : 0)
    }
    return
  }
  const packedB = scratch
  const tile = at(packedB, KC * NC)
  const packedA = at(tile, MR * NR)
  for (let j0 = 0; j0 < n; j0 += NC) {
    const nc = min(NC, n - j0)
    for (let p0 = 0; p0 < k; p0 += KC) {
      const kc = min(KC, k - p0)
      packB(b, brs, bcs, p0, kc, j0, nc, packedB)
      for (let i0 = 0; i0 < m; i0 += MC) {
        const mc = min(MC, m - i0)
        packA(a, ars, acs, i0, mc, p0, kc, packedA)
        for (let jp = 0; jp < nc; jp += NR) {
          const w = min(NR, nc - jp)
          const bPanel = at(packedB, jp * kc)
          for (let ip = 0; ip < mc; ip += MR) {
            const h = min(MR, mc - ip)
            const full = w == NR && h == MR
            const cp = full ? at(c, (i0 + ip) * n + j0 + jp) : tile
            const ldc: usize = full ? <usize>n << 2 : NR << 2
            if (!full) {
              // Edge tile: work in `tile`, then copy the valid part back.
              for (let i = 0; i < MR; i++) {
                for (let j = 0; j < NR; j++) {
                  st(tile, i * NR + j, p0 > 0 && i < h && j < w ? ld(c, (i0 + ip + i) * n + j0 + jp + j) : 0)
                }
              }
            }
            let c00: v128, c01: v128, c10: v128, c11: v128, c20: v128, c21: v128, c30: v128, c31: v128
            if (p0 == 0) {
              if (bias != 0) {
                if (w == NR) {
                  c00 = v128.load(at(bias, j0 + jp))
                  c01 = v128.load(at(bias, j0 + jp), 16)
                } else {
                  for (let j = 0; j < NR; j++) st(tile, j, j < w ? ld(bias, j0 + jp + j) : 0)
                  c00 = v128.load(tile)
                  c01 = v128.load(tile, 16)
                }
              } else {
                c00 = f32x4.splat(0)
                c01 = f32x4.splat(0)
              }
              c10 = c00; c11 = c01
              c20 = c00; c21 = c01
              c30 = c00; c31 = c01
            } else {
              c00 = v128.load(cp); c01 = v128.load(cp, 16)
              c10 = v128.load(cp + 1 * ldc); c11 = v128.load(cp + 1 * ldc, 16)
              c20 = v128.load(cp + 2 * ldc); c21 = v128.load(cp + 2 * ldc, 16)
              c30 = v128.load(cp + 3 * ldc); c31 = v128.load(cp + 3 * ldc, 16)
            }
            let ap = at(packedA, ip * kc)
            let bp = bPanel
            for (let p = 0; p < kc; p++) {
              const b0 = v128.load(bp)
              const b1 = v128.load(bp, 16)
              const s0 = v128.load32_splat(ap)
              c00 = f32x4.relaxed_madd(s0, b0, c00); c01 = f32x4.relaxed_madd(s0, b1, c01)
              const s1 = v128.load32_splat(ap, 4)
              c10 = f32x4.relaxed_madd(s1, b0, c10); c11 = f32x4.relaxed_madd(s1, b1, c11)
              const s2 = v128.load32_splat(ap, 8)
              c20 = f32x4.relaxed_madd(s2, b0, c20); c21 = f32x4.relaxed_madd(s2, b1, c21)
              const s3 = v128.load32_splat(ap, 12)
              c30 = f32x4.relaxed_madd(s3, b0, c30); c31 = f32x4.relaxed_madd(s3, b1, c31)
              ap += MR << 2
              bp += NR << 2
            }
            v128.store(cp, c00); v128.store(cp, c01, 16)
            v128.store(cp + 1 * ldc, c10); v128.store(cp + 1 * ldc, c11, 16)
            v128.store(cp + 2 * ldc, c20); v128.store(cp + 2 * ldc, c21, 16)
            v128.store(cp + 3 * ldc, c30); v128.store(cp + 3 * ldc, c31, 16)
            if (!full) {
              for (let i = 0; i < h; i++) {
                for (let j = 0; j < w; j++) st(c, (i0 + ip + i) * n + j0 + jp + j, ld(tile, i * NR + j))
              }
            }
          }
        }
      }
    }
  }
}

/** out[j] = Σ_i x[i·cols + j] (a bias gradient). */
export function columnSums(x: usize, rows: i32, cols: i32, out: usize): void {
  zero(out, cols)
  for (let i = 0; i < rows; i++) axpy(out, at(x, i * cols), 1, cols)
}

// ---- activations ----------------------------------------------------------------

// GELU, tanh approximation: ½x(1 + tanh(u)) = x·σ(2u), u = √(2/π)(x + 0.044715x³).
const GELU_2C: f32 = 1.5957691216057308 // 2·√(2/π)
const GELU_A: f32 = 0.044715

// Elementwise kernels run four vectors per iteration: each vector's exp,
// division and products are one long dependency chain, and four independent
// chains keep the FMA units busy (measured: GELU 1.6× faster than one).

@inline function geluv(v: v128): v128 {
  const cube = f32x4.mul(f32x4.mul(v, v), v)
  const z = f32x4.mul(f32x4.splat(GELU_2C), f32x4.add(v, f32x4.mul(f32x4.splat(GELU_A), cube)))
  return f32x4.mul(v, sigmoidv(z))
}

export function gelu(x: usize, out: usize, n: i32): void {
  let i = 0
  for (; i + 16 <= n; i += 16) {
    const a = geluv(v128.load(at(x, i)))
    const b = geluv(v128.load(at(x, i), 16))
    const c = geluv(v128.load(at(x, i), 32))
    const d = geluv(v128.load(at(x, i), 48))
    v128.store(at(out, i), a)
    v128.store(at(out, i), b, 16)
    v128.store(at(out, i), c, 32)
    v128.store(at(out, i), d, 48)
  }
  for (; i + 4 <= n; i += 4) v128.store(at(out, i), geluv(v128.load(at(x, i))))
  for (; i < n; i++) {
    const v = ld(x, i)
    st(out, i, v * sigmoids(GELU_2C * (v + GELU_A * (v * v * v))))
  }
}

/** d/dx[x·σ(2u)] = s + x·s(1−s)·2√(2/π)(1 + 3·0.044715x²), s = σ(2u), times dy. */
@inline function geluGradv(v: v128, dy: v128): v128 {
  const one = f32x4.splat(1)
  const sq = f32x4.mul(v, v)
  const z = f32x4.mul(f32x4.splat(GELU_2C), f32x4.add(v, f32x4.mul(f32x4.splat(GELU_A), f32x4.mul(sq, v))))
  const s = sigmoidv(z)
  const dz = f32x4.mul(f32x4.splat(GELU_2C), f32x4.add(one, f32x4.mul(f32x4.splat(3 * GELU_A), sq)))
  const d = f32x4.add(s, f32x4.mul(f32x4.mul(v, f32x4.mul(s, f32x4.sub(one, s))), dz))
  return f32x4.mul(dy, d)
}

/** dx = dy·GELU'(x). */
export function geluGrad(x: usize, dy: usize, dx: usize, n: i32): void {
  let i = 0
  for (; i + 16 <= n; i += 16) {
    const a = geluGradv(v128.load(at(x, i)), v128.load(at(dy, i)))
    const b = geluGradv(v128.load(at(x, i), 16), v128.load(at(dy, i), 16))
    const c = geluGradv(v128.load(at(x, i), 32), v128.load(at(dy, i), 32))
    const d = geluGradv(v128.load(at(x, i), 48), v128.load(at(dy, i), 48))
    v128.store(at(dx, i), a)
    v128.store(at(dx, i), b, 16)
    v128.store(at(dx, i), c, 32)
    v128.store(at(dx, i), d, 48)
  }
  for (; i + 4 <= n; i += 4) v128.store(at(dx, i), geluGradv(v128.load(at(x, i)), v128.load(at(dy, i))))
  for (; i < n; i++) {
    const v = ld(x, i)
    const s = sigmoids(GELU_2C * (v + GELU_A * (v * v * v)))
    const dz = GELU_2C * (1 + 3 * GELU_A * v * v)
    st(dx, i, ld(dy, i) * (s + v * (s * (1 - s)) * dz))
  }
}

/** SiLU: x·σ(x). */
export function silu(x: usize, out: usize, n: i32): void {
  let i = 0
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(at(x, i))
    v128.store(at(out, i), f32x4.mul(v, sigmoidv(v)))
  }
  for (; i < n; i++) {
    const v = ld(x, i)
    st(out, i, v * sigmoids(v))
  }
}

/** dx = dy·(s + x·s(1−s)), s = σ(x). */
export function siluGrad(x: usize, dy: usize, dx: usize, n: i32): void {
  let i = 0
  const one = f32x4.splat(1)
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(at(x, i))
    const s = sigmoidv(v)
    const d = f32x4.add(s, f32x4.mul(v, f32x4.mul(s, f32x4.sub(one, s))))
    v128.store(at(dx, i), f32x4.mul(v128.load(at(dy, i)), d))
  }
  for (; i < n; i++) {
    const v = ld(x, i)
    const s = sigmoids(v)
    st(dx, i, ld(dy, i) * (s + v * (s * (1 - s))))
  }
}

// ---- LayerNorm and adaLN modulation --------------------------------------------------

// x [B, T, D]; mod [B, width] holds the conditioning chunks; `shift` and
// `scale` are element offsets of D-wide chunks within a mod row.

/** Mean and 1/√(var + eps) of a row, the variance as the mean squared deviation. */
@inline function rowStats(row: usize, d: i32, eps: f32, stats: usize): void {
  const mean = sum(row, d) / <f32>d
  const mv = f32x4.splat(mean)
  let acc = f32x4.splat(0)
  let i = 0
  for (; i + 4 <= d; i += 4) {
    const c = f32x4.sub(v128.load(at(row, i)), mv)
    acc = f32x4.add(acc, f32x4.mul(c, c))
  }
  let ss = hsum(acc)
  for (; i < d; i++) {
    const c = ld(row, i) - mean
    ss += c * c
  }
  st(stats, 0, mean)
  st(stats, 1, 1 / Mathf.sqrt(ss / <f32>d + eps))
}

/** out = LN(x)·(1 + scale) + shift; `stats` is 2 floats of scratch. */
export function layerNormModulate(
  x: usize, mod: usize, width: i32, shift: i32, scale: i32,
  out: usize, b: i32, t: i32, d: i32, eps: f32, stats: usize
): void {
  for (let bi = 0; bi < b; bi++) {
    const sh = at(mod, bi * width + shift)
    const sc = at(mod, bi * width + scale)
    for (let ti = 0; ti < t; ti++) {
      const row = at(x, (bi * t + ti) * d)
      const o = at(out, (bi * t + ti) * d)
      rowStats(row, d, eps, stats)
      const mean = ld(stats, 0)
      const rstd = ld(stats, 1)
      const mv = f32x4.splat(mean)
      const rv = f32x4.splat(rstd)
      const one = f32x4.splat(1)
      let i = 0
      for (; i + 4 <= d; i += 4) {
        const xh = f32x4.mul(f32x4.sub(v128.load(at(row, i)), mv), rv)
        v128.store(at(o, i), f32x4.add(f32x4.mul(xh, f32x4.add(v128.load(at(sc, i)), one)), v128.load(at(sh, i))))
      }
      for (; i < d; i++) st(o, i, (ld(row, i) - mean) * rstd * (ld(sc, i) + 1) + ld(sh, i))
    }
  }
}

/**
 * dx of layerNormModulate: g = dy·(1 + scale), x̂ = (x − μ)·r,
 * dx = r·(g − mean(g) − x̂·mean(g·x̂)). `scratch` holds 2 + D floats.
 */
export function layerNormModulateGradX(
  x: usize, mod: usize, width: i32, scale: i32, dy: usize,
  dx: usize, b: i32, t: i32, d: i32, eps: f32, scratch: usize
): void {
  const g = at(scratch, 2)
  for (let bi = 0; bi < b; bi++) {
    const sc = at(mod, bi * width + scale)
    for (let ti = 0; ti < t; ti++) {
      const off = (bi * t + ti) * d
      const row = at(x, off)
      const dyr = at(dy, off)
      rowStats(row, d, eps, scratch)
      const mean = ld(scratch, 0)
      const rstd = ld(scratch, 1)
      // Sums in four lanes, then the tail (as rowStats sums).
      const mv = f32x4.splat(mean)
      const rv = f32x4.splat(rstd)
      const one = f32x4.splat(1)
      let sgv = f32x4.splat(0)
      let sgxv = f32x4.splat(0)
      let i = 0
      for (; i + 4 <= d; i += 4) {
        const gi = f32x4.mul(v128.load(at(dyr, i)), f32x4.add(v128.load(at(sc, i)), one))
        v128.store(at(g, i), gi)
        sgv = f32x4.add(sgv, gi)
        sgxv = f32x4.add(sgxv, f32x4.mul(gi, f32x4.mul(f32x4.sub(v128.load(at(row, i)), mv), rv)))
      }
      let sg = hsum(sgv)
      let sgx = hsum(sgxv)
      for (; i < d; i++) {
        const gi = ld(dyr, i) * (ld(sc, i) + 1)
        st(g, i, gi)
        sg += gi
        sgx += gi * ((ld(row, i) - mean) * rstd)
      }
      const mg = sg / <f32>d
      const mgx = sgx / <f32>d
      const dxr = at(dx, off)
      const mgv = f32x4.splat(mg)
      const mgxv = f32x4.splat(mgx)
      i = 0
      for (; i + 4 <= d; i += 4) {
        const xh = f32x4.mul(f32x4.sub(v128.load(at(row, i)), mv), rv)
        v128.store(at(dxr, i), f32x4.mul(rv, f32x4.sub(f32x4.sub(v128.load(at(g, i)), mgv), f32x4.mul(xh, mgxv))))
      }
      for (; i < d; i++) {
        const xh = (ld(row, i) - mean) * rstd
        st(dxr, i, rstd * (ld(g, i) - mg - xh * mgx))
      }
    }
  }
}

/**
 * dmod of layerNormModulate: [B, width], zero but the shift chunk (Σ_t dy)
 * and the scale chunk (Σ_t dy·x̂). `stats` is 2 floats of scratch.
 */
export function layerNormModulateGradMod(
  x: usize, width: i32, shift: i32, scale: i32, dy: usize,
  dmod: usize, b: i32, t: i32, d: i32, eps: f32, stats: usize
): void {
  zero(dmod, b * width)
  for (let bi = 0; bi < b; bi++) {
    const dsh = at(dmod, bi * width + shift)
    const dsc = at(dmod, bi * width + scale)
    for (let ti = 0; ti < t; ti++) {
      const off = (bi * t + ti) * d
      const row = at(x, off)
      const dyr = at(dy, off)
      rowStats(row, d, eps, stats)
      const mean = ld(stats, 0)
      const rstd = ld(stats, 1)
      const mv = f32x4.splat(mean)
      const rv = f32x4.splat(rstd)
      let i = 0
      for (; i + 4 <= d; i += 4) {
        const dyi = v128.load(at(dyr, i))
        v128.store(at(dsh, i), f32x4.add(v128.load(at(dsh, i)), dyi))
        v128.store(at(dsc, i), f32x4.add(v128.load(at(dsc, i)), f32x4.mul(dyi, f32x4.mul(f32x4.sub(v128.load(at(row, i)), mv), rv))))
      }
      for (; i < d; i++) {
        const dyi = ld(dyr, i)
        st(dsh, i, ld(dsh, i) + dyi)
        st(dsc, i, ld(dsc, i) + dyi * ((ld(row, i) - mean) * rstd))
      }
    }
  }
}

// ---- gated residual: out = x + gate·y, gate a chunk of mod ---------------------------

export function gatedResidual(x: usize, y: usize, mod: usize, width: i32, gate: i32, out: usize, b: i32, t: i32, d: i32): void {
  for (let bi = 0; bi < b; bi++) {
    const g = at(mod, bi * width + gate)
    for (let ti = 0; ti < t; ti++) {
      const off = (bi * t + ti) * d
      let i = 0
      for (; i + 4 <= d; i += 4) {
        v128.store(at(out, off + i), f32x4.add(v128.load(at(x, off + i)), f32x4.mul(v128.load(at(g, i)), v128.load(at(y, off + i)))))
      }
      for (; i < d; i++) st(out, off + i, ld(x, off + i) + ld(g, i) * ld(y, off + i))
    }
  }
}

/** dy of gatedResidual: gate·dout. */
export function gatedResidualGradY(mod: usize, width: i32, gate: i32, dout: usize, dy: usize, b: i32, t: i32, d: i32): void {
  for (let bi = 0; bi < b; bi++) {
    const g = at(mod, bi * width + gate)
    for (let ti = 0; ti < t; ti++) {
      const off = (bi * t + ti) * d
      let i = 0
      for (; i + 4 <= d; i += 4) v128.store(at(dy, off + i), f32x4.mul(v128.load(at(g, i)), v128.load(at(dout, off + i))))
      for (; i < d; i++) st(dy, off + i, ld(g, i) * ld(dout, off + i))
    }
  }
}

/** dmod of gatedResidual: zero but the gate chunk, Σ_t y·dout. */
export function gatedResidualGradMod(y: usize, width: i32, gate: i32, dout: usize, dmod: usize, b: i32, t: i32, d: i32): void {
  zero(dmod, b * width)
  for (let bi = 0; bi < b; bi++) {
    const dg = at(dmod, bi * width + gate)
    for (let ti = 0; ti < t; ti++) {
      const off = (bi * t + ti) * d
      let i = 0
      for (; i + 4 <= d; i += 4) {
        v128.store(at(dg, i), f32x4.add(v128.load(at(dg, i)), f32x4.mul(v128.load(at(y, off + i)), v128.load(at(dout, off + i)))))
      }
      for (; i < d; i++) st(dg, i, ld(dg, i) + ld(y, off + i) * ld(dout, off + i))
    }
  }
}

// ---- attention over qkv [B, T, 3, H, hd] ---------------------------------------------

// Per sample and head, every sum runs in registers over four outputs at a
// time (four scores, or four features) for two rows at once, the operand read
// in place or from a transposed copy in scratch; an odd T's last row pairs
// with itself, and tails of hd run scalar.

/**
 * out0[0..n) = Σ_r w0[r]·x_r[0..n) and out1 likewise from w1, x_r at x + r·stride (floats): two outputs over the
 * same operand rows, sixteen then four columns at a time in registers (twice the sums in flight, each x_r read
 * once), in order of r. out1 may be out0 with w1 = w0 (a lone last row): both then get the same sums.
 */
@inline function combine2(out0: usize, out1: usize, w0: usize, w1: usize, x: usize, stride: i32, rows: i32, n: i32): void {
  let c = 0
  for (; c + 16 <= n; c += 16) {
    let a0 = f32x4.splat(0)
    let a1 = a0
    let a2 = a0
    let a3 = a0
    let b0 = a0
    let b1 = a0
    let b2 = a0
    let b3 = a0
    for (let r = 0; r < rows; r++) {
      const s = v128.load32_splat(at(w0, r))
      const u = v128.load32_splat(at(w1, r))
      const xr = at(x, r * stride + c)
      const x0 = v128.load(xr)
      const x1 = v128.load(xr, 16)
      const x2 = v128.load(xr, 32)
      const x3 = v128.load(xr, 48)
      a0 = f32x4.relaxed_madd(s, x0, a0)
      a1 = f32x4.relaxed_madd(s, x1, a1)
      a2 = f32x4.relaxed_madd(s, x2, a2)
      a3 = f32x4.relaxed_madd(s, x3, a3)
      b0 = f32x4.relaxed_madd(u, x0, b0)
      b1 = f32x4.relaxed_madd(u, x1, b1)
      b2 = f32x4.relaxed_madd(u, x2, b2)
      b3 = f32x4.relaxed_madd(u, x3, b3)
    }
    const o = at(out0, c)
    v128.store(o, a0)
    v128.store(o, a1, 16)
    v128.store(o, a2, 32)
    v128.store(o, a3, 48)
    const q = at(out1, c)
    v128.store(q, b0)
    v128.store(q, b1, 16)
    v128.store(q, b2, 32)
    v128.store(q, b3, 48)
  }
  for (; c + 4 <= n; c += 4) {
    let a = f32x4.splat(0)
    let b = a
    for (let r = 0; r < rows; r++) {
      const xr = v128.load(at(x, r * stride + c))
      a = f32x4.relaxed_madd(v128.load32_splat(at(w0, r)), xr, a)
      b = f32x4.relaxed_madd(v128.load32_splat(at(w1, r)), xr, b)
    }
    v128.store(at(out0, c), a)
    v128.store(at(out1, c), b)
  }
  for (; c < n; c++) {
    let a: f32 = 0
    let b: f32 = 0
    for (let r = 0; r < rows; r++) {
      a += ld(w0, r) * ld(x, r * stride + c)
      b += ld(w1, r) * ld(x, r * stride + c)
    }
    st(out0, c, a)
    st(out1, c, b)
  }
}

/** A [rows, cols] block with row stride `stride` (floats), transposed into dst [cols, rows]. */
@inline function transposeInto(dst: usize, src: usize, stride: i32, rows: i32, cols: i32): void {
  let r = 0
  for (; r + 4 <= rows; r += 4) {
    let c = 0
    for (; c + 4 <= cols; c += 4) {
      const row = at(src, r * stride + c)
      const step = <usize>stride << 2
      transpose4(row, row + step, row + 2 * step, row + 3 * step, at(dst, c * rows + r), <usize>rows << 2)
    }
    for (; c < cols; c++) {
      for (let k = 0; k < 4; k++) st(dst, c * rows + r + k, ld(src, (r + k) * stride + c))
    }
  }
  for (; r < rows; r++) {
    for (let c = 0; c < cols; c++) st(dst, c * rows + r, ld(src, r * stride + c))
  }
}

/** row[0..n) = softmax(row·scale): max, e^(x − max), divided by their sum. */
@inline function softmaxRow(row: usize, n: i32, scale: f32): void {
  const sv = f32x4.splat(scale)
  let j = 0
  let mxv = f32x4.splat(-Infinity)
  for (; j + 4 <= n; j += 4) {
    const s = f32x4.mul(v128.load(at(row, j)), sv)
    v128.store(at(row, j), s)
    mxv = f32x4.max(mxv, s)
  }
  let mx = max(max(f32x4.extract_lane(mxv, 0), f32x4.extract_lane(mxv, 1)), max(f32x4.extract_lane(mxv, 2), f32x4.extract_lane(mxv, 3)))
  for (; j < n; j++) {
    const s = ld(row, j) * scale
    st(row, j, s)
    mx = max(mx, s)
  }
  const mv = f32x4.splat(mx)
  let totalv = f32x4.splat(0)
  j = 0
  for (; j + 4 <= n; j += 4) {
    const e = expv(f32x4.sub(v128.load(at(row, j)), mv))
    v128.store(at(row, j), e)
    totalv = f32x4.add(totalv, e)
  }
  let total = hsum(totalv)
  for (; j < n; j++) {
    const e = exps(ld(row, j) - mx)
    st(row, j, e)
    total += e
  }
  const tv = f32x4.splat(total)
  j = 0
  for (; j + 4 <= n; j += 4) v128.store(at(row, j), f32x4.div(v128.load(at(row, j)), tv))
  for (; j < n; j++) st(row, j, ld(row, j) / total)
}

/**
 * out [B, T, H, hd] = softmax(q·kᵀ·scale)·v per sample and head; the softmax
 * rows go to probs [B, H, T, T] (kept for the gradient). `scratch` holds
 * hd·T floats (kᵀ of one head).
 */
export function attention(qkv: usize, out: usize, probs: usize, b: i32, t: i32, h: i32, hd: i32, scale: f32, scratch: usize): void {
  const d = h * hd
  const rs = 3 * d
  const kt = scratch
  for (let bi = 0; bi < b; bi++) {
    for (let hi = 0; hi < h; hi++) {
      const base = at(qkv, bi * t * rs + hi * hd)
      transposeInto(kt, at(base, d), rs, t, hd)
      const pbase = at(probs, (bi * h + hi) * t * t)
      const obase = at(out, bi * t * d + hi * hd)
      for (let i = 0; i < t; i += 2) {
        const j = min(i + 1, t - 1) // an odd T's last row pairs with itself
        const row = at(pbase, i * t)
        const next = at(pbase, j * t)
        // scores s_j = Σ_e q_e·kᵀ[e, j]
        combine2(row, next, at(base, i * rs), at(base, j * rs), kt, t, hd, t)
        softmaxRow(row, t, scale)
        if (j != i) softmaxRow(next, t, scale)
        // o = Σ_j p_j·v_j
        combine2(at(obase, i * d), at(obase, j * d), row, next, at(base, 2 * d), rs, t, hd)
      }
    }
  }
}

/** ds[0..n) = p ⊙ (dp − Σ_j p_j·dp_j)·scale, in place of dp (ds): softmax's backward on one row. */
@inline function softmaxGradRow(ds: usize, p: usize, n: i32, scale: f32): void {
  let dot: f32 = 0
  for (let j = 0; j < n; j++) dot += ld(p, j) * ld(ds, j)
  for (let j = 0; j < n; j++) st(ds, j, ld(p, j) * (ld(ds, j) - dot) * scale)
}

/** Row j of dst (at dst + j·dstride + offset) = Σ_r w_j[r]·x_r for the rows w_j of wt [t, t], two at a time. */
@inline function columnsOf(dst: usize, dstride: i32, offset: i32, wt: usize, x: usize, stride: i32, t: i32, hd: i32): void {
  for (let j = 0; j < t; j += 2) {
    const k = min(j + 1, t - 1)
    combine2(at(dst, j * dstride + offset), at(dst, k * dstride + offset), at(wt, j * t), at(wt, k * t), x, stride, t, hd)
  }
}

/**
 * dqkv [B, T, 3, H, hd] from dout [B, T, H, hd]: dP = dO·Vᵀ,
 * dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale, dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO.
 * `scratch` holds hd·T + 2·T·T floats (vᵀ, dS and one transposed matrix).
 */
export function attentionGrad(
  qkv: usize, probs: usize, dout: usize, dqkv: usize,
  b: i32, t: i32, h: i32, hd: i32, scale: f32, scratch: usize
): void {
  const d = h * hd
  const rs = 3 * d
  const vt = scratch
  const ds = at(scratch, hd * t)
  const tr = at(ds, t * t)
  for (let bi = 0; bi < b; bi++) {
    for (let hi = 0; hi < h; hi++) {
      const base = at(qkv, bi * t * rs + hi * hd)
      const dbase = at(dqkv, bi * t * rs + hi * hd)
      const obase = at(dout, bi * t * d + hi * hd)
      const pbase = at(probs, (bi * h + hi) * t * t)
      transposeInto(vt, at(base, 2 * d), rs, t, hd)
      for (let i = 0; i < t; i += 2) {
        const j = min(i + 1, t - 1) // an odd T's last row pairs with itself
        const dsrow = at(ds, i * t)
        const dsnext = at(ds, j * t)
        combine2(dsrow, dsnext, at(obase, i * d), at(obase, j * d), vt, t, hd, t)
        softmaxGradRow(dsrow, at(pbase, i * t), t, scale)
        if (j != i) softmaxGradRow(dsnext, at(pbase, j * t), t, scale)
        combine2(at(dbase, i * rs), at(dbase, j * rs), dsrow, dsnext, at(base, d), rs, t, hd)
      }
      // dK_j = Σ_i dS_ij·q_i and dV_j = Σ_i P_ij·dO_i: columns of dS and P, transposed first.
      transposeInto(tr, ds, t, t, t)
      columnsOf(dbase, rs, d, tr, base, rs, t, hd)
      transposeInto(tr, pbase, t, t, t)
      columnsOf(dbase, rs, 2 * d, tr, obase, d, t, hd)
    }
  }
}

// ---- optimiser ----------------------------------------------------------------

/**
 * AdamW, operation for operation as AdamW.update composes it (each product,
 * sum and quotient rounded to float32), so the two agree to the bit:
 * p' = p·decay − (m'/(√v'/√bc2 + eps))·(lr/bc1), m' = m·β1 + g·(1−β1),
 * v' = v·β2 + g²·(1−β2), with g the gradient times `gradScale` (global-norm
 * clipping's factor; 1: none). `decay` = 1 − lr·wd (1: no weight decay).
 * With an EMA `e` (0: none), also e' = e·emaDecay + p'·(1 − emaDecay), as `ema`
 * rounds it, while p' is still in registers.
 */
export function adamw(
  p: usize, g: usize, m: usize, v: usize, pOut: usize, mOut: usize, vOut: usize, n: i32,
  beta1: f32, oneMinusBeta1: f32, beta2: f32, oneMinusBeta2: f32, sqrtBc2: f32, eps: f32, step: f32, decay: f32, gradScale: f32,
  e: usize, eOut: usize, emaDecay: f32, oneMinusEmaDecay: f32
): void {
  const b1 = f32x4.splat(beta1)
  const c1 = f32x4.splat(oneMinusBeta1)
  const b2 = f32x4.splat(beta2)
  const c2 = f32x4.splat(oneMinusBeta2)
  const s2 = f32x4.splat(sqrtBc2)
  const ev = f32x4.splat(eps)
  const sv = f32x4.splat(step)
  const dv = f32x4.splat(decay)
  const gs = f32x4.splat(gradScale)
  const ed = f32x4.splat(emaDecay)
  const ec = f32x4.splat(oneMinusEmaDecay)
  const decays = decay != 1
  const scales = gradScale != 1
  let i = 0
  for (; i + 4 <= n; i += 4) {
    const gi = scales ? f32x4.mul(v128.load(at(g, i)), gs) : v128.load(at(g, i))
    const m1 = f32x4.add(f32x4.mul(v128.load(at(m, i)), b1), f32x4.mul(gi, c1))
    const v1 = f32x4.add(f32x4.mul(v128.load(at(v, i)), b2), f32x4.mul(f32x4.mul(gi, gi), c2))
    const denom = f32x4.add(f32x4.div(f32x4.sqrt(v1), s2), ev)
    const pi = v128.load(at(p, i))
    const base = decays ? f32x4.mul(pi, dv) : pi
    const p1 = f32x4.sub(base, f32x4.mul(f32x4.div(m1, denom), sv))
    v128.store(at(pOut, i), p1)
    v128.store(at(mOut, i), m1)
    v128.store(at(vOut, i), v1)
    if (e != 0) v128.store(at(eOut, i), f32x4.add(f32x4.mul(v128.load(at(e, i)), ed), f32x4.mul(p1, ec)))
  }
  for (; i < n; i++) {
    const gi = scales ? ld(g, i) * gradScale : ld(g, i)
    const m1 = ld(m, i) * beta1 + gi * oneMinusBeta1
    const v1 = ld(v, i) * beta2 + gi * gi * oneMinusBeta2
    const denom = Mathf.sqrt(v1) / sqrtBc2 + eps
    const pi = ld(p, i)
    const p1 = (decays ? pi * decay : pi) - (m1 / denom) * step
    st(pOut, i, p1)
    st(mOut, i, m1)
    st(vOut, i, v1)
    if (e != 0) st(eOut, i, ld(e, i) * emaDecay + p1 * oneMinusEmaDecay)
  }
}

/** out = e·decay + p·(1 − decay), as Ema.update composes it. */
export function ema(e: usize, p: usize, out: usize, n: i32, decay: f32, oneMinusDecay: f32): void {
  const dv = f32x4.splat(decay)
  const cv = f32x4.splat(oneMinusDecay)
  let i = 0
  for (; i + 4 <= n; i += 4) {
    v128.store(at(out, i), f32x4.add(f32x4.mul(v128.load(at(e, i)), dv), f32x4.mul(v128.load(at(p, i)), cv)))
  }
  for (; i < n; i++) st(out, i, ld(e, i) * decay + ld(p, i) * oneMinusDecay)
}

/** Σ x² (four lanes, then the tail). */
export function sumSquares(x: usize, n: i32): f32 {
  let acc = f32x4.splat(0)
  let i = 0
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(at(x, i))
    acc = f32x4.add(acc, f32x4.mul(v, v))
  }
  let s = hsum(acc)
  for (; i < n; i++) s += ld(x, i) * ld(x, i)
  return s
}
