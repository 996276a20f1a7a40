/* 3x3 stride-1 convolution by Winograd's minimal filtering F(m x m, 3x3)
 * with m = 2 or 4 (Lavin and Gray, "Fast Algorithms for Convolutional
 * Neural Networks").
 *
 * The output is cut into m x m tiles; tile (ty, tx) reads the a x a input
 * patch (a = m + 2) whose top-left pixel is (m ty - pad_h, m tx - pad_w).
 * With
 *   V = B^T d B   the patch d transformed        (a x a per input channel)
 *   U = G g G^T   the 3x3 kernel g transformed   (a x a per channel pair)
 *   Y = A^T M A,  M[xi] = sum over ci of U[xi][co][ci] * V[xi][ci]
 * Y is the m x m output tile: a^2 multiplies per tile and channel pair
 * where the direct sum takes 9 m^2 (16 for 36 with m = 2, 36 for 144 with
 * m = 4). For each of the a^2 positions xi, the sum over ci for a block of
 * tiles is one gemm (cout, cin) * (cin, tiles).
 *
 * The backward is the adjoint of the same chain:
 *   dM = A dY A^T                      (dY the output tile's gradient)
 *   dU[xi] += dM[xi] V[xi]^T           (cout, cin), summed over tiles
 *   dg = G^T dU G                      the weight gradient
 *   dV[xi] = U[xi]^T dM[xi]            (cin, tiles)
 *   dd = B dV B^T                      added onto the input patch
 * so it is exact in exact arithmetic, as the forward is. F(2x2, 3x3) uses
 * only 0, +-1 and +-1/2 and loses as little to rounding as the direct sum;
 * F(4x4, 3x3) uses the points 0, +-1, +-2 and loses more (a relative error
 * of a few 1e-6 in float32), for 1.8 times fewer multiplies.
 *
 * Tiles are taken in blocks sized for the cache: a group of images
 * (lpnx_conv2d_groups: a few small images, or one), or rows of tiles of
 * a one-image group. The backward sums dU over one group's blocks, in
 * order, and writes that group's weight gradient apart;
 * lpnx_conv2d_backward adds the groups up. With blocks enough, each
 * thread takes whole blocks (backward: whole groups) with its own buffers
 * and calls single-threaded gemms; otherwise the blocks go in sequence,
 * the transforms run in parallel over channels and the a^2 gemms in
 * parallel over xi. */
#include <string.h>


#include "conv_groups.h"
#include "ops.h"
#include "winograd.h"

/* The transforms are loops of adds over runs of tiles: where the compiler
 * can, they are also built for the wider vector units of newer x86 CPUs,
 * and the loader picks the variant the CPU runs. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LPNX_NO_CLONES)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define VECTOR_CLONES
#define ALWAYS_INLINE inline
#endif

/* A block's transformed input and products aim at this many bytes... */
#define BLOCK_BYTES (512 * 1024)
/* ... but hold at least this many tiles, or the gemms get too narrow. */
#define BLOCK_MIN 64
/* Convolutions of fewer multiply-adds than this run on one thread: a
 * parallel region costs more than they do. */
#define PARALLEL_WORK (1 << 20)

/* Runs of tiles, and of kernels, are transformed CHUNK at a time through
 * small local arrays laid out so that the loops over them are straight
 * vector code. */
#define CHUNK 64
/* Input and output rows are read and written as m interleaved phases:
 * phase k of a run holds columns x0 + m j + k, j = 0..CHUNK, and room to
 * round its length up to whole vectors. */
#define PHASE_LEN (CHUNK + 16)
#define PH(r, k, j) ph[((r) * M_ + (k)) * PHASE_LEN + (j)]

/* How the tiles are cut into blocks and shared among threads. A block is
 * a group's tiles (image by image, each in tile-row order), or `rows`
 * tile rows of a one-image group. */
typedef struct {
    int m, a, positions;     /* output tile m x m, input patch a x a, a*a products */
    int64_t th, tw;          /* tiles per image down and across */
    int64_t per_image;       /* th * tw */
    int64_t c;               /* most images in a block */
    int64_t rows;            /* tile rows per block when image_blocks > 1 */
    int64_t image_blocks;    /* blocks per image: 1 (then up to c images a block), or more */
    lpnx_conv2d_group list[1 << LPNX_CONV2D_SPLIT_LEVELS]; /* the batch's groups */
    int64_t groups;          /* how many */
    int64_t count;           /* blocks in the batch */
    int64_t block;           /* tiles in the largest block */
    int64_t ld;              /* floats per row of V and M: block and slack for whole vectors */
    int threads;             /* threads taking whole blocks; 1: the blocks go in
                                sequence and, with par, the threads share each block */
    int threads_back;        /* the same for the backward, which deals out whole images */
    int par;                 /* 0: one thread does everything */
    size_t u_floats;         /* U or dU (a*a, cout, cin) */
    size_t v_floats;         /* V or dV (a*a, cin, ld), one per thread */
    size_t m_floats;         /* M or dM (a*a, cout, ld), one per thread */
} plan;


int lpnx_winograd_applies(const lpnx_conv2d_dims *d) {
    return d->kh == 3 && d->kw == 3 && d->stride_h == 1 && d->stride_w == 1 && d->dil_h == 1 &&
           d->dil_w == 1;
}

static plan make_plan(const lpnx_conv2d_dims *d, int m) {
    plan p;
    p.m = m;
    p.a = m + 2;
    p.positions = p.a * p.a;
    p.th = (d->ho + m - 1) / m;
    p.tw = (d->wo + m - 1) / m;
    p.per_image = p.th * p.tw;
    const int64_t want =
        lpnx_imax(BLOCK_MIN, BLOCK_BYTES / (int64_t)((size_t)p.positions * sizeof(float) * (size_t)(d->cin + d->cout)));
    if (p.per_image <= want) {
        p.c = lpnx_imax(1, want / lpnx_imax(p.per_image, 1));
        p.rows = p.th;
        p.image_blocks = 1;
        p.block = lpnx_imin(p.c, lpnx_imax(d->n, 1)) * p.per_image;
    } else {
        p.c = 1;
        p.rows = lpnx_imax(1, want / p.tw);
        p.image_blocks = (p.th + p.rows - 1) / p.rows;
        p.block = p.rows * p.tw;
    }
    p.groups = lpnx_conv2d_groups(p.list, d->n, d->batch_parts);
    p.count = lpnx_conv2d_units(p.list, p.groups, p.c, p.image_blocks);
    p.par = (double)d->n * (double)d->cout * (double)(d->ho * d->wo) * (double)(d->cin * 9) >= PARALLEL_WORK;
    p.threads = p.threads_back = p.par ? lpnx_get_num_threads() : 1;
    if (p.count < 2 * p.threads) p.threads = 1;
    if (p.groups < p.threads_back) p.threads_back = 1;
    p.ld = p.block + 16;
    p.u_floats = (size_t)p.positions * (size_t)d->cout * (size_t)d->cin;
    p.v_floats = (size_t)p.positions * (size_t)d->cin * (size_t)p.ld;
    p.m_floats = (size_t)p.positions * (size_t)d->cout * (size_t)p.ld;
    return p;
}

/* Block b: the images *imgs (a run of one group's images) and their
 * tiles [*t0, *t0 + *nb), numbered image by image. */
static void block_span(const plan *p, int64_t b, lpnx_conv2d_group *imgs, int64_t *t0, int64_t *nb) {
    int64_t k, j0, nn, piece;
    lpnx_conv2d_unit(p->list, p->groups, p->c, p->image_blocks, b, &k, &j0, &nn, &piece);
    imgs->first = p->list[k].first + j0 * p->list[k].stride;
    imgs->stride = p->list[k].stride;
    imgs->count = nn;
    if (p->image_blocks == 1) {
        *t0 = 0;
        *nb = nn * p->per_image;
        return;
    }
    *t0 = piece * p->rows * p->tw;
    *nb = lpnx_imin(p->rows, p->th - piece * p->rows) * p->tw;
}

size_t lpnx_winograd_work_size(const lpnx_conv2d_dims *d, int m) {
    plan p = make_plan(d, m);
    const size_t threads = (size_t)(p.threads > p.threads_back ? p.threads : p.threads_back);
    return (1 + threads) * p.u_floats + threads * (p.v_floats + p.m_floats);
}

/* lpnx_gemm for the non-empty products of this file. */
static void gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    lpnx_gemm(trans_a, trans_b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C,
              (int)ldc);
}

/* A run of a group's tiles in one tile row: image n, tile row ty, tile
 * columns [tx0, tx0 + count). */
typedef struct {
    int64_t n, ty, tx0, count;
} tile_span;

/* The run of the group's tiles starting at tile t and ending before `end`
 * that lies in one tile row, at most CHUNK long. */
static tile_span tile_run(const plan *p, const lpnx_conv2d_group *grp, int64_t t, int64_t end) {
    const int64_t r = t % p->per_image;
    tile_span s;
    s.n = grp->first + grp->stride * (t / p->per_image);
    s.ty = r / p->tw;
    s.tx0 = r % p->tw;
    s.count = lpnx_imin(lpnx_imin(p->tw, s.tx0 + end - t), s.tx0 + CHUNK) - s.tx0;
    return s;
}

/* ---- the 1-D transforms ------------------------------------------------
 * Each takes its inputs as expressions and assigns its outputs, so that a
 * 2-D transform is a row pass and a column pass of plain scalar code the
 * compiler vectorizes across tiles. */

/* F(2,3): t = B^T d, its adjoint d = B t; y = A^T m, its adjoint m = A y;
 * u = G g, its adjoint g = G^T u. */
#define BT4(d0, d1, d2, d3, t0, t1, t2, t3) \
    do {                                      \
        t0 = (d0) - (d2);                     \
        t1 = (d1) + (d2);                     \
        t2 = (d2) - (d1);                     \
        t3 = (d1) - (d3);                     \
    } while (0)
#define B4(v0, v1, v2, v3, d0, d1, d2, d3) \
    do {                                     \
        d0 = (v0);                           \
        d1 = (v1) - (v2) + (v3);             \
        d2 = (v1) + (v2) - (v0);             \
        d3 = -(v3);                          \
    } while (0)
#define AT4(m0, m1, m2, m3, y0, y1) \
    do {                            \
        y0 = (m0) + (m1) + (m2);    \
        y1 = (m1) - (m2) - (m3);    \
    } while (0)
#define A4(y0, y1, m0, m1, m2, m3) \
    do {                           \
        m0 = (y0);                 \
        m1 = (y0) + (y1);          \
        m2 = (y0) - (y1);          \
        m3 = -(y1);                \
    } while (0)
#define G4(g0, g1, g2, u0, u1, u2, u3)        \
    do {                                      \
        u0 = (g0);                            \
        u1 = 0.5f * ((g0) + (g1) + (g2));     \
        u2 = 0.5f * ((g0) - (g1) + (g2));     \
        u3 = (g2);                            \
    } while (0)
#define GT4(u0, u1, u2, u3, g0, g1, g2)       \
    do {                                      \
        g0 = (u0) + 0.5f * ((u1) + (u2));     \
        g1 = 0.5f * ((u1) - (u2));            \
        g2 = 0.5f * ((u1) + (u2)) + (u3);     \
    } while (0)

/* F(4,3), points 0, 1, -1, 2, -2 and infinity. */
#define BT6(d0, d1, d2, d3, d4, d5, t0, t1, t2, t3, t4, t5)                       \
    do {                                                                          \
        const float s0_ = (d4)-4.0f * (d2), s1_ = (d3)-4.0f * (d1);               \
        const float s2_ = (d4) - (d2), s3_ = 2.0f * ((d3) - (d1));                \
        t0 = 4.0f * (d0)-5.0f * (d2) + (d4);                                      \
        t1 = s0_ + s1_;                                                           \
        t2 = s0_ - s1_;                                                           \
        t3 = s2_ + s3_;                                                           \
        t4 = s2_ - s3_;                                                           \
        t5 = 4.0f * (d1)-5.0f * (d3) + (d5);                                      \
    } while (0)
#define B6(v0, v1, v2, v3, v4, v5, d0, d1, d2, d3, d4, d5)                        \
    do {                                                                          \
        const float p_ = (v1) + (v2), q_ = (v1) - (v2);                           \
        const float r_ = (v3) + (v4), s_ = (v3) - (v4);                           \
        d0 = 4.0f * (v0);                                                         \
        d1 = -4.0f * q_ - 2.0f * s_ + 4.0f * (v5);                                \
        d2 = -5.0f * (v0)-4.0f * p_ - r_;                                         \
        d3 = q_ + 2.0f * s_ - 5.0f * (v5);                                        \
        d4 = (v0) + p_ + r_;                                                      \
        d5 = (v5);                                                                \
    } while (0)
#define AT6(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)                               \
    do {                                                                          \
        const float p_ = (m1) + (m2), q_ = (m1) - (m2);                           \
        const float r_ = (m3) + (m4), s_ = (m3) - (m4);                           \
        y0 = (m0) + p_ + r_;                                                      \
        y1 = q_ + 2.0f * s_;                                                      \
        y2 = p_ + 4.0f * r_;                                                      \
        y3 = q_ + 8.0f * s_ + (m5);                                               \
    } while (0)
#define A6(y0, y1, y2, y3, m0, m1, m2, m3, m4, m5)                                \
    do {                                                                          \
        const float p_ = (y0) + (y2), q_ = (y1) + (y3);                           \
        const float r_ = (y0) + 4.0f * (y2), s_ = 2.0f * (y1) + 8.0f * (y3);      \
        m0 = (y0);                                                                \
        m1 = p_ + q_;                                                             \
        m2 = p_ - q_;                                                             \
        m3 = r_ + s_;                                                             \
        m4 = r_ - s_;                                                             \
        m5 = (y3);                                                                \
    } while (0)
#define G6(g0, g1, g2, u0, u1, u2, u3, u4, u5)                                    \
    do {                                                                          \
        const float p_ = -((g0) + (g2)) * (1.0f / 6), q_ = -(g1) * (1.0f / 6);    \
        const float r_ = (g0) * (1.0f / 24) + (g2) * (1.0f / 6), s_ = (g1) * (1.0f / 12); \
        u0 = (g0) * 0.25f;                                                        \
        u1 = p_ + q_;                                                             \
        u2 = p_ - q_;                                                             \
        u3 = r_ + s_;                                                             \
        u4 = r_ - s_;                                                             \
        u5 = (g2);                                                                \
    } while (0)
#define GT6(u0, u1, u2, u3, u4, u5, g0, g1, g2)                                   \
    do {                                                                          \
        const float p_ = (u1) + (u2), q_ = (u1) - (u2);                           \
        const float r_ = (u3) + (u4), s_ = (u3) - (u4);                           \
        g0 = 0.25f * (u0) - p_ * (1.0f / 6) + r_ * (1.0f / 24);                   \
        g1 = -q_ * (1.0f / 6) + s_ * (1.0f / 12);                                 \
        g2 = (r_ - p_) * (1.0f / 6) + (u5);                                       \
    } while (0)

/* Small copies and fills are loops here: runs are short, and memcpy or
 * memset would cost a call for every row of every run. */

/* dst[j] = 0 for j < n. */
static ALWAYS_INLINE void fill_zero(float *dst, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) dst[j] = 0.0f;
}

/* dst[j] = src[j] for j < n; whole vectors when n is a multiple of 16. */
static ALWAYS_INLINE void copy_vectors(float *dst, const float *src, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) dst[j] = src[j];
}

/* ---- kernel transforms ------------------------------------------------
 * The loop bodies over kernels and tiles below are the 2-D transforms
 * written out as a column pass and a row pass of the 1-D ones on named
 * scalars, which the compiler vectorizes across the loop. */

/* u[xi * xs + j] = (G g G^T)[xi] for the nq <= CHUNK kernels g = w + 9j. */
VECTOR_CLONES static void weight_run(float *u, int64_t xs, const float *w, int64_t nq, int m) {
    float g[9][CHUNK], o[36][CHUNK];
#pragma omp simd
    for (int64_t j = 0; j < nq; j++)
        for (int k = 0; k < 9; k++) g[k][j] = w[9 * j + k];
    if (m == 2) {
#pragma omp simd
        for (int64_t j = 0; j < nq; j++) {
            float e00, e01, e02, e10, e11, e12, e20, e21, e22, e30, e31, e32; /* G g */
            G4(g[0][j], g[3][j], g[6][j], e00, e10, e20, e30);
            G4(g[1][j], g[4][j], g[7][j], e01, e11, e21, e31);
            G4(g[2][j], g[5][j], g[8][j], e02, e12, e22, e32);
            G4(e00, e01, e02, o[0][j], o[1][j], o[2][j], o[3][j]);
            G4(e10, e11, e12, o[4][j], o[5][j], o[6][j], o[7][j]);
            G4(e20, e21, e22, o[8][j], o[9][j], o[10][j], o[11][j]);
            G4(e30, e31, e32, o[12][j], o[13][j], o[14][j], o[15][j]);
        }
        for (int xi = 0; xi < 16; xi++) copy_vectors(u + xi * xs, o[xi], nq);
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < nq; j++) {
        float e00, e01, e02, e10, e11, e12, e20, e21, e22, e30, e31, e32, e40, e41, e42, e50, e51,
            e52; /* G g */
        G6(g[0][j], g[3][j], g[6][j], e00, e10, e20, e30, e40, e50);
        G6(g[1][j], g[4][j], g[7][j], e01, e11, e21, e31, e41, e51);
        G6(g[2][j], g[5][j], g[8][j], e02, e12, e22, e32, e42, e52);
        G6(e00, e01, e02, o[0][j], o[1][j], o[2][j], o[3][j], o[4][j], o[5][j]);
        G6(e10, e11, e12, o[6][j], o[7][j], o[8][j], o[9][j], o[10][j], o[11][j]);
        G6(e20, e21, e22, o[12][j], o[13][j], o[14][j], o[15][j], o[16][j], o[17][j]);
        G6(e30, e31, e32, o[18][j], o[19][j], o[20][j], o[21][j], o[22][j], o[23][j]);
        G6(e40, e41, e42, o[24][j], o[25][j], o[26][j], o[27][j], o[28][j], o[29][j]);
        G6(e50, e51, e52, o[30][j], o[31][j], o[32][j], o[33][j], o[34][j], o[35][j]);
    }
    for (int xi = 0; xi < 36; xi++) copy_vectors(u + xi * xs, o[xi], nq);
}

/* w + 9j += G^T u G for the nq <= CHUNK kernels j, where u[xi] is the sum
 * over k < parts of du[k * part + xi * xs + j]. */
VECTOR_CLONES static void weight_run_adjoint(float *w, const float *du, int64_t xs, int parts, int64_t part,
                                             int64_t nq, int m) {
    float g[9][CHUNK], o[36][CHUNK];
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++) {
        copy_vectors(o[xi], du + xi * xs, nq);
        for (int k = 1; k < parts; k++) {
            const float *more = du + k * part + xi * xs;
#pragma omp simd
            for (int64_t j = 0; j < nq; j++) o[xi][j] += more[j];
        }
    }
    if (m == 2) {
#pragma omp simd
        for (int64_t j = 0; j < nq; j++) {
            float e00, e01, e02, e03, e10, e11, e12, e13, e20, e21, e22, e23; /* G^T u */
            GT4(o[0][j], o[4][j], o[8][j], o[12][j], e00, e10, e20);
            GT4(o[1][j], o[5][j], o[9][j], o[13][j], e01, e11, e21);
            GT4(o[2][j], o[6][j], o[10][j], o[14][j], e02, e12, e22);
            GT4(o[3][j], o[7][j], o[11][j], o[15][j], e03, e13, e23);
            GT4(e00, e01, e02, e03, g[0][j], g[1][j], g[2][j]);
            GT4(e10, e11, e12, e13, g[3][j], g[4][j], g[5][j]);
            GT4(e20, e21, e22, e23, g[6][j], g[7][j], g[8][j]);
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < nq; j++) {
            float e00, e01, e02, e03, e04, e05, e10, e11, e12, e13, e14, e15, e20, e21, e22, e23, e24,
                e25; /* G^T u */
            GT6(o[0][j], o[6][j], o[12][j], o[18][j], o[24][j], o[30][j], e00, e10, e20);
            GT6(o[1][j], o[7][j], o[13][j], o[19][j], o[25][j], o[31][j], e01, e11, e21);
            GT6(o[2][j], o[8][j], o[14][j], o[20][j], o[26][j], o[32][j], e02, e12, e22);
            GT6(o[3][j], o[9][j], o[15][j], o[21][j], o[27][j], o[33][j], e03, e13, e23);
            GT6(o[4][j], o[10][j], o[16][j], o[22][j], o[28][j], o[34][j], e04, e14, e24);
            GT6(o[5][j], o[11][j], o[17][j], o[23][j], o[29][j], o[35][j], e05, e15, e25);
            GT6(e00, e01, e02, e03, e04, e05, g[0][j], g[1][j], g[2][j]);
            GT6(e10, e11, e12, e13, e14, e15, g[3][j], g[4][j], g[5][j]);
            GT6(e20, e21, e22, e23, e24, e25, g[6][j], g[7][j], g[8][j]);
        }
    }
#pragma omp simd
    for (int64_t j = 0; j < nq; j++)
        for (int k = 0; k < 9; k++) w[9 * j + k] += g[k][j];
}

/* U (a*a, cout, cin): U[xi][co][ci] = (G g G^T)[xi] for g = weight[co][ci]. */
static void weight_transform(float *U, const float *weight, const plan *p, const lpnx_conv2d_dims *d) {
    const int64_t cc = d->cout * d->cin;
#pragma omp parallel for schedule(static) if (p->par && p->positions * cc >= LPNX_PARALLEL_MIN)
    for (int64_t q = 0; q < cc; q += CHUNK) weight_run(U + q, cc, weight + 9 * q, lpnx_imin(CHUNK, cc - q), p->m);
}

/* dweight[co][ci] += G^T dU[.][co][ci] G, the adjoint of weight_transform,
 * where dU is the sum of `parts` (a*a, cout, cin) arrays stored one after
 * another. */
static void weight_transform_adjoint(float *dweight, const float *dU, int parts, const plan *p,
                                     const lpnx_conv2d_dims *d) {
    const int64_t cc = d->cout * d->cin;
#pragma omp parallel for schedule(static) if (p->par && p->positions * cc * parts >= LPNX_PARALLEL_MIN)
    for (int64_t q = 0; q < cc; q += CHUNK)
        weight_run_adjoint(dweight + 9 * q, dU + q, cc, parts, (int64_t)p->u_floats, lpnx_imin(CHUNK, cc - q), p->m);
}

/* ---- moving runs between images and phases ----------------------------
 * Everything from here to the whole-block transforms is inlined into four
 * run functions, built for each vector unit, with m a constant. */

/* PH(r, k, j) = image row y0 + r, column x0 + m j + k (0 outside the image)
 * for r < rows, k < m and j < n, and 0 for j up to n rounded up to a
 * multiple of 16, so that the deinterleaving loops are whole vectors.
 * xc (h, w) is one channel. */
static ALWAYS_INLINE void gather(float *ph, int rows, const int m, int64_t n, const float *xc, int64_t h,
                                 int64_t w, int64_t y0, int64_t x0) {
    const int M_ = m;
    const int64_t nr = (n + 15) / 16 * 16, len = m * nr;
    const int64_t a = lpnx_imin(lpnx_imax(-x0, 0), m * n), b = lpnx_imax(a, lpnx_imin(w - x0, m * n)); /* inside: [a, b) */
    float buf[4 * PHASE_LEN]; /* the row's columns x0 .. x0 + len */
    for (int r = 0; r < rows; r++) {
        const int64_t y = y0 + r;
        if (y < 0 || y >= h) {
            for (int k = 0; k < m; k++) fill_zero(&PH(r, k, 0), nr);
            continue;
        }
        const float *row = xc + y * w; /* row[x0 + x] for x in [a, b) */
        fill_zero(buf, a);
#pragma omp simd
        for (int64_t x = a; x < b; x++) buf[x] = row[x0 + x];
        fill_zero(buf + b, len - b);
        float *p0 = &PH(r, 0, 0), *p1 = &PH(r, 1, 0);
        if (m == 2) {
#pragma omp simd
            for (int64_t j = 0; j < nr; j++) {
                p0[j] = buf[2 * j];
                p1[j] = buf[2 * j + 1];
            }
        } else {
            float *p2 = &PH(r, 2, 0), *p3 = &PH(r, 3, 0);
#pragma omp simd
            for (int64_t j = 0; j < nr; j++) {
                p0[j] = buf[4 * j];
                p1[j] = buf[4 * j + 1];
                p2[j] = buf[4 * j + 2];
                p3[j] = buf[4 * j + 3];
            }
        }
    }
}

/* The adjoint of gather: image row y0 + r, column x0 + m j + k +=
 * PH(r, k, j), or, with assign, = PH(r, k, j); what falls outside the
 * image is dropped. PH(r, k, j) must be set for j up to n rounded up to a
 * multiple of 16. */
static ALWAYS_INLINE void scatter(float *xc, const float *ph, int rows, const int m, int64_t n, int64_t h,
                                  int64_t w, int64_t y0, int64_t x0, int assign) {
    const int M_ = m;
    const int64_t nr = (n + 15) / 16 * 16;
    const int64_t a = lpnx_imin(lpnx_imax(-x0, 0), m * n), b = lpnx_imax(a, lpnx_imin(w - x0, m * n)); /* inside: [a, b) */
    float buf[4 * PHASE_LEN]; /* the row's columns x0 .. x0 + m nr */
    for (int r = 0; r < rows; r++) {
        const int64_t y = y0 + r;
        if (y < 0 || y >= h) continue;
        const float *p0 = &PH(r, 0, 0), *p1 = &PH(r, 1, 0);
        if (m == 2) {
#pragma omp simd
            for (int64_t j = 0; j < nr; j++) {
                buf[2 * j] = p0[j];
                buf[2 * j + 1] = p1[j];
            }
        } else {
            const float *p2 = &PH(r, 2, 0), *p3 = &PH(r, 3, 0);
#pragma omp simd
            for (int64_t j = 0; j < nr; j++) {
                buf[4 * j] = p0[j];
                buf[4 * j + 1] = p1[j];
                buf[4 * j + 2] = p2[j];
                buf[4 * j + 3] = p3[j];
            }
        }
        float *dst = xc + y * w; /* dst[x0 + x] for x in [a, b) */
        if (assign) {
#pragma omp simd
            for (int64_t x = a; x < b; x++) dst[x0 + x] = buf[x];
        } else {
#pragma omp simd
            for (int64_t x = a; x < b; x++) dst[x0 + x] += buf[x];
        }
    }
}

/* ---- tile transforms on runs ------------------------------------------
 * A run is nt <= CHUNK tiles of one tile row. ph holds the run's input
 * patch rows (a rows) or output tile rows (m rows) in phases; o has a row
 * per position xi, o[xi][j] for tile j. The loop bodies are the 2-D
 * transforms written out as a column pass and a row pass of the 1-D ones
 * on named scalars, which the compiler vectorizes across tiles. */

/* o = B^T d B for the patches d of the run, read from ph (a rows, nt + 1
 * phase entries: patch j spans phases j and j + 1). */
static ALWAYS_INLINE void input_tiles(float o[36][CHUNK], const float *ph, int64_t nt, const int m) {
    if (m == 2) {
        const int M_ = 2;
#pragma omp simd
        for (int64_t j = 0; j < nt; j++) {
            float e00, e01, e02, e03, e10, e11, e12, e13, e20, e21, e22, e23, e30, e31, e32,
                e33; /* B^T d */
            BT4(PH(0, 0, j), PH(1, 0, j), PH(2, 0, j), PH(3, 0, j), e00, e10, e20, e30);
            BT4(PH(0, 1, j), PH(1, 1, j), PH(2, 1, j), PH(3, 1, j), e01, e11, e21, e31);
            BT4(PH(0, 0, j + 1), PH(1, 0, j + 1), PH(2, 0, j + 1), PH(3, 0, j + 1), e02, e12, e22, e32);
            BT4(PH(0, 1, j + 1), PH(1, 1, j + 1), PH(2, 1, j + 1), PH(3, 1, j + 1), e03, e13, e23, e33);
            BT4(e00, e01, e02, e03, o[0][j], o[1][j], o[2][j], o[3][j]);
            BT4(e10, e11, e12, e13, o[4][j], o[5][j], o[6][j], o[7][j]);
            BT4(e20, e21, e22, e23, o[8][j], o[9][j], o[10][j], o[11][j]);
            BT4(e30, e31, e32, e33, o[12][j], o[13][j], o[14][j], o[15][j]);
        }
        return;
    }
    const int M_ = 4;
#pragma omp simd
    for (int64_t j = 0; j < nt; j++) {
        float e00, e01, e02, e03, e04, e05, e10, e11, e12, e13, e14, e15, e20, e21, e22, e23, e24, e25,
            e30, e31, e32, e33, e34, e35, e40, e41, e42, e43, e44, e45, e50, e51, e52, e53, e54,
            e55; /* B^T d */
        BT6(PH(0, 0, j), PH(1, 0, j), PH(2, 0, j), PH(3, 0, j), PH(4, 0, j), PH(5, 0, j), e00, e10,
            e20, e30, e40, e50);
        BT6(PH(0, 1, j), PH(1, 1, j), PH(2, 1, j), PH(3, 1, j), PH(4, 1, j), PH(5, 1, j), e01, e11,
            e21, e31, e41, e51);
        BT6(PH(0, 2, j), PH(1, 2, j), PH(2, 2, j), PH(3, 2, j), PH(4, 2, j), PH(5, 2, j), e02, e12,
            e22, e32, e42, e52);
        BT6(PH(0, 3, j), PH(1, 3, j), PH(2, 3, j), PH(3, 3, j), PH(4, 3, j), PH(5, 3, j), e03, e13,
            e23, e33, e43, e53);
        BT6(PH(0, 0, j + 1), PH(1, 0, j + 1), PH(2, 0, j + 1), PH(3, 0, j + 1), PH(4, 0, j + 1), PH(5,
            0, j + 1), e04, e14, e24, e34, e44, e54);
        BT6(PH(0, 1, j + 1), PH(1, 1, j + 1), PH(2, 1, j + 1), PH(3, 1, j + 1), PH(4, 1, j + 1), PH(5,
            1, j + 1), e05, e15, e25, e35, e45, e55);
        BT6(e00, e01, e02, e03, e04, e05, o[0][j], o[1][j], o[2][j], o[3][j], o[4][j], o[5][j]);
        BT6(e10, e11, e12, e13, e14, e15, o[6][j], o[7][j], o[8][j], o[9][j], o[10][j], o[11][j]);
        BT6(e20, e21, e22, e23, e24, e25, o[12][j], o[13][j], o[14][j], o[15][j], o[16][j], o[17][j]);
        BT6(e30, e31, e32, e33, e34, e35, o[18][j], o[19][j], o[20][j], o[21][j], o[22][j], o[23][j]);
        BT6(e40, e41, e42, e43, e44, e45, o[24][j], o[25][j], o[26][j], o[27][j], o[28][j], o[29][j]);
        BT6(e50, e51, e52, e53, e54, e55, o[30][j], o[31][j], o[32][j], o[33][j], o[34][j], o[35][j]);
    }
}

/* The adjoint of input_tiles: ph (a rows, nt + 1 phase entries, zero up
 * to the multiple of 16) = the sum of the patches B dV B^T, dV[xi] =
 * o[xi][j], where they overlap. */
static ALWAYS_INLINE void input_tiles_adjoint(float *ph, float o[36][CHUNK], int64_t nt, const int m) {
    const int a = m + 2, M_ = m;
    float spill[6][2][PHASE_LEN]; /* the patch columns m, m + 1 of tile j - 1, at j */
    if (m == 2) {
#pragma omp simd
        for (int64_t j = 0; j < nt; j++) {
            float e00, e01, e02, e03, e10, e11, e12, e13, e20, e21, e22, e23, e30, e31, e32,
                e33; /* dV B^T */
            B4(o[0][j], o[1][j], o[2][j], o[3][j], e00, e01, e02, e03);
            B4(o[4][j], o[5][j], o[6][j], o[7][j], e10, e11, e12, e13);
            B4(o[8][j], o[9][j], o[10][j], o[11][j], e20, e21, e22, e23);
            B4(o[12][j], o[13][j], o[14][j], o[15][j], e30, e31, e32, e33);
            B4(e00, e10, e20, e30, PH(0, 0, j), PH(1, 0, j), PH(2, 0, j), PH(3, 0, j));
            B4(e01, e11, e21, e31, PH(0, 1, j), PH(1, 1, j), PH(2, 1, j), PH(3, 1, j));
            B4(e02, e12, e22, e32, spill[0][0][j + 1], spill[1][0][j + 1], spill[2][0][j + 1],
                spill[3][0][j + 1]);
            B4(e03, e13, e23, e33, spill[0][1][j + 1], spill[1][1][j + 1], spill[2][1][j + 1],
                spill[3][1][j + 1]);
        }
    } else {
#pragma omp simd
        for (int64_t j = 0; j < nt; j++) {
            float e00, e01, e02, e03, e04, e05, e10, e11, e12, e13, e14, e15, e20, e21, e22, e23, e24,
                e25, e30, e31, e32, e33, e34, e35, e40, e41, e42, e43, e44, e45, e50, e51, e52, e53,
                e54, e55; /* dV B^T */
            B6(o[0][j], o[1][j], o[2][j], o[3][j], o[4][j], o[5][j], e00, e01, e02, e03, e04, e05);
            B6(o[6][j], o[7][j], o[8][j], o[9][j], o[10][j], o[11][j], e10, e11, e12, e13, e14, e15);
            B6(o[12][j], o[13][j], o[14][j], o[15][j], o[16][j], o[17][j], e20, e21, e22, e23, e24,
                e25);
            B6(o[18][j], o[19][j], o[20][j], o[21][j], o[22][j], o[23][j], e30, e31, e32, e33, e34,
                e35);
            B6(o[24][j], o[25][j], o[26][j], o[27][j], o[28][j], o[29][j], e40, e41, e42, e43, e44,
                e45);
            B6(o[30][j], o[31][j], o[32][j], o[33][j], o[34][j], o[35][j], e50, e51, e52, e53, e54,
                e55);
            B6(e00, e10, e20, e30, e40, e50, PH(0, 0, j), PH(1, 0, j), PH(2, 0, j), PH(3, 0, j), PH(4,
                0, j), PH(5, 0, j));
            B6(e01, e11, e21, e31, e41, e51, PH(0, 1, j), PH(1, 1, j), PH(2, 1, j), PH(3, 1, j), PH(4,
                1, j), PH(5, 1, j));
            B6(e02, e12, e22, e32, e42, e52, PH(0, 2, j), PH(1, 2, j), PH(2, 2, j), PH(3, 2, j), PH(4,
                2, j), PH(5, 2, j));
            B6(e03, e13, e23, e33, e43, e53, PH(0, 3, j), PH(1, 3, j), PH(2, 3, j), PH(3, 3, j), PH(4,
                3, j), PH(5, 3, j));
            B6(e04, e14, e24, e34, e44, e54, spill[0][0][j + 1], spill[1][0][j + 1],
                spill[2][0][j + 1], spill[3][0][j + 1], spill[4][0][j + 1], spill[5][0][j + 1]);
            B6(e05, e15, e25, e35, e45, e55, spill[0][1][j + 1], spill[1][1][j + 1],
                spill[2][1][j + 1], spill[3][1][j + 1], spill[4][1][j + 1], spill[5][1][j + 1]);
        }
    }
    const int64_t nr = (nt + 1 + 15) / 16 * 16; /* the length scatter reads */
    for (int r = 0; r < a; r++) {
        for (int k = 0; k < m; k++) fill_zero(&PH(r, k, nt), nr - nt);
        spill[r][0][0] = spill[r][1][0] = 0;
        for (int k = 0; k < 2; k++) {
#pragma omp simd
            for (int64_t j = 0; j <= nt; j++) PH(r, k, j) += spill[r][k][j];
        }
    }
}

/* ph (m rows, nt phase entries, zero up to the multiple of 16) =
 * A^T M A + b for the run's tiles, M[xi] = o[xi][j]. */
static ALWAYS_INLINE void output_tiles(float *ph, float o[36][CHUNK], float b, int64_t nt, const int m) {
    const int M_ = m;
    const int64_t nr = (nt + 15) / 16 * 16; /* the length scatter reads */
    for (int r = 0; r < m; r++)
        for (int k = 0; k < m; k++) fill_zero(&PH(r, k, nt), nr - nt);
    if (m == 2) {
#pragma omp simd
        for (int64_t j = 0; j < nt; j++) {
            float e00, e01, e02, e03, e10, e11, e12, e13; /* A^T M */
            AT4(o[0][j], o[4][j], o[8][j], o[12][j], e00, e10);
            AT4(o[1][j], o[5][j], o[9][j], o[13][j], e01, e11);
            AT4(o[2][j], o[6][j], o[10][j], o[14][j], e02, e12);
            AT4(o[3][j], o[7][j], o[11][j], o[15][j], e03, e13);
            float y00, y01, y10, y11;
            AT4(e00, e01, e02, e03, y00, y01);
            AT4(e10, e11, e12, e13, y10, y11);
            PH(0, 0, j) = y00 + b; PH(0, 1, j) = y01 + b;
            PH(1, 0, j) = y10 + b; PH(1, 1, j) = y11 + b;
        }
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < nt; j++) {
        float e00, e01, e02, e03, e04, e05, e10, e11, e12, e13, e14, e15, e20, e21, e22, e23, e24, e25,
            e30, e31, e32, e33, e34, e35; /* A^T M */
        AT6(o[0][j], o[6][j], o[12][j], o[18][j], o[24][j], o[30][j], e00, e10, e20, e30);
        AT6(o[1][j], o[7][j], o[13][j], o[19][j], o[25][j], o[31][j], e01, e11, e21, e31);
        AT6(o[2][j], o[8][j], o[14][j], o[20][j], o[26][j], o[32][j], e02, e12, e22, e32);
        AT6(o[3][j], o[9][j], o[15][j], o[21][j], o[27][j], o[33][j], e03, e13, e23, e33);
        AT6(o[4][j], o[10][j], o[16][j], o[22][j], o[28][j], o[34][j], e04, e14, e24, e34);
        AT6(o[5][j], o[11][j], o[17][j], o[23][j], o[29][j], o[35][j], e05, e15, e25, e35);
        float y00, y01, y02, y03, y10, y11, y12, y13, y20, y21, y22, y23, y30, y31, y32, y33;
        AT6(e00, e01, e02, e03, e04, e05, y00, y01, y02, y03);
        AT6(e10, e11, e12, e13, e14, e15, y10, y11, y12, y13);
        AT6(e20, e21, e22, e23, e24, e25, y20, y21, y22, y23);
        AT6(e30, e31, e32, e33, e34, e35, y30, y31, y32, y33);
        PH(0, 0, j) = y00 + b; PH(0, 1, j) = y01 + b; PH(0, 2, j) = y02 + b; PH(0, 3, j) = y03 + b;
        PH(1, 0, j) = y10 + b; PH(1, 1, j) = y11 + b; PH(1, 2, j) = y12 + b; PH(1, 3, j) = y13 + b;
        PH(2, 0, j) = y20 + b; PH(2, 1, j) = y21 + b; PH(2, 2, j) = y22 + b; PH(2, 3, j) = y23 + b;
        PH(3, 0, j) = y30 + b; PH(3, 1, j) = y31 + b; PH(3, 2, j) = y32 + b; PH(3, 3, j) = y33 + b;
    }
}

/* The adjoint of output_tiles without the bias: o[xi][j] = (A dY A^T)[xi]
 * for the output gradients dY read from ph (m rows, nt phase entries). */
static ALWAYS_INLINE void output_tiles_adjoint(float o[36][CHUNK], const float *ph, int64_t nt, const int m) {
    const int M_ = m;
    if (m == 2) {
#pragma omp simd
        for (int64_t j = 0; j < nt; j++) {
            float e00, e01, e02, e03, e10, e11, e12, e13; /* dY A^T */
            A4(PH(0, 0, j), PH(0, 1, j), e00, e01, e02, e03);
            A4(PH(1, 0, j), PH(1, 1, j), e10, e11, e12, e13);
            A4(e00, e10, o[0][j], o[4][j], o[8][j], o[12][j]);
            A4(e01, e11, o[1][j], o[5][j], o[9][j], o[13][j]);
            A4(e02, e12, o[2][j], o[6][j], o[10][j], o[14][j]);
            A4(e03, e13, o[3][j], o[7][j], o[11][j], o[15][j]);
        }
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < nt; j++) {
        float e00, e01, e02, e03, e04, e05, e10, e11, e12, e13, e14, e15, e20, e21, e22, e23, e24, e25,
            e30, e31, e32, e33, e34, e35; /* dY A^T */
        A6(PH(0, 0, j), PH(0, 1, j), PH(0, 2, j), PH(0, 3, j), e00, e01, e02, e03, e04, e05);
        A6(PH(1, 0, j), PH(1, 1, j), PH(1, 2, j), PH(1, 3, j), e10, e11, e12, e13, e14, e15);
        A6(PH(2, 0, j), PH(2, 1, j), PH(2, 2, j), PH(2, 3, j), e20, e21, e22, e23, e24, e25);
        A6(PH(3, 0, j), PH(3, 1, j), PH(3, 2, j), PH(3, 3, j), e30, e31, e32, e33, e34, e35);
        A6(e00, e10, e20, e30, o[0][j], o[6][j], o[12][j], o[18][j], o[24][j], o[30][j]);
        A6(e01, e11, e21, e31, o[1][j], o[7][j], o[13][j], o[19][j], o[25][j], o[31][j]);
        A6(e02, e12, e22, e32, o[2][j], o[8][j], o[14][j], o[20][j], o[26][j], o[32][j]);
        A6(e03, e13, e23, e33, o[3][j], o[9][j], o[15][j], o[21][j], o[27][j], o[33][j]);
        A6(e04, e14, e24, e34, o[4][j], o[10][j], o[16][j], o[22][j], o[28][j], o[34][j]);
        A6(e05, e15, e25, e35, o[5][j], o[11][j], o[17][j], o[23][j], o[29][j], o[35][j]);
    }
}

/* ---- runs -------------------------------------------------------------
 * v, mm: the run's first entry in V or M, whose position rows are xs
 * apart; the rows have slack for whole vectors past the run. */

/* The transformed input patches of a run of nt tiles into v. xc (h, w) is
 * one input channel; the run's first patch starts at (y0, x0). */
static ALWAYS_INLINE void input_run_m(float *v, int64_t xs, const float *xc, int64_t h, int64_t w, int64_t y0,
                                      int64_t x0, int64_t nt, const int m) {
    float ph[6 * 4 * PHASE_LEN], o[36][CHUNK];
    gather(ph, m + 2, m, nt + 1, xc, h, w, y0, x0);
    input_tiles(o, ph, nt, m);
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++) copy_vectors(v + xi * xs, o[xi], (nt + 15) / 16 * 16);
}

VECTOR_CLONES static void input_run(float *v, int64_t xs, const float *xc, int64_t h, int64_t w, int64_t y0,
                                    int64_t x0, int64_t nt, int m) {
    if (m == 2)
        input_run_m(v, xs, xc, h, w, y0, x0, nt, 2);
    else
        input_run_m(v, xs, xc, h, w, y0, x0, nt, 4);
}

/* xc += the patches B dV B^T of a run, dV read from v. */
static ALWAYS_INLINE void input_run_adjoint_m(float *xc, const float *v, int64_t xs, int64_t h, int64_t w,
                                              int64_t y0, int64_t x0, int64_t nt, const int m) {
    float ph[6 * 4 * PHASE_LEN], o[36][CHUNK];
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++) copy_vectors(o[xi], v + xi * xs, (nt + 15) / 16 * 16);
    input_tiles_adjoint(ph, o, nt, m);
    scatter(xc, ph, m + 2, m, nt + 1, h, w, y0, x0, 0);
}

VECTOR_CLONES static void input_run_adjoint(float *xc, const float *v, int64_t xs, int64_t h, int64_t w,
                                            int64_t y0, int64_t x0, int64_t nt, int m) {
    if (m == 2)
        input_run_adjoint_m(xc, v, xs, h, w, y0, x0, nt, 2);
    else
        input_run_adjoint_m(xc, v, xs, h, w, y0, x0, nt, 4);
}

/* yc (ho, wo) = A^T M A + b for a run, M read from mm; the run's first
 * tile starts at (y0, x0). */
static ALWAYS_INLINE void output_run_m(float *yc, const float *mm, int64_t xs, float b, int64_t ho, int64_t wo,
                                       int64_t y0, int64_t x0, int64_t nt, const int m) {
    float ph[6 * 4 * PHASE_LEN], o[36][CHUNK];
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++) copy_vectors(o[xi], mm + xi * xs, (nt + 15) / 16 * 16);
    output_tiles(ph, o, b, nt, m);
    scatter(yc, ph, m, m, nt, ho, wo, y0, x0, 1);
}

VECTOR_CLONES static void output_run(float *yc, const float *mm, int64_t xs, float b, int64_t ho, int64_t wo,
                                     int64_t y0, int64_t x0, int64_t nt, int m) {
    if (m == 2)
        output_run_m(yc, mm, xs, b, ho, wo, y0, x0, nt, 2);
    else
        output_run_m(yc, mm, xs, b, ho, wo, y0, x0, nt, 4);
}

/* mm = A dY A^T for a run, dY read from gc (ho, wo), zero past it. */
static ALWAYS_INLINE void output_run_adjoint_m(float *mm, int64_t xs, const float *gc, int64_t ho, int64_t wo,
                                               int64_t y0, int64_t x0, int64_t nt, const int m) {
    float ph[6 * 4 * PHASE_LEN], o[36][CHUNK];
    gather(ph, m, m, nt, gc, ho, wo, y0, x0);
    output_tiles_adjoint(o, ph, nt, m);
    for (int xi = 0; xi < (m + 2) * (m + 2); xi++) copy_vectors(mm + xi * xs, o[xi], (nt + 15) / 16 * 16);
}

VECTOR_CLONES static void output_run_adjoint(float *mm, int64_t xs, const float *gc, int64_t ho, int64_t wo,
                                             int64_t y0, int64_t x0, int64_t nt, int m) {
    if (m == 2)
        output_run_adjoint_m(mm, xs, gc, ho, wo, y0, x0, nt, 2);
    else
        output_run_adjoint_m(mm, xs, gc, ho, wo, y0, x0, nt, 4);
}

/* ---- whole-block transforms --------------------------------------------
 * V (a*a, cin, ld) and M (a*a, cout, ld) hold a block's nb tiles in the
 * first nb columns of rows ld = p->ld long. */

/* V: the transformed input patches of tiles [t0, t0 + nb). */
static void input_block(float *V, const float *inp, const plan *p, const lpnx_conv2d_group *grp, int64_t t0, int64_t nb,
                        const lpnx_conv2d_dims *d, int par) {
    const int64_t h = d->h, w = d->w, cin = d->cin, ld = p->ld;
#pragma omp parallel for schedule(static) if (par && cin * nb * p->positions >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < cin; c++) {
        for (int64_t t = t0; t < t0 + nb;) {
            const tile_span s = tile_run(p, grp, t, t0 + nb);
            input_run(V + c * ld + (t - t0), cin * ld, inp + (s.n * cin + c) * h * w, h, w, p->m * s.ty - d->pad_h,
                      p->m * s.tx0 - d->pad_w, s.count, p->m);
            t += s.count;
        }
    }
}

/* dinp += the patches B dV B^T of tiles [t0, t0 + nb), V holding dV.
 * Neighbouring patches overlap: parallel over channels. */
static void input_block_adjoint(float *dinp, const float *V, const plan *p, const lpnx_conv2d_group *grp,
                                int64_t t0, int64_t nb, const lpnx_conv2d_dims *d, int par) {
    const int64_t h = d->h, w = d->w, cin = d->cin, ld = p->ld;
#pragma omp parallel for schedule(static) if (par && cin * nb * p->positions >= LPNX_PARALLEL_MIN)
    for (int64_t c = 0; c < cin; c++) {
        for (int64_t t = t0; t < t0 + nb;) {
            const tile_span s = tile_run(p, grp, t, t0 + nb);
            input_run_adjoint(dinp + (s.n * cin + c) * h * w, V + c * ld + (t - t0), cin * ld, h, w,
                              p->m * s.ty - d->pad_h, p->m * s.tx0 - d->pad_w, s.count, p->m);
            t += s.count;
        }
    }
}

/* out = A^T M A (+ bias) for tiles [t0, t0 + nb); the parts of edge tiles
 * past the output are dropped. */
static void output_block(float *out, const float *M, const float *bias, const plan *p,
                         const lpnx_conv2d_group *grp, int64_t t0, int64_t nb, const lpnx_conv2d_dims *d, int par) {
    const int64_t ho = d->ho, wo = d->wo, cout = d->cout, ld = p->ld;
#pragma omp parallel for schedule(static) if (par && cout * nb * p->positions >= LPNX_PARALLEL_MIN)
    for (int64_t co = 0; co < cout; co++) {
        const float b = bias ? bias[co] : 0.0f;
        for (int64_t t = t0; t < t0 + nb;) {
            const tile_span s = tile_run(p, grp, t, t0 + nb);
            output_run(out + (s.n * cout + co) * ho * wo, M + co * ld + (t - t0), cout * ld, b, ho, wo, p->m * s.ty,
                       p->m * s.tx0, s.count, p->m);
            t += s.count;
        }
    }
}

/* M = A dY A^T for tiles [t0, t0 + nb), dY read from dout. */
static void output_block_adjoint(float *M, const float *dout, const plan *p, const lpnx_conv2d_group *grp,
                                 int64_t t0, int64_t nb, const lpnx_conv2d_dims *d, int par) {
    const int64_t ho = d->ho, wo = d->wo, cout = d->cout, ld = p->ld;
#pragma omp parallel for schedule(static) if (par && cout * nb * p->positions >= LPNX_PARALLEL_MIN)
    for (int64_t co = 0; co < cout; co++) {
        for (int64_t t = t0; t < t0 + nb;) {
            const tile_span s = tile_run(p, grp, t, t0 + nb);
            output_run_adjoint(M + co * ld + (t - t0), cout * ld, dout + (s.n * cout + co) * ho * wo, ho, wo,
                               p->m * s.ty, p->m * s.tx0, s.count, p->m);
            t += s.count;
        }
    }
}

/* ---- forward and backward -------------------------------------------- */

/* The products of one block: M[xi] (cout, nb) = U[xi] (cout, cin) V[xi] (cin, nb).
 * par: the products split over the OpenMP threads. */
static void products(float *M, const float *U, const float *V, int64_t nb, const plan *p,
                     const lpnx_conv2d_dims *d, int par) {
    const int64_t cin = d->cin, cout = d->cout, ld = p->ld;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int xi = 0; xi < p->positions; xi++)
        gemm(0, 0, cout, nb, cin, U + xi * cout * cin, cin, V + xi * cin * ld, ld, 0.0f, M + xi * cout * ld, ld);
}

/* The backward products of one block, M holding dM (a*a, cout, nb) and V
 * holding V (a*a, cin, nb): dU[xi] += dM[xi] V[xi]^T, then, when want_dv,
 * V[xi] = U[xi]^T dM[xi] (dV replaces V). */
static void products_adjoint(float *dU, float beta, float *V, const float *U, const float *M, int64_t nb,
                             int want_dv,
                             const plan *p, const lpnx_conv2d_dims *d, int par) {
    const int64_t cin = d->cin, cout = d->cout, cc = cin * cout, ld = p->ld;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int xi = 0; xi < p->positions; xi++) {
        float *v = V + xi * cin * ld;        /* (cin, nb), rows ld apart */
        const float *m = M + xi * cout * ld; /* (cout, nb), rows ld apart */
        gemm(0, 1, cout, cin, nb, m, ld, v, ld, beta, dU + xi * cc, cin);
        if (want_dv) gemm(1, 0, cin, nb, cout, U + xi * cc, cin, m, ld, 0.0f, v, ld);
    }
}

void lpnx_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           float *work, const lpnx_conv2d_dims *d, int m) {
    const plan p = make_plan(d, m);
    float *U = work;                     /* (a*a, cout, cin) */
    float *buffers = U + 2 * p.u_floats; /* per thread: V (a*a, cin, block), M (a*a, cout, block) */
    weight_transform(U, weight, &p, d);
    if (p.threads == 1) {
        float *V = buffers, *M = V + p.v_floats;
        for (int64_t b = 0; b < p.count; b++) {
            lpnx_conv2d_group imgs;
            int64_t t0, nb;
            block_span(&p, b, &imgs, &t0, &nb);
            input_block(V, inp, &p, &imgs, t0, nb, d, p.par);
            products(M, U, V, nb, &p, d, p.par);
            output_block(out, M, bias, &p, &imgs, t0, nb, d, p.par);
        }
        return;
    }
#pragma omp parallel num_threads(p.threads)
    {
        float *V = buffers + (size_t)lpnx_thread_num() * (p.v_floats + p.m_floats), *M = V + p.v_floats;
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < p.count; b++) {
            lpnx_conv2d_group imgs;
            int64_t t0, nb;
            block_span(&p, b, &imgs, &t0, &nb);
            input_block(V, inp, &p, &imgs, t0, nb, d, 0);
            products(M, U, V, nb, &p, d, 0);
            output_block(out, M, bias, &p, &imgs, t0, nb, d, 0);
        }
    }
}

/* One block of the backward: V and M are the block's buffers, dU the
 * weight-gradient accumulator (beta 0: the block writes it; 1: adds). */
static void backward_block(float *dinp, float *dU, float beta, float *V, float *M, const float *dout,
                           const float *inp, const float *U, const plan *p, const lpnx_conv2d_group *grp,
                           int64_t t0, int64_t nb, const lpnx_conv2d_dims *d, int par) {
    input_block(V, inp, p, grp, t0, nb, d, par);
    output_block_adjoint(M, dout, p, grp, t0, nb, d, par);
    products_adjoint(dU, beta, V, U, M, nb, dinp != NULL, p, d, par);
    if (dinp) input_block_adjoint(dinp, V, p, grp, t0, nb, d, par);
}

/* Group k's blocks, in order, with dU its own accumulator; then its
 * weight gradient into dweight (cout, cin, 3, 3). */
static void backward_group(float *dinp, float *dweight, float *dU, float *V, float *M, const float *dout,
                           const float *inp, const float *U, const plan *p, int64_t k, const lpnx_conv2d_dims *d,
                           int par) {
    const int64_t b0 = lpnx_conv2d_units(p->list, k, p->c, p->image_blocks);
    const int64_t b1 = b0 + lpnx_conv2d_units(p->list + k, 1, p->c, p->image_blocks);
    for (int64_t b = b0; b < b1; b++) {
        lpnx_conv2d_group imgs;
        int64_t t0, nb;
        block_span(p, b, &imgs, &t0, &nb);
        backward_block(dinp, dU, b > b0 ? 1.0f : 0.0f, V, M, dout, inp, U, p, &imgs, t0, nb, d, par);
    }
    memset(dweight, 0, (size_t)(d->cout * d->cin * 9) * sizeof(float));
    weight_transform_adjoint(dweight, dU, 1, p, d);
}

void lpnx_winograd_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                            const float *weight, float *work, const lpnx_conv2d_dims *d, int m) {
    const plan p = make_plan(d, m);
    const int threads = p.threads_back;
    const size_t per_group = (size_t)(d->cout * d->cin * 9);
    float *U = work;                                    /* (a*a, cout, cin) */
    float *dU = U + p.u_floats;                         /* (threads, a*a, cout, cin): one per thread */
    float *buffers = dU + (size_t)threads * p.u_floats; /* per thread: V (a*a, cin, block), M (a*a, cout, block) */
    if (dinp) weight_transform(U, weight, &p, d);
    if (threads == 1) {
        float *V = buffers, *M = V + p.v_floats;
        for (int64_t k = 0; k < p.groups; k++)
            backward_group(dinp, dweight + (size_t)k * per_group, dU, V, M, dout, inp, U, &p, k, d, p.par);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const int me = lpnx_thread_num();
        float *V = buffers + (size_t)me * (p.v_floats + p.m_floats), *M = V + p.v_floats;
        float *mine = dU + (size_t)me * p.u_floats;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < p.groups; k++)
            backward_group(dinp, dweight + (size_t)k * per_group, mine, V, M, dout, inp, U, &p, k, d, 0);
    }
}
