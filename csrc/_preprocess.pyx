# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""Typed preprocessing loops behind ``convention_rt.preprocess``.

Private: every function here trusts its caller.  ``convention_rt.preprocess``
checks shapes, dtypes, contiguity and index ranges before calling in, so no
loop below can read or write out of bounds.  Loops hold no Python objects and
run without the GIL.

A pixel is *bad* when it is NaN or its magnitude exceeds ``MAX_PIXEL_MAGNITUDE``
(infinities included); the rule and the bound are defined once, in
``normalise_frame.h`` (``crt_is_bad``, ``CRT_MAX_PIXEL_MAGNITUDE``), and every
loop here and in that header uses them.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset


cdef extern from "normalise_frame.h" nogil:
    const double CRT_MAX_PIXEL_MAGNITUDE
    int crt_is_bad(float x)
    int32_t crt_normalise_frame(const float* src, float* dst, ptrdiff_t npix,
                                float mean, float inv_std)
    void crt_store_fence()


#: Largest plausible absolute pixel value: pixels beyond it are bad, as NaN and inf are.
MAX_PIXEL_MAGNITUDE = CRT_MAX_PIXEL_MAGNITUDE


# --------------------------------------------------------------------------
# Pseudo-random numbers: splitmix64, reproduced bit for bit by the tests.
# --------------------------------------------------------------------------
cdef inline uint64_t _splitmix64(uint64_t* state) noexcept nogil:
    state[0] += <uint64_t>0x9E3779B97F4A7C15
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline double _uniform(uint64_t* state) noexcept nogil:
    # 53 random bits -> [0, 1)
    return (_splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)


# --------------------------------------------------------------------------
# Median of the good pixels (the fill level of bad pixels).
# --------------------------------------------------------------------------
cdef void _select_kth(double* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Partially sort ``a`` so that ``a[k]`` is its k-th smallest value."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j
    cdef double pivot, tmp
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


cdef double _median(double* a, Py_ssize_t n) noexcept nogil:
    """Median of ``a[:n]`` (n >= 1), as numpy computes it; reorders ``a``."""
    cdef Py_ssize_t half = n // 2, i
    cdef double upper, lower
    _select_kth(a, n, half)
    upper = a[half]
    if n % 2 == 1:
        return upper
    lower = a[0]
    for i in range(1, half):
        if a[i] > lower:
            lower = a[i]
    return 0.5 * (lower + upper)


cdef int32_t _normalise_frame(const float* src, float* dst, Py_ssize_t npix,
                              float mean, float inv_std, double* scratch) noexcept nogil:
    """dst = (src - mean) * inv_std in float32; bad pixels take the frame's median first.

    Returns the number of bad pixels (NaN, or magnitude beyond MAX_PIXEL_MAGNITUDE).
    """
    cdef Py_ssize_t p, n_good
    cdef int32_t n_bad = crt_normalise_frame(src, dst, npix, mean, inv_std)
    cdef float fill
    if n_bad == 0:
        return 0
    n_good = 0
    for p in range(npix):
        if not crt_is_bad(src[p]):
            scratch[n_good] = src[p]
            n_good += 1
    fill = <float>_median(scratch, n_good) if n_good > 0 else mean
    fill = (fill - mean) * inv_std
    for p in range(npix):
        if crt_is_bad(src[p]):
            dst[p] = fill
    return n_bad


# --------------------------------------------------------------------------
# Public kernels (called only through convention_rt.preprocess)
# --------------------------------------------------------------------------
def count_bad_pixels(const float[:, :, ::1] frames, int32_t[::1] out):
    """Count the bad pixels of each frame: frames (F, H, W) -> out (F,)."""
    cdef Py_ssize_t f, p
    cdef Py_ssize_t npix = frames.shape[1] * frames.shape[2]
    cdef const float* src
    cdef int32_t n_bad
    with nogil:
        for f in range(frames.shape[0]):
            src = &frames[f, 0, 0]
            n_bad = 0
            for p in range(npix):
                n_bad += crt_is_bad(src[p])
            out[f] = n_bad


def keep_planes(const float[:, :, :, ::1] cubes, const uint8_t[:, ::1] present,
                uint8_t[:, ::1] keep):
    """keep[t, b] = present[t, b] and plane (t, b) has a good pixel."""
    cdef Py_ssize_t t, b, p
    cdef Py_ssize_t npix = cubes.shape[2] * cubes.shape[3]
    cdef const float* src
    cdef uint8_t has_good
    with nogil:
        for t in range(cubes.shape[0]):
            for b in range(cubes.shape[1]):
                has_good = 0
                if present[t, b]:
                    src = &cubes[t, b, 0, 0]
                    for p in range(npix):
                        if not crt_is_bad(src[p]):
                            has_good = 1
                            break
                keep[t, b] = has_good


def gather_planes(const float[:, :, :, ::1] cubes, const int64_t[::1] order,
                  const uint8_t[:, ::1] keep, const double[::1] mjd,
                  float[:, :, ::1] frames, int32_t[::1] plane, double[::1] frame_mjd):
    """Copy the kept planes, epoch by epoch in ``order``, into single-band frames.

    Returns the number of frames written.
    """
    cdef Py_ssize_t i, t, b
    cdef Py_ssize_t nbytes = cubes.shape[2] * cubes.shape[3] * sizeof(float)
    cdef Py_ssize_t n = 0
    with nogil:
        for i in range(order.shape[0]):
            t = order[i]
            for b in range(cubes.shape[1]):
                if keep[t, b]:
                    memcpy(&frames[n, 0, 0], &cubes[t, b, 0, 0], nbytes)
                    plane[n] = <int32_t>b
                    frame_mjd[n] = mjd[t]
                    n += 1
    return n


def normalise_bands(const float[:, :, ::1] frames, const int32_t[::1] band_ids,
                    const double[::1] mean, const double[::1] std,
                    float[:, :, ::1] out, int32_t[::1] n_bad):
    """out[f] = (frames[f] - mean[b]) * (1 / std[b]) with b = band_ids[f]; bad pixels filled."""
    cdef Py_ssize_t f, b
    cdef Py_ssize_t npix = frames.shape[1] * frames.shape[2]
    cdef double* scratch = <double*>malloc(max(npix, 1) * sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            for f in range(frames.shape[0]):
                b = band_ids[f]
                n_bad[f] = _normalise_frame(&frames[f, 0, 0], &out[f, 0, 0], npix,
                                            <float>mean[b], <float>(1.0 / std[b]), scratch)
            crt_store_fence()
    finally:
        free(scratch)


cdef void _select_frames(const int64_t[::1] offsets, Py_ssize_t seq_len, bint random,
                         const uint64_t[::1] seeds, double drop_prob,
                         int64_t[:, ::1] selection, int64_t* kept) noexcept nogil:
    """Fill selection (n, M) with source frame indices, -1 for padding.

    Deterministic mode takes the latest ``seq_len`` frames.  Random mode first
    drops each frame with probability ``drop_prob`` (keeping the frame that
    drew the largest number if all would go), then takes a uniformly random
    window of ``seq_len`` consecutive kept frames.
    """
    cdef Py_ssize_t i, f, j, first, count, n_kept, start, n_take, best
    cdef uint64_t state
    cdef double u, best_u
    for i in range(offsets.shape[0] - 1):
        first = offsets[i]
        count = offsets[i + 1] - first
        if not random:
            start = count - seq_len if count > seq_len else 0
            for f in range(count - start):
                kept[f] = first + start + f
            n_kept = count - start
            start = 0
        else:
            state = seeds[i]
            n_kept = 0
            if drop_prob > 0.0:
                best = 0
                best_u = -1.0
                for f in range(count):
                    u = _uniform(&state)
                    if u >= drop_prob:
                        kept[n_kept] = first + f
                        n_kept += 1
                    if u > best_u:
                        best_u = u
                        best = f
                if n_kept == 0 and count > 0:
                    kept[0] = first + best
                    n_kept = 1
            else:
                for f in range(count):
                    kept[f] = first + f
                n_kept = count
            start = 0
            if n_kept > seq_len:
                start = <Py_ssize_t>(_uniform(&state) * (n_kept - seq_len + 1))
        n_take = n_kept - start if n_kept - start < seq_len else seq_len
        for j in range(n_take):
            selection[i, j] = kept[start + j]
        for j in range(n_take, seq_len):
            selection[i, j] = -1


def select_frames(const int64_t[::1] offsets, Py_ssize_t seq_len, bint random,
                  const uint64_t[::1] seeds, double drop_prob, Py_ssize_t max_count,
                  int64_t[:, ::1] selection):
    """Window selection only: selection (n, M) of source frame indices or -1."""
    cdef int64_t* kept = <int64_t*>malloc(max(max_count, 1) * sizeof(int64_t))
    if kept == NULL:
        raise MemoryError()
    try:
        with nogil:
            _select_frames(offsets, seq_len, random, seeds, drop_prob, selection, kept)
    finally:
        free(kept)


def window_sequence(const float[:, :, ::1] frames, const int32_t[::1] band_ids,
                    const double[::1] mjd, const int64_t[:, ::1] selection,
                    float[:, :, :, ::1] stamps, int64_t[:, ::1] seq_bands,
                    double[:, ::1] seq_mjd, uint8_t[:, ::1] mask):
    """Gather the selected frames into (n, M, H, W); padding slots are zeroed."""
    cdef Py_ssize_t i, j, s
    cdef Py_ssize_t nbytes = stamps.shape[2] * stamps.shape[3] * sizeof(float)
    with nogil:
        for i in range(selection.shape[0]):
            for j in range(selection.shape[1]):
                s = selection[i, j]
                if s < 0:
                    memset(&stamps[i, j, 0, 0], 0, nbytes)
                    seq_bands[i, j] = 0
                    seq_mjd[i, j] = 0.0
                    mask[i, j] = 0
                    continue
                memcpy(&stamps[i, j, 0, 0], &frames[s, 0, 0], nbytes)
                seq_bands[i, j] = band_ids[s]
                seq_mjd[i, j] = mjd[s]
                mask[i, j] = 1


def prepare_sequences(const float[:, :, ::1] frames, const int32_t[::1] band_ids,
                      const double[::1] mjd, const int64_t[:, ::1] selection,
                      const double[::1] mean, const double[::1] std,
                      float[:, :, :, ::1] stamps, int64_t[:, ::1] seq_bands,
                      double[:, ::1] seq_mjd, uint8_t[:, ::1] mask,
                      int32_t[:, ::1] n_bad):
    """window_sequence and normalise_bands fused: one pass over the selected frames."""
    cdef Py_ssize_t i, j, s, b
    cdef Py_ssize_t npix = stamps.shape[2] * stamps.shape[3]
    cdef double* scratch = <double*>malloc(max(npix, 1) * sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(selection.shape[0]):
                for j in range(selection.shape[1]):
                    s = selection[i, j]
                    if s < 0:
                        memset(&stamps[i, j, 0, 0], 0, npix * sizeof(float))
                        seq_bands[i, j] = 0
                        seq_mjd[i, j] = 0.0
                        mask[i, j] = 0
                        n_bad[i, j] = 0
                        continue
                    b = band_ids[s]
                    n_bad[i, j] = _normalise_frame(&frames[s, 0, 0], &stamps[i, j, 0, 0],
                                                   npix, <float>mean[b], <float>(1.0 / std[b]),
                                                   scratch)
                    seq_bands[i, j] = b
                    seq_mjd[i, j] = mjd[s]
                    mask[i, j] = 1
            crt_store_fence()
    finally:
        free(scratch)
