/*
 * The fused kernels' matrix product (wasm/kernels.ts `gemm`) in native code,
 * for the wasm backend on x64 CPUs with AVX2 and FMA: WebAssembly's vectors
 * are 128 bits wide, these are 256, and the product is two thirds of a DiT
 * training step. Node loads it as an addon (NativeGemm.ts) and calls it on the
 * wasm heap itself: pointers are byte offsets into the heap's ArrayBuffer.
 *
 * It gives the wasm kernel's bits. Each C entry starts from the bias (or 0)
 * and adds its products a·b in order of p, each with one fused multiply-add,
 * exactly as the wasm loop's relaxed madd does on a CPU with FMA (the only
 * CPUs this code runs on); blocking, panel widths and vector widths only
 * choose which entries are computed together, and a partial sum stored
 * between k-blocks is the float32 the register held. NativeGemm.test.ts
 * checks the bits against the wasm kernel.
 *
 * Blocked as in GotoBLAS: B in NR-column panels (edges zero-padded), A in
 * MR-row panels (edges repeat the last row), both k-major, a 6×16 register
 * tile: twelve accumulators, two B vectors and a broadcast, 15 of the 16 ymm
 * registers.
 */
#include <immintrin.h>
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#define MR 6
#define NR 16
#define MC (12 * MR)
#define KC 256
#define NC 256

#define AVX2 __attribute__((target("avx2,fma")))

/* Per thread: Node's worker threads share one copy of a loaded addon. */
static _Thread_local float packedA[MC * KC] __attribute__((aligned(64)));
static _Thread_local float packedB[KC * NC] __attribute__((aligned(64)));
static _Thread_local float edge[MR * NR] __attribute__((aligned(64)));

/* A's rows i0..i0+mc, columns p0..p0+kc into MR-row panels, k-major; the loop
 * order follows whichever of A's axes is contiguous. */
static void packA(const float *a, long ars, long acs, long i0, long mc, long p0, long kc, float *dst) {
  for (long ip = 0; ip < mc; ip += MR) {
    long h = mc - ip < MR ? mc - ip : MR;
    float *panel = dst + ip * kc;
    const float *rows[MR];
    for (long r = 0; r < MR; r++) rows[r] = a + (i0 + ip + (r < h ? r : h - 1)) * ars + p0 * acs;
    if (acs == 1) {
      for (long r = 0; r < MR; r++)
        for (long p = 0; p < kc; p++) panel[p * MR + r] = rows[r][p];
    } else {
      for (long p = 0; p < kc; p++)
        for (long r = 0; r < MR; r++) panel[p * MR + r] = rows[r][p * acs];
    }
  }
}

/* B's rows p0..p0+kc, columns j0..j0+nc into NR-column panels, k-major. */
static void packB(const float *b, long brs, long bcs, long p0, long kc, long j0, long nc, float *dst) {
  for (long jp = 0; jp < nc; jp += NR) {
    long w = nc - jp < NR ? nc - jp : NR;
    float *panel = dst + jp * kc;
    const float *first = b + p0 * brs + (j0 + jp) * bcs;
    if (w == NR && bcs == 1) {
      for (long p = 0; p < kc; p++)
        for (long j = 0; j < NR; j++) panel[p * NR + j] = first[p * brs + j];
    } else if (brs == 1) {
      for (long j = 0; j < NR; j++)
        for (long p = 0; p < kc; p++) panel[p * NR + j] = j < w ? first[j * bcs + p] : 0;
    } else {
      for (long p = 0; p < kc; p++)
        for (long j = 0; j < NR; j++) panel[p * NR + j] = j < w ? first[p * brs + j * bcs] : 0;
    }
  }
}

/* The MR×NR tile at c (row stride ldc): from `init` on every row, or from c
 * itself when init is NULL, plus Σ_p a·b over the panels. */
AVX2 static void tile(long kc, const float *ap, const float *bp, float *c, long ldc, const float *init) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (init != NULL) {
    c00 = _mm256_loadu_ps(init); c01 = _mm256_loadu_ps(init + 8);
    c10 = c00; c11 = c01; c20 = c00; c21 = c01; c30 = c00; c31 = c01; c40 = c00; c41 = c01; c50 = c00; c51 = c01;
  } else {
    c00 = _mm256_loadu_ps(c); c01 = _mm256_loadu_ps(c + 8);
    c10 = _mm256_loadu_ps(c + ldc); c11 = _mm256_loadu_ps(c + ldc + 8);
    c20 = _mm256_loadu_ps(c + 2 * ldc); c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(c + 3 * ldc); c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
    c40 = _mm256_loadu_ps(c + 4 * ldc); c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
    c50 = _mm256_loadu_ps(c + 5 * ldc); c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
  }
  for (long p = 0; p < kc; p++) {
    __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8), s;
    s = _mm256_broadcast_ss(ap); c00 = _mm256_fmadd_ps(s, b0, c00); c01 = _mm256_fmadd_ps(s, b1, c01);
    s = _mm256_broadcast_ss(ap + 1); c10 = _mm256_fmadd_ps(s, b0, c10); c11 = _mm256_fmadd_ps(s, b1, c11);
    s = _mm256_broadcast_ss(ap + 2); c20 = _mm256_fmadd_ps(s, b0, c20); c21 = _mm256_fmadd_ps(s, b1, c21);
    s = _mm256_broadcast_ss(ap + 3); c30 = _mm256_fmadd_ps(s, b0, c30); c31 = _mm256_fmadd_ps(s, b1, c31);
    s = _mm256_broadcast_ss(ap + 4); c40 = _mm256_fmadd_ps(s, b0, c40); c41 = _mm256_fmadd_ps(s, b1, c41);
    s = _mm256_broadcast_ss(ap + 5); c50 = _mm256_fmadd_ps(s, b0, c50); c51 = _mm256_fmadd_ps(s, b1, c51);
    ap += MR;
    bp += NR;
  }
  _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
  _mm256_storeu_ps(c + ldc, c10); _mm256_storeu_ps(c + ldc + 8, c11);
  _mm256_storeu_ps(c + 2 * ldc, c20); _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 3 * ldc, c30); _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  _mm256_storeu_ps(c + 4 * ldc, c40); _mm256_storeu_ps(c + 4 * ldc + 8, c41);
  _mm256_storeu_ps(c + 5 * ldc, c50); _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

/* C[m,n] = A·B (+ bias[n] on every row), A(i,p) = a[i·ars + p·acs], B(p,j) = b[p·brs + j·bcs]. */
AVX2 static void gemm(const float *a, long ars, long acs, const float *b, long brs, long bcs, float *c, long m, long n, long k, const float *bias) {
  if (k == 0) {
    for (long i = 0; i < m; i++)
      for (long j = 0; j < n; j++) c[i * n + j] = bias != NULL ? bias[j] : 0;
    return;
  }
  for (long j0 = 0; j0 < n; j0 += NC) {
    long nc = n - j0 < NC ? n - j0 : NC;
    for (long p0 = 0; p0 < k; p0 += KC) {
      long kc = k - p0 < KC ? k - p0 : KC;
      packB(b, brs, bcs, p0, kc, j0, nc, packedB);
      for (long i0 = 0; i0 < m; i0 += MC) {
        long mc = m - i0 < MC ? m - i0 : MC;
        packA(a, ars, acs, i0, mc, p0, kc, packedA);
        for (long jp = 0; jp < nc; jp += NR) {
          long w = nc - jp < NR ? nc - jp : NR;
          float init[NR];
          for (long j = 0; j < NR; j++) init[j] = bias != NULL && j < w ? bias[j0 + jp + j] : 0;
          const float *start = p0 == 0 ? init : NULL;
          for (long ip = 0; ip < mc; ip += MR) {
            long h = mc - ip < MR ? mc - ip : MR;
            float *cp = c + (i0 + ip) * n + j0 + jp;
            if (w == NR && h == MR) {
              tile(kc, packedA + ip * kc, packedB + jp * kc, cp, n, start);
              continue;
            }
            /* Edge tile: work in `edge`, then copy the valid part back. */
            if (start == NULL)
              for (long i = 0; i < h; i++)
                for (long j = 0; j < w; j++) edge[i * NR + j] = cp[i * n + j];
            tile(kc, packedA + ip * kc, packedB + jp * kc, edge, NR, start);
            for (long i = 0; i < h; i++)
              for (long j = 0; j < w; j++) cp[i * n + j] = edge[i * NR + j];
          }
        }
      }
    }
  }
}

/* Whether the float32 elements at byte offset `at`, reaching `last` elements
 * further (its largest index), lie inside a heap of `bytes`. */
static int inside(int64_t at, int64_t last, size_t bytes) {
  return at >= 0 && at % 4 == 0 && last >= 0 && (uint64_t)(at + 4 * (last + 1)) <= bytes;
}

/* gemm(heap, a, ars, acs, b, brs, bcs, c, m, n, k, bias): bias 0 for none. */
static napi_value Gemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  void *heap;
  size_t bytes;
  int64_t v[11];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 12 ||
      napi_get_arraybuffer_info(env, argv[0], &heap, &bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "gemm(heap: ArrayBuffer, a, ars, acs, b, brs, bcs, c, m, n, k, bias)");
    return NULL;
  }
  for (int i = 0; i < 11; i++) {
    if (napi_get_value_int64(env, argv[i + 1], &v[i]) != napi_ok || v[i] < 0) {
      napi_throw_type_error(env, NULL, "gemm: offsets, strides and sizes are non-negative integers");
      return NULL;
    }
  }
  int64_t a = v[0], ars = v[1], acs = v[2], b = v[3], brs = v[4], bcs = v[5], c = v[6], m = v[7], n = v[8], k = v[9], bias = v[10];
  int ok = inside(c, m * n - 1, bytes) || m * n == 0;
  if (k > 0 && m > 0) ok = ok && inside(a, (m - 1) * ars + (k - 1) * acs, bytes);
  if (k > 0 && n > 0) ok = ok && inside(b, (k - 1) * brs + (n - 1) * bcs, bytes);
  if (bias != 0 && n > 0) ok = ok && inside(bias, n - 1, bytes);
  if (!ok) {
    napi_throw_range_error(env, NULL, "gemm: an operand reaches outside the heap");
    return NULL;
  }
  char *h = heap;
  gemm((const float *)(h + a), ars, acs, (const float *)(h + b), brs, bcs, (float *)(h + c), m, n, k,
       bias == 0 ? NULL : (const float *)(h + bias));
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value gemmFunction, source, supported;
  __builtin_cpu_init();
  napi_create_function(env, "gemm", NAPI_AUTO_LENGTH, Gemm, NULL, &gemmFunction);
  napi_set_named_property(env, exports, "gemm", gemmFunction);
  /* The SHA-256 of the gemm.c this was compiled from: NativeGemm.ts loads no stale build. */
  napi_create_string_utf8(env, SOURCE_SHA256, NAPI_AUTO_LENGTH, &source);
  napi_set_named_property(env, exports, "source", source);
  napi_get_boolean(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), &supported);
  napi_set_named_property(env, exports, "supported", supported);
  return exports;
}
