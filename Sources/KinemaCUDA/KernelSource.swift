/// The CUDA C++ source of every kernel of the CUDA backend, compiled once per device architecture
/// by NVRTC (and cached on disk). It includes no header: f16 and bf16 are 16-bit storage types
/// converted with PTX `cvt` (f16) and bit operations (bf16, rounding to nearest even like torch and
/// `DType.convert`); all arithmetic is in f32. Kernels are templates over the storage type,
/// instantiated under `extern "C"` names `<kernel>_<f32|f16|bf16>`.
enum KernelSource {
    /// Kernel families, each its own module, compiled (or read from the cache) on first use.
    enum Module: String, CaseIterable {
        /// Elementwise, layout, normalization, convolution helpers: loaded when the device opens.
        case core
        /// Flash attention on tensor cores (mma.sync m16n8k16) for f16/bf16 and head dims of 16·k ≤ 128.
        case attentionMMA = "attention_mma"
        /// Flash attention in f32 FMAs: f32 storage and other head dims.
        case attentionScalar = "attention_scalar"

        var source: String {
            switch self {
            case .core: return KernelSource.prelude + KernelSource.core
            case .attentionMMA: return KernelSource.prelude + KernelSource.attentionMMA
            case .attentionScalar: return KernelSource.prelude + KernelSource.attentionScalar
            }
        }

        /// The module that holds kernel `name`.
        init(kernel name: String) {
            if name.hasPrefix("flash") { self = .attentionMMA } else if name.hasPrefix("attention") { self = .attentionScalar } else { self = .core }
        }
    }

    static let prelude = #"""
typedef long long i64;
typedef unsigned short u16;
#define NEG_INF __int_as_float(0xff800000)
struct h16 { u16 bits; };
struct b16 { u16 bits; };

__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const h16* p) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits)); return f; }
__device__ __forceinline__ float ld(const b16* p) { return __uint_as_float(((unsigned)p->bits) << 16); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(h16* p, float v) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); p->bits = h; }
__device__ __forceinline__ void st(b16* p, float v) {
    unsigned u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) p->bits = (u16)((u >> 16) | 0x40u);
    else p->bits = (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

struct Dims { i64 size[8]; i64 stride[8]; };

// Offset of element i of a tensor of merged shape d.size in a tensor of strides d.stride; 32-bit
// division (several times cheaper than 64-bit) whenever the index fits.
template <typename I>
__device__ __forceinline__ i64 offset_of(I i, int ndim, const Dims& d) {
    I rest = i; i64 off = 0;
    for (int k = ndim - 1; k >= 0; --k) { I s = (I)d.size[k]; off += (i64)(rest % s) * d.stride[k]; rest /= s; }
    return off;
}
__device__ __forceinline__ i64 offset_of(i64 i, i64 n, int ndim, const Dims& d) {
    return n <= 0xffffffffLL ? offset_of<unsigned>((unsigned)i, ndim, d) : offset_of<i64>(i, ndim, d);
}
"""#

    static let core = #"""

template <typename TI, typename TO>
__device__ void convert_impl(const TI* x, TO* y, i64 n) { GRID_STRIDE(i, n) st(y + i, ld(x + i)); }

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

template <typename T>
__device__ void unary_impl(int op, const T* x, T* y, i64 n) {
    GRID_STRIDE(i, n) {
        float v = ld(x + i), r;
        if (op == 0) r = v / (1.0f + expf(-v));
        else if (op == 1) r = gelu_erf(v);
        else if (op == 2) r = v / (1.0f + expf(-1.702f * v));
        else r = expf(v);
        st(y + i, r);
    }
}

template <typename T>
__device__ void affine_impl(const T* x, T* y, i64 n, float scale, float shift) {
    GRID_STRIDE(i, n) st(y + i, __fadd_rn(__fmul_rn(ld(x + i), scale), shift));
}

template <typename T>
__device__ void clamp_impl(const T* x, T* y, i64 n, float lo, float hi) {
    GRID_STRIDE(i, n) { float v = ld(x + i); v = v < lo ? lo : v; v = v > hi ? hi : v; st(y + i, v); }
}

template <typename T>
__device__ void geglu_impl(const T* x, T* y, i64 rows, i64 width) {
    GRID_STRIDE(i, rows * width) {
        i64 r = i / width, c = i - r * width;
        st(y + i, ld(x + r * 2 * width + c) * gelu_erf(ld(x + r * 2 * width + width + c)));
    }
}

// out = a op b, b broadcast onto a: d.size = a's merged dimensions, d.stride = b's strides (0 where b repeats).
template <typename T>
__device__ void binary_impl(int op, const T* a, const T* b, T* y, i64 n, int ndim, Dims d) {
    GRID_STRIDE(i, n) {
        i64 off = offset_of(i, n, ndim, d);
        float u = ld(a + i), v = ld(b + off), r;
        if (op == 0) r = u + v; else if (op == 1) r = u - v; else if (op == 2) r = u * v; else r = u / v;
        st(y + i, r);
    }
}

// y (output order) from x: d.size = output shape, d.stride = x's strides in output order.
template <typename E>
__device__ void permute_impl(const E* x, E* y, i64 n, int ndim, Dims d) {
    GRID_STRIDE(i, n) {
        y[i] = x[offset_of(i, n, ndim, d)];
    }
}

// One input of a concatenation: `outer` rows of `block` elements, written `column` elements into rows of `row`.
template <typename E>
__device__ void concat_impl(const E* x, E* y, i64 outer, i64 block, i64 row, i64 column) {
    GRID_STRIDE(i, outer * block) { i64 o = i / block, c = i - o * block; y[o * row + column + c] = x[i]; }
}

// torch's nearest: source = min(floor(dst * (in / out)), in - 1), the scale in f32.
template <typename T>
__device__ void upsample_impl(const T* x, T* y, i64 planes, int h, int w, int oh, int ow, float sy, float sx) {
    GRID_STRIDE(i, planes * oh * ow) {
        i64 p = i / ((i64)oh * ow); int r = (int)(i - p * oh * ow); int oy = r / ow, ox = r - oy * ow;
        int iy = min((int)floorf(__fmul_rn((float)oy, sy)), h - 1), ix = min((int)floorf(__fmul_rn((float)ox, sx)), w - 1);
        y[i] = x[(p * h + iy) * w + ix];
    }
}

template <typename T>
__device__ void pool_impl(const T* x, T* y, i64 planes, int h, int w, int oh, int ow) {
    GRID_STRIDE(i, planes * oh * ow) {
        i64 p = i / ((i64)oh * ow); int r = (int)(i - p * oh * ow); int oi = r / ow, oj = r - oi * ow;
        int y0 = oi * h / oh, y1 = ((oi + 1) * h + oh - 1) / oh, x0 = oj * w / ow, x1 = ((oj + 1) * w + ow - 1) / ow;
        float sum = 0.0f;
        for (int yy = y0; yy < y1; ++yy) for (int xx = x0; xx < x1; ++xx) sum += ld(x + (p * h + yy) * w + xx);
        st(y + i, sum / (float)((y1 - y0) * (x1 - x0)));
    }
}

template <typename TI, typename TO>
__device__ void gather_impl(const i64* ids, const TI* table, TO* y, i64 rows, i64 width) {
    GRID_STRIDE(i, rows * width) { i64 r = i / width, c = i - r * width; st(y + i, ld(table + ids[r] * width + c)); }
}

// cols (C*kh*kw, pixels p0..p0+count) of one image (C, H, W), as torch's unfold orders them.
template <typename T>
__device__ void im2col_impl(const T* x, T* cols, int C, int H, int W, int kh, int kw, int sy, int sx, int pt, int pl,
                            int oh, int ow, i64 p0, i64 count) {
    GRID_STRIDE(i, (i64)C * kh * kw * count) {
        unsigned ui = (unsigned)i, ucount = (unsigned)count;
        unsigned row = ui / ucount, q = ui - row * ucount, p = (unsigned)p0 + q;
        int c = (int)(row / (unsigned)(kh * kw)), k = (int)row - c * kh * kw, ky = k / kw, kx = k - ky * kw;
        int oy = (int)(p / (unsigned)ow), ox = (int)p - oy * ow;
        int iy = oy * sy - pt + ky, ix = ox * sx - pl + kx;
        T v; v = T();
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[((i64)c * H + iy) * W + ix];
        cols[i] = v;
    }
}

// y[(n*C + c)*P + p] = bias[c]  (conv), or with P = 1 and n rows: y[r*C + c] = bias[c] (linear).
template <typename T>
__device__ void bias_impl(T* y, const T* bias, i64 n, i64 C, i64 P) {
    GRID_STRIDE(i, n * C * P) { i64 c = (i / P) % C; y[i] = bias[c]; }
}

// (O, C, kt) -> (kt, O, C)
template <typename T>
__device__ void repack_impl(const T* w, T* y, i64 O, i64 C, i64 kt) {
    GRID_STRIDE(i, O * C * kt) { i64 t = i / (O * C), oc = i - t * O * C; y[i] = w[oc * kt + t]; }
}

__device__ __forceinline__ float block_sum(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int k = 0; k < warps; ++k) total += shared[k];
    return total;
}

__device__ __forceinline__ float block_max(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float best = NEG_INF;
    for (int k = 0; k < warps; ++k) best = fmaxf(best, shared[k]);
    return best;
}

// One block per (clip, group). The group is `frames * perGroup` runs of `spatial` contiguous values.
template <typename T>
__device__ void groupnorm_impl(const T* x, T* y, const T* weight, const T* bias, int frames, int C, i64 spatial, int groups,
                               float eps, int silu) {
    __shared__ float shared[32];
    int clip = blockIdx.x / groups, g = blockIdx.x - clip * groups, per = C / groups;
    i64 count = (i64)frames * per * spatial;
    // The group is frames * per runs of `spatial` contiguous values; run r is (frame r / per, channel g*per + r % per).
    float sum = 0.0f;
    for (int f = 0; f < frames; ++f) for (int cc = 0; cc < per; ++cc) {
        const T* run = x + (((i64)clip * frames + f) * C + g * per + cc) * spatial;
        for (i64 s = threadIdx.x; s < spatial; s += blockDim.x) sum += ld(run + s);
    }
    float mean = block_sum(sum, shared) / (float)count;
    float sq = 0.0f;
    for (int f = 0; f < frames; ++f) for (int cc = 0; cc < per; ++cc) {
        const T* run = x + (((i64)clip * frames + f) * C + g * per + cc) * spatial;
        for (i64 s = threadIdx.x; s < spatial; s += blockDim.x) { float d = ld(run + s) - mean; sq += d * d; }
    }
    float inv = rsqrtf(block_sum(sq, shared) / (float)count + eps);
    for (int f = 0; f < frames; ++f) for (int cc = 0; cc < per; ++cc) {
        int c = g * per + cc;
        i64 at = (((i64)clip * frames + f) * C + c) * spatial;
        float w = weight ? ld(weight + c) : 1.0f, b = bias ? ld(bias + c) : 0.0f;
        for (i64 s = threadIdx.x; s < spatial; s += blockDim.x) {
            float v = (ld(x + at + s) - mean) * inv * w + b;
            if (silu) v = v / (1.0f + expf(-v));
            st(y + at + s, v);
        }
    }
}

template <typename T>
__device__ void layernorm_impl(const T* x, T* y, const T* weight, const T* bias, i64 width, float eps) {
    __shared__ float shared[32];
    const T* row = x + (i64)blockIdx.x * width; T* out = y + (i64)blockIdx.x * width;
    float sum = 0.0f;
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) sum += ld(row + i);
    float mean = block_sum(sum, shared) / (float)width;
    float sq = 0.0f;
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) { float d = ld(row + i) - mean; sq += d * d; }
    float inv = rsqrtf(block_sum(sq, shared) / (float)width + eps);
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) {
        float v = (ld(row + i) - mean) * inv;
        if (weight) v *= ld(weight + i);
        if (bias) v += ld(bias + i);
        st(out + i, v);
    }
}

template <typename TI, typename TO>
__device__ void softmax_impl(const TI* x, TO* y, i64 width) {
    __shared__ float shared[32];
    const TI* row = x + (i64)blockIdx.x * width; TO* out = y + (i64)blockIdx.x * width;
    float peak = NEG_INF;
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) peak = fmaxf(peak, ld(row + i));
    peak = block_max(peak, shared);
    float sum = 0.0f;
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) sum += expf(ld(row + i) - peak);
    float inv = 1.0f / block_sum(sum, shared);
    for (i64 i = threadIdx.x; i < width; i += blockDim.x) st(out + i, expf(ld(row + i) - peak) * inv);
}

#define FOR_TYPES(M) M(f32, float) M(f16, h16) M(bf16, b16)

#define INSTANTIATE(S, T) \
extern "C" __global__ void unary_##S(int op, const T* x, T* y, i64 n) { unary_impl(op, x, y, n); } \
extern "C" __global__ void affine_##S(const T* x, T* y, i64 n, float a, float b) { affine_impl(x, y, n, a, b); } \
extern "C" __global__ void clamp_##S(const T* x, T* y, i64 n, float a, float b) { clamp_impl(x, y, n, a, b); } \
extern "C" __global__ void geglu_##S(const T* x, T* y, i64 rows, i64 width) { geglu_impl(x, y, rows, width); } \
extern "C" __global__ void binary_##S(int op, const T* a, const T* b, T* y, i64 n, int ndim, Dims d) { binary_impl(op, a, b, y, n, ndim, d); } \
extern "C" __global__ void upsample_##S(const T* x, T* y, i64 planes, int h, int w, int oh, int ow, float sy, float sx) { upsample_impl(x, y, planes, h, w, oh, ow, sy, sx); } \
extern "C" __global__ void pool_##S(const T* x, T* y, i64 planes, int h, int w, int oh, int ow) { pool_impl(x, y, planes, h, w, oh, ow); } \
extern "C" __global__ void im2col_##S(const T* x, T* cols, int C, int H, int W, int kh, int kw, int sy, int sx, int pt, int pl, int oh, int ow, i64 p0, i64 count) \
    { im2col_impl(x, cols, C, H, W, kh, kw, sy, sx, pt, pl, oh, ow, p0, count); } \
extern "C" __global__ void bias_##S(T* y, const T* bias, i64 n, i64 C, i64 P) { bias_impl(y, bias, n, C, P); } \
extern "C" __global__ void repack_##S(const T* w, T* y, i64 O, i64 C, i64 kt) { repack_impl(w, y, O, C, kt); } \
extern "C" __global__ void groupnorm_##S(const T* x, T* y, const T* w, const T* b, int frames, int C, i64 spatial, int groups, float eps, int silu) \
    { groupnorm_impl(x, y, w, b, frames, C, spatial, groups, eps, silu); } \
extern "C" __global__ void layernorm_##S(const T* x, T* y, const T* w, const T* b, i64 width, float eps) { layernorm_impl(x, y, w, b, width, eps); } \
extern "C" __global__ void softmax_##S(const T* x, T* y, i64 width) { softmax_impl(x, y, width); } \
extern "C" __global__ void softmaxf_##S(const float* x, T* y, i64 width) { softmax_impl(x, y, width); }
FOR_TYPES(INSTANTIATE)

#define CONVERT(SI, TI, SO, TO) \
extern "C" __global__ void convert_##SI##_##SO(const TI* x, TO* y, i64 n) { convert_impl(x, y, n); } \
extern "C" __global__ void gather_##SI##_##SO(const i64* ids, const TI* t, TO* y, i64 rows, i64 width) { gather_impl(ids, t, y, rows, width); }
#define CONVERT_FROM(SI, TI) CONVERT(SI, TI, f32, float) CONVERT(SI, TI, f16, h16) CONVERT(SI, TI, bf16, b16)
FOR_TYPES(CONVERT_FROM)

extern "C" __global__ void permute_2(const u16* x, u16* y, i64 n, int ndim, Dims d) { permute_impl(x, y, n, ndim, d); }
extern "C" __global__ void permute_4(const unsigned* x, unsigned* y, i64 n, int ndim, Dims d) { permute_impl(x, y, n, ndim, d); }
extern "C" __global__ void concat_2(const u16* x, u16* y, i64 outer, i64 block, i64 row, i64 column) { concat_impl(x, y, outer, block, row, column); }
extern "C" __global__ void concat_4(const unsigned* x, unsigned* y, i64 outer, i64 block, i64 row, i64 column) { concat_impl(x, y, outer, block, row, column); }

"""#

    static let attentionScalar = #"""
// Flash attention: one thread per query row, keys and values streamed through shared memory in
// tiles of KT with an online softmax, so no score matrix exists. Token-major tensors:
// q[(b*Nq + i)*H*D + h*D + d]. Grid: (batch * query tiles, heads).
#define KT 16
template <typename T, int MAXD>
__device__ void attention_impl(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, int D, float scale, int causal) {
    __shared__ float ks[KT][MAXD];
    __shared__ float vs[KT][MAXD];
    int tiles = (Nq + blockDim.x - 1) / blockDim.x;
    int b = blockIdx.x / tiles, tile = blockIdx.x - b * tiles, h = blockIdx.y;
    int i = tile * blockDim.x + threadIdx.x;
    i64 width = (i64)H * D;
    bool active = i < Nq;
    float qr[MAXD], acc[MAXD];
    #pragma unroll
    for (int d = 0; d < MAXD; ++d) { qr[d] = (active && d < D) ? ld(q + ((i64)b * Nq + i) * width + h * D + d) : 0.0f; acc[d] = 0.0f; }
    float m = NEG_INF, l = 0.0f;
    int lastKey = causal ? min(Nk, tile * (int)blockDim.x + (int)blockDim.x) : Nk;
    for (int j0 = 0; j0 < lastKey; j0 += KT) {
        for (int e = threadIdx.x; e < KT * MAXD; e += blockDim.x) {
            int j = e / MAXD, d = e - j * MAXD;
            bool in = j0 + j < Nk && d < D;
            i64 at = ((i64)b * Nk + j0 + j) * width + h * D + d;
            ks[j][d] = in ? ld(k + at) : 0.0f;
            vs[j][d] = in ? ld(v + at) : 0.0f;
        }
        __syncthreads();
        if (active) {
            float s[KT];
            float tileMax = NEG_INF;
            #pragma unroll
            for (int j = 0; j < KT; ++j) {
                float dot = 0.0f;
                #pragma unroll
                for (int d = 0; d < MAXD; ++d) dot += qr[d] * ks[j][d];
                bool valid = j0 + j < Nk && (!causal || j0 + j <= i);
                s[j] = valid ? dot * scale : NEG_INF;
                tileMax = fmaxf(tileMax, s[j]);
            }
            if (tileMax > NEG_INF) {
                float mNew = fmaxf(m, tileMax);
                float correction = expf(m - mNew);
                l *= correction;
                #pragma unroll
                for (int d = 0; d < MAXD; ++d) acc[d] *= correction;
                #pragma unroll
                for (int j = 0; j < KT; ++j) {
                    float p = expf(s[j] - mNew);
                    l += p;
                    #pragma unroll
                    for (int d = 0; d < MAXD; ++d) acc[d] += p * vs[j][d];
                }
                m = mNew;
            }
        }
        __syncthreads();
    }
    if (active) {
        float inv = 1.0f / l;
        for (int d = 0; d < D; ++d) st(o + ((i64)b * Nq + i) * width + h * D + d, acc[d] * inv);
    }
}

#define INSTANTIATE_ATTENTION(S, T, MAXD) \
extern "C" __global__ void __launch_bounds__(128) attention##MAXD##_##S(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, int D, float scale, int causal) \
    { attention_impl<T, MAXD>(q, k, v, o, Nq, Nk, H, D, scale, causal); }
INSTANTIATE_ATTENTION(f32, float, 32)
INSTANTIATE_ATTENTION(f32, float, 64)
INSTANTIATE_ATTENTION(f32, float, 128)
INSTANTIATE_ATTENTION(f16, h16, 128)
INSTANTIATE_ATTENTION(bf16, b16, 128)
"""#

    static let attentionMMA = #"""
// Flash attention on tensor cores (FlashAttention-2's scheme): each warp owns 16 query rows; keys
// and values pass through shared memory in tiles of 64; S = Q·Kᵀ and O += P·V are mma.sync
// m16n8k16 products with f32 accumulators; the online softmax runs on the S fragments in
// registers, so no score matrix exists anywhere. P is rounded to the storage type for its product
// (as FlashAttention does). Token-major tensors: q[(b*Nq + i)*H*D + h*D + d].
// Grid: (batch * query tiles, heads); block: 32 * warps threads, a tile being 16 * warps rows.
#define KTILE 64

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b, const h16*) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b, const b16*) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    T a, b; st(&a, lo); st(&b, hi);
    return (unsigned)a.bits | ((unsigned)b.bits << 16);
}

__device__ __forceinline__ unsigned pair(const u16* p) { return (unsigned)p[0] | ((unsigned)p[1] << 16); }

struct __align__(16) u128 { unsigned x, y, z, w; };

// Two 8x8 b16 matrices from shared memory, transposed: the B fragment of V (rows = keys) for mma.
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned* r, const u16* p) {
    unsigned long long generic = (unsigned long long)p, shared;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(shared) : "l"(generic));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"((unsigned)shared));
}

template <typename T, int D>
__device__ void flash_impl(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, float scale, int causal, int vec) {
    const int S = D + 8;  // row stride in shared memory (16-byte multiple, conflict-free fragment reads)
    __shared__ __align__(16) u16 ks[KTILE * (D + 8)];
    __shared__ __align__(16) u16 vs[KTILE * (D + 8)];
    const u16* qb = (const u16*)q; const u16* kb = (const u16*)k; const u16* vb = (const u16*)v;
    int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, tig = lane & 3;
    int rows = warps * 16, tiles = (Nq + rows - 1) / rows;
    int b = blockIdx.x / tiles, tile = blockIdx.x - b * tiles, h = blockIdx.y;
    int r0 = tile * rows + warp * 16 + g, r1 = r0 + 8;
    i64 width = (i64)H * D;
    // Scores in log2 units: exp2(s·scale·log2 e − m) = exp(s·scale − m·ln 2).
    float scale2 = scale * 1.4426950408889634f;

    unsigned qa[D / 16][4];
    #pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        int col = kc * 16 + tig * 2;
        const u16* row0 = qb + ((i64)b * Nq + r0) * width + h * D;
        const u16* row1 = qb + ((i64)b * Nq + r1) * width + h * D;
        qa[kc][0] = r0 < Nq ? pair(row0 + col) : 0u;
        qa[kc][1] = r1 < Nq ? pair(row1 + col) : 0u;
        qa[kc][2] = r0 < Nq ? pair(row0 + col + 8) : 0u;
        qa[kc][3] = r1 < Nq ? pair(row1 + col + 8) : 0u;
    }
    float acc[D / 8][4];
    #pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) { acc[dt][0] = acc[dt][1] = acc[dt][2] = acc[dt][3] = 0.0f; }
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f;
    int keyEnd = causal ? min(Nk, tile * rows + rows) : Nk;

    for (int j0 = 0; j0 < keyEnd; j0 += KTILE) {
        __syncthreads();
        if (vec) {
            // 16-byte copies: rows of D values as D/8 vectors.
            for (int e = threadIdx.x; e < KTILE * (D / 8); e += blockDim.x) {
                int j = e / (D / 8), c = (e - j * (D / 8)) * 8;
                u128 kv = {0u, 0u, 0u, 0u}, vv = {0u, 0u, 0u, 0u};
                if (j0 + j < Nk) {
                    i64 at = ((i64)b * Nk + j0 + j) * width + h * D + c;
                    kv = *(const u128*)(kb + at); vv = *(const u128*)(vb + at);
                }
                *(u128*)(ks + j * S + c) = kv;
                *(u128*)(vs + j * S + c) = vv;
            }
        } else {
            for (int e = threadIdx.x; e < KTILE * D; e += blockDim.x) {
                int j = e / D, d = e - j * D;
                u16 kv = 0, vv = 0;
                if (j0 + j < Nk) { i64 at = ((i64)b * Nk + j0 + j) * width + h * D + d; kv = kb[at]; vv = vb[at]; }
                ks[j * S + d] = kv;
                vs[j * S + d] = vv;
            }
        }
        __syncthreads();

        float s[KTILE / 8][4];
        #pragma unroll
        for (int nt = 0; nt < KTILE / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            #pragma unroll
            for (int kc = 0; kc < D / 16; ++kc) {
                const u16* kr = ks + (nt * 8 + g) * S + kc * 16 + tig * 2;
                unsigned bf[2] = { *(const unsigned*)kr, *(const unsigned*)(kr + 8) };
                mma16816(s[nt], qa[kc], bf, (const T*)0);
            }
        }
        float mx0 = NEG_INF, mx1 = NEG_INF;
        #pragma unroll
        for (int nt = 0; nt < KTILE / 8; ++nt) {
            #pragma unroll
            for (int e = 0; e < 4; ++e) {
                int key = j0 + nt * 8 + tig * 2 + (e & 1), row = e < 2 ? r0 : r1;
                bool valid = key < Nk && (!causal || key <= row);
                s[nt][e] = valid ? s[nt][e] * scale2 : NEG_INF;
            }
            mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
            mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        float c0 = n0 == NEG_INF ? 1.0f : exp2f(m0 - n0), c1 = n1 == NEG_INF ? 1.0f : exp2f(m1 - n1);
        m0 = n0; m1 = n1;
        l0 *= c0; l1 *= c1;
        #pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) { acc[dt][0] *= c0; acc[dt][1] *= c0; acc[dt][2] *= c1; acc[dt][3] *= c1; }
        #pragma unroll
        for (int nt = 0; nt < KTILE / 8; ++nt) {
            s[nt][0] = n0 == NEG_INF ? 0.0f : exp2f(s[nt][0] - n0);
            s[nt][1] = n0 == NEG_INF ? 0.0f : exp2f(s[nt][1] - n0);
            s[nt][2] = n1 == NEG_INF ? 0.0f : exp2f(s[nt][2] - n1);
            s[nt][3] = n1 == NEG_INF ? 0.0f : exp2f(s[nt][3] - n1);
            l0 += s[nt][0] + s[nt][1];
            l1 += s[nt][2] + s[nt][3];
        }
        #pragma unroll
        for (int kc = 0; kc < KTILE / 16; ++kc) {
            // The S accumulators of key blocks 2kc and 2kc+1 are exactly the A fragment of P's k-chunk kc.
            unsigned pa[4] = { pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                               pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]), pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3]) };
            #pragma unroll
            for (int dt = 0; dt < D / 8; ++dt) {
                unsigned bf[2];
                ldmatrix_x2_trans(bf, vs + (kc * 16 + (lane & 15)) * S + dt * 8);
                mma16816(acc[dt], pa, bf, (const T*)0);
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float i0 = 1.0f / l0, i1 = 1.0f / l1;
    #pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
        int col = dt * 8 + tig * 2;
        if (r0 < Nq) {
            T* out = o + ((i64)b * Nq + r0) * width + h * D + col;
            st(out, acc[dt][0] * i0); st(out + 1, acc[dt][1] * i0);
        }
        if (r1 < Nq) {
            T* out = o + ((i64)b * Nq + r1) * width + h * D + col;
            st(out, acc[dt][2] * i1); st(out + 1, acc[dt][3] * i1);
        }
    }
}

#define FLASH(S, T, D) \
extern "C" __global__ void __launch_bounds__(256) flash##D##_##S(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, float scale, int causal, int vec) \
    { flash_impl<T, D>(q, k, v, o, Nq, Nk, H, scale, causal, vec); }
#define FLASH_DIMS(S, T) FLASH(S, T, 16) FLASH(S, T, 32) FLASH(S, T, 48) FLASH(S, T, 64) FLASH(S, T, 80) FLASH(S, T, 96) FLASH(S, T, 112) FLASH(S, T, 128)
FLASH_DIMS(f16, h16)
FLASH_DIMS(bf16, b16)
"""#
}
