/* Fused soft-min reductions for dense float32 Sinkhorn (see _native.py).
 *
 * For a batch of stored cost matrices S (B, N, M) and log2-scaled potentials, compute in one
 * pass over S (the PyTorch fallback needs four: baddbmm, clamp, exp2, sum):
 *   rows: out[b,i] = sum_j 2^clamp(h[b,j] - s[b,i] - c * S[b,i,j])   (or the max of the exponent)
 *   cols: out[b,j] = sum_i 2^clamp(h[b,i] - s[b,j] - c * S[b,i,j])
 * The exponent is clamped to [LO, HI] = [-110, 126] so that 2^t is a normal float; callers
 * centre the exponents so that the sums stay far inside that range (and re-check).
 * 2^t = 2^k * p(t - k), k = round(t), p a degree-6 polynomial (relative error < 2e-9).
 */
#include <stdint.h>
#include <string.h>

#define LO (-110.0f)
#define HI (126.0f)

static inline float exp2_poly(float t) {
    t = t < LO ? LO : (t > HI ? HI : t);
    float k = (t + 12582912.0f) - 12582912.0f; /* round to nearest (1.5 * 2^23 trick) */
    float f = t - k;
    float p = 1.5337580957274738e-4f;
    p = p * f + 1.339986514232203e-3f;
    p = p * f + 9.618519562716393e-3f;
    p = p * f + 5.550328985748173e-2f;
    p = p * f + 2.4022646608042303e-1f;
    p = p * f + 6.931472056058892e-1f;
    p = p * f + 1.0000000005921685f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

void softmin_rows(const float *S, const float *h, const float *s, float *out, int64_t B,
                  int64_t N, int64_t M, float c, int want_max, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < N; ++i) {
            const float *row = S + (b * N + i) * M;
            const float *hb = h + b * M;
            const float si = s[b * N + i];
            if (want_max) {
                float acc = -3.0e38f;
#pragma omp simd reduction(max : acc)
                for (int64_t j = 0; j < M; ++j) {
                    float t = hb[j] - si - c * row[j];
                    acc = t > acc ? t : acc;
                }
                out[b * N + i] = acc;
            } else {
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < M; ++j) acc += exp2_poly(hb[j] - si - c * row[j]);
                out[b * N + i] = acc;
            }
        }
    }
}

/* Column reductions: each thread owns a slice of columns and sweeps all rows. */
void softmin_cols(const float *S, const float *h, const float *s, float *out, int64_t B,
                  int64_t N, int64_t M, float c, int want_max, int nthreads) {
    const int64_t CH = 512; /* column chunk: accumulators stay in L1 */
    const int64_t nch = (M + CH - 1) / CH;
#pragma omp parallel for num_threads(nthreads) schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t q = 0; q < nch; ++q) {
            const int64_t j0 = q * CH, j1 = (j0 + CH < M) ? j0 + CH : M;
            float acc[512];
            const float *sb = s + b * M;
            for (int64_t j = j0; j < j1; ++j) acc[j - j0] = want_max ? -3.0e38f : 0.0f;
            for (int64_t i = 0; i < N; ++i) {
                const float *row = S + (b * N + i) * M;
                const float hi = h[b * N + i];
                if (want_max) {
#pragma omp simd
                    for (int64_t j = j0; j < j1; ++j) {
                        float t = hi - sb[j] - c * row[j];
                        acc[j - j0] = t > acc[j - j0] ? t : acc[j - j0];
                    }
                } else {
#pragma omp simd
                    for (int64_t j = j0; j < j1; ++j)
                        acc[j - j0] += exp2_poly(hi - sb[j] - c * row[j]);
                }
            }
            for (int64_t j = j0; j < j1; ++j) out[b * M + j] = acc[j - j0];
        }
    }
}
