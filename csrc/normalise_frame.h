/* Band-wise normalisation of one frame, with the bad-pixel count.
 *
 * dst[p] = (src[p] - mean) * inv_std in float32 arithmetic (no fused
 * multiply-add, so every path gives identical bits), and the number of NaN or
 * infinite pixels is returned.  On x86 (AVX2 when the CPU has it, else SSE2
 * with a 16-byte aligned destination), stores bypass the cache (streaming stores): the output is not
 * read again by this kernel, and skipping the read-for-ownership saves a third
 * of the memory traffic.  Callers issue crt_store_fence() before returning.
 */
#ifndef CONVENTION_RT_NORMALISE_FRAME_H
#define CONVENTION_RT_NORMALISE_FRAME_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CRT_HAVE_SSE2 1
#endif

/* GCC and Clang on x86 also get an AVX2 version, chosen at run time. */
#if defined(CRT_HAVE_SSE2) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define CRT_HAVE_AVX2_DISPATCH 1
#endif

static inline int crt_is_bad(float x) { return !(fabsf(x) <= FLT_MAX); }

static inline int32_t crt_normalise_scalar(const float *src, float *dst, ptrdiff_t npix,
                                           float mean, float inv_std) {
    int32_t n_bad = 0;
    for (ptrdiff_t p = 0; p < npix; ++p) {
        dst[p] = (src[p] - mean) * inv_std;
        n_bad += crt_is_bad(src[p]);
    }
    return n_bad;
}

#ifdef CRT_HAVE_AVX2_DISPATCH
__attribute__((target("avx2"))) static int32_t crt_normalise_avx2(
    const float *src, float *dst, ptrdiff_t npix, float mean, float inv_std) {
    ptrdiff_t head = (ptrdiff_t)(((32u - ((uintptr_t)dst & 31u)) & 31u) / sizeof(float));
    if (head > npix) head = npix;
    int32_t n_bad = crt_normalise_scalar(src, dst, head, mean, inv_std);
    const __m256 vmean = _mm256_set1_ps(mean), vscale = _mm256_set1_ps(inv_std);
    const __m256 vmax = _mm256_set1_ps(FLT_MAX);
    const __m256 vabs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256i vbad = _mm256_setzero_si256();
    ptrdiff_t p = head;
    for (; p + 8 <= npix; p += 8) {
        __m256 x = _mm256_loadu_ps(src + p);
        _mm256_stream_ps(dst + p, _mm256_mul_ps(_mm256_sub_ps(x, vmean), vscale));
        /* not(|x| <= FLT_MAX), unordered-true: all ones (-1) for NaN and +-inf */
        vbad = _mm256_sub_epi32(vbad, _mm256_castps_si256(
            _mm256_cmp_ps(_mm256_and_ps(x, vabs), vmax, _CMP_NLE_UQ)));
    }
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, vbad);
    for (int k = 0; k < 8; ++k) n_bad += lanes[k];
    return n_bad + crt_normalise_scalar(src + p, dst + p, npix - p, mean, inv_std);
}

static int crt_avx2_available = -1;
#endif

static inline int32_t crt_normalise_frame(const float *src, float *dst, ptrdiff_t npix,
                                          float mean, float inv_std) {
#ifdef CRT_HAVE_AVX2_DISPATCH
    if (crt_avx2_available < 0) crt_avx2_available = __builtin_cpu_supports("avx2") ? 1 : 0;
    if (crt_avx2_available) return crt_normalise_avx2(src, dst, npix, mean, inv_std);
#endif
#ifdef CRT_HAVE_SSE2
    if (((uintptr_t)dst & 15u) == 0 && npix % 4 == 0) {
        const __m128 vmean = _mm_set1_ps(mean), vscale = _mm_set1_ps(inv_std);
        const __m128 vmax = _mm_set1_ps(FLT_MAX);
        const __m128 vabs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
        __m128i vbad = _mm_setzero_si128();
        for (ptrdiff_t p = 0; p < npix; p += 4) {
            __m128 x = _mm_loadu_ps(src + p);
            _mm_stream_ps(dst + p, _mm_mul_ps(_mm_sub_ps(x, vmean), vscale));
            /* not(|x| <= FLT_MAX) is all ones (-1) for NaN and +-inf */
            vbad = _mm_sub_epi32(vbad, _mm_castps_si128(_mm_cmpnle_ps(_mm_and_ps(x, vabs), vmax)));
        }
        int32_t lanes[4];
        _mm_storeu_si128((__m128i *)lanes, vbad);
        return lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
#endif
    return crt_normalise_scalar(src, dst, npix, mean, inv_std);
}

static inline void crt_store_fence(void) {
#ifdef CRT_HAVE_SSE2
    _mm_sfence();
#endif
}

#endif
