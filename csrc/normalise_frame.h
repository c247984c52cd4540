/* Band-wise normalisation of one frame, with the bad-pixel count.
 *
 * dst[p] = (src[p] - mean) * inv_std in float32 arithmetic (no fused
 * multiply-add, so every path gives identical bits), and the number of bad
 * pixels is returned.  A pixel is bad when it is NaN or its magnitude exceeds
 * CRT_MAX_PIXEL_MAGNITUDE (infinities included): crt_is_bad() and the SSE2
 * comparison below, both on CRT_MAX_PIXEL_F, are the only statements of that
 * rule; the kernels of _preprocess.pyx call crt_is_bad().
 *
 * On x86 with SSE2 and a 16-byte aligned destination, stores bypass the cache
 * (streaming stores): the output is not read again by this kernel, and
 * skipping the read-for-ownership saves a third of the memory traffic.
 * Callers issue crt_store_fence() before returning.
 * (A 256-bit AVX2 version measured slower here: frames are 16- but not 32-byte
 * aligned, and the mixed scalar edges break the write combining.)
 */
#ifndef CONVENTION_RT_NORMALISE_FRAME_H
#define CONVENTION_RT_NORMALISE_FRAME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CRT_HAVE_SSE2 1
#endif

/* Largest plausible pixel magnitude; the Python module exposes it as
 * convention_rt.preprocess.MAX_PIXEL_MAGNITUDE.  Finite pixels beyond it are
 * sentinels (1e30, 3e38, ...) that some pipelines write into masked pixels. */
#define CRT_MAX_PIXEL_MAGNITUDE 1e15

/* The same bound as a float32.  1e15 rounds down to 999999986991104, the
 * largest float32 not above 1e15, so for every float32 x,
 * fabsf(x) <= CRT_MAX_PIXEL_F is exactly |x| <= 1e15. */
#define CRT_MAX_PIXEL_F ((float)CRT_MAX_PIXEL_MAGNITUDE)

/* NaN, or |x| > CRT_MAX_PIXEL_MAGNITUDE (+-inf included): one ordered
 * comparison, false for NaN; branch-free so that loops vectorise. */
static inline int crt_is_bad(float x) { return !(fabsf(x) <= CRT_MAX_PIXEL_F); }

static inline int32_t crt_normalise_scalar(const float *src, float *dst, ptrdiff_t npix,
                                           float mean, float inv_std) {
    int32_t n_bad = 0;
    for (ptrdiff_t p = 0; p < npix; ++p) {
        dst[p] = (src[p] - mean) * inv_std;
        n_bad += crt_is_bad(src[p]);
    }
    return n_bad;
}

static inline int32_t crt_normalise_frame(const float *src, float *dst, ptrdiff_t npix,
                                          float mean, float inv_std) {
#ifdef CRT_HAVE_SSE2
    if (((uintptr_t)dst & 15u) == 0 && npix % 4 == 0) {
        const __m128 vmean = _mm_set1_ps(mean), vscale = _mm_set1_ps(inv_std);
        const __m128 vmax = _mm_set1_ps(CRT_MAX_PIXEL_F);
        const __m128 vabs = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
        __m128i vbad = _mm_setzero_si128();
        for (ptrdiff_t p = 0; p < npix; p += 4) {
            __m128 x = _mm_loadu_ps(src + p);
            _mm_stream_ps(dst + p, _mm_mul_ps(_mm_sub_ps(x, vmean), vscale));
            /* crt_is_bad on four lanes: not(|x| <= CRT_MAX_PIXEL_F) is all ones (-1)
             * for NaN and for magnitudes beyond the bound, +-inf included */
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
