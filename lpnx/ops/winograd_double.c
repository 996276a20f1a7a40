/* The forward of a 3x3 stride-1 convolution by Winograd F(2x2, 3x3) in
 * double: LPNX_CONV_DOUBLE's method where an image has tiles enough
 * (conv2d.c). Its transforms use only 0, +-1 and +-1/2, so in double they
 * lose nothing a float output could show; each output is rounded to float
 * once, as the direct sum in double (the oracle) would be, for 16
 * multiplies per 2x2 tile and channel pair where the direct sum takes 36.
 *
 * With the tile's 4x4 input patch d, the 3x3 kernel g and
 *   V = B^T d B,  U = G g G^T,  M[xi] = sum over ci of U[xi][co][ci] V[xi][ci],
 *   Y = A^T M A   the 2x2 output tile,
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 *   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],  A^T = [1 1 1 0; 0 1 -1 -1],
 * the sum over ci for a block of tiles at one of the 16 positions xi is
 * one dgemm (cout, cin) * (cin, tiles).
 *
 * Blocks are runs of one image's tiles, cut by the image's size and the
 * channel counts alone, so an image's output is the same bits in any
 * batch and on any number of threads; threads take whole blocks with
 * buffers of their own and call single-threaded dgemms. */
#include <string.h>


#include "ops.h"
#include "winograd.h"

/* A block's V and M aim at this many bytes... */
#define BLOCK_BYTES (2 * 1024 * 1024)
/* ... but hold at least this many tiles, or the dgemms get too narrow. */
#define BLOCK_MIN 64
/* Convolutions of fewer multiply-adds than this run on one thread. */
#define PARALLEL_WORK (1 << 20)

typedef struct {
    int64_t th, tw, tiles; /* tile rows, tile columns, tiles per image */
    int64_t per_block;     /* tiles per block (the image's last block may hold fewer) */
    int64_t blocks;        /* per image */
    int threads;
    size_t u_doubles;      /* (16, cout, cin) */
    size_t v_doubles;      /* per thread: (16, cin, per_block) */
    size_t m_doubles;      /* per thread: (16, cout, per_block) */
} wd_plan;


static wd_plan make_plan(const lpnx_conv2d_dims *d) {
    wd_plan p;
    p.th = (d->ho + 1) / 2;
    p.tw = (d->wo + 1) / 2;
    p.tiles = p.th * p.tw;
    const int64_t want = lpnx_imax(BLOCK_MIN, BLOCK_BYTES / (16 * (int64_t)sizeof(double) * lpnx_imax(d->cin + d->cout, 1)));
    p.blocks = (p.tiles + want - 1) / want;
    if (p.blocks < 1) p.blocks = 1;
    p.per_block = (p.tiles + p.blocks - 1) / p.blocks; /* even blocks */
    const int64_t count = d->n * p.blocks;
    const double work = (double)d->n * (double)d->cout * (double)(d->ho * d->wo) * (double)(d->cin * 9);
    p.threads = work >= PARALLEL_WORK ? (int)lpnx_imax(1, lpnx_imin(lpnx_get_num_threads(), count)) : 1;
    p.u_doubles = (size_t)16 * (size_t)d->cout * (size_t)d->cin;
    p.v_doubles = (size_t)16 * (size_t)d->cin * (size_t)p.per_block;
    p.m_doubles = (size_t)16 * (size_t)d->cout * (size_t)p.per_block;
    return p;
}

size_t lpnx_winograd_double_work_size(const lpnx_conv2d_dims *d) {
    const wd_plan p = make_plan(d);
    return 2 * (p.u_doubles + (size_t)p.threads * (p.v_doubles + p.m_doubles)) + 16;
}

/* U = G g G^T for every channel pair, into U (16, cout, cin). */
static void weight_transform(double *U, const float *weight, const lpnx_conv2d_dims *d) {
    const int64_t pairs = d->cout * d->cin;
    for (int64_t q = 0; q < pairs; q++) {
        const float *g = weight + q * 9; /* (3, 3) */
        double t[4][3];                  /* G g */
        for (int j = 0; j < 3; j++) {
            const double g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T */
            const double a = t[i][0], b = t[i][1], c = t[i][2];
            U[(i * 4 + 0) * pairs + q] = a;
            U[(i * 4 + 1) * pairs + q] = 0.5 * (a + b + c);
            U[(i * 4 + 2) * pairs + q] = 0.5 * (a - b + c);
            U[(i * 4 + 3) * pairs + q] = c;
        }
    }
}

/* v[xi * step] for the 16 positions xi: B^T d B of the 4x4 patch d. */
static inline void transform_patch(double *v, size_t step, double d[4][4]) {
    double r[4][4]; /* B^T d */
    for (int j = 0; j < 4; j++) {
        r[0][j] = d[0][j] - d[2][j];
        r[1][j] = d[1][j] + d[2][j];
        r[2][j] = d[2][j] - d[1][j];
        r[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; i++) { /* (B^T d) B */
        double *vi = v + (size_t)(i * 4) * step;
        vi[0] = r[i][0] - r[i][2];
        vi[step] = r[i][1] + r[i][2];
        vi[2 * step] = r[i][2] - r[i][1];
        vi[3 * step] = r[i][1] - r[i][3];
    }
}

/* V (16, cin, ld): the transformed patches of image `img`'s tiles
 * [t0, t0 + nb), a run of tiles of one tile row at a time; patches wholly
 * inside the image skip the bounds checks. */
static void input_block(double *V, int64_t ld, const float *inp, int64_t img, int64_t t0, int64_t nb,
                        const wd_plan *p, const lpnx_conv2d_dims *d) {
    const int64_t h = d->h, w = d->w, cin = d->cin;
    const size_t step = (size_t)cin * (size_t)ld; /* from position xi to xi + 1 */
    for (int64_t c = 0; c < cin; c++) {
        const float *x = inp + (img * cin + c) * h * w; /* (h, w) */
        double *vc = V + (size_t)c * (size_t)ld;
        for (int64_t k = 0; k < nb;) {
            const int64_t t = t0 + k, ty = t / p->tw, tx0 = t % p->tw;
            const int64_t run = lpnx_imin(nb - k, p->tw - tx0); /* tiles left in this tile row */
            const int64_t y0 = 2 * ty - d->pad_h;
            const int rows_inside = y0 >= 0 && y0 + 3 < h;
            for (int64_t q = 0; q < run; q++) {
                const int64_t x0 = 2 * (tx0 + q) - d->pad_w;
                double patch[4][4];
                if (rows_inside && x0 >= 0 && x0 + 3 < w) {
                    for (int i = 0; i < 4; i++) {
                        const float *row = x + (y0 + i) * w + x0;
                        for (int j = 0; j < 4; j++) patch[i][j] = row[j];
                    }
                } else {
                    for (int i = 0; i < 4; i++) {
                        const int64_t yy = y0 + i;
                        for (int j = 0; j < 4; j++) {
                            const int64_t xx = x0 + j;
                            patch[i][j] = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? x[yy * w + xx] : 0.0;
                        }
                    }
                }
                transform_patch(vc + k + q, step, patch);
            }
            k += run;
        }
    }
}

/* out = A^T M A + bias for image `img`'s tiles [t0, t0 + nb), each value
 * rounded once; the parts of edge tiles past the output are dropped. */
static void output_block(float *out, const double *M, int64_t ld, const float *bias, int64_t img, int64_t t0,
                         int64_t nb, const wd_plan *p, const lpnx_conv2d_dims *d) {
    const int64_t ho = d->ho, wo = d->wo, cout = d->cout;
    const size_t step = (size_t)cout * (size_t)ld; /* from position xi to xi + 1 */
    for (int64_t co = 0; co < cout; co++) {
        float *y = out + (img * cout + co) * ho * wo; /* (ho, wo) */
        const double b = bias ? bias[co] : 0.0;
        for (int64_t k = 0; k < nb; k++) {
            const double *m = M + (size_t)co * (size_t)ld + (size_t)k;
            double mm[4][4];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) mm[i][j] = m[(size_t)(i * 4 + j) * step];
            double r[2][4]; /* A^T M */
            for (int j = 0; j < 4; j++) {
                r[0][j] = mm[0][j] + mm[1][j] + mm[2][j];
                r[1][j] = mm[1][j] - mm[2][j] - mm[3][j];
            }
            const int64_t t = t0 + k, oy = 2 * (t / p->tw), ox = 2 * (t % p->tw);
            for (int i = 0; i < 2 && oy + i < ho; i++) {
                const double v0 = r[i][0] + r[i][1] + r[i][2], v1 = r[i][1] - r[i][2] - r[i][3];
                y[(oy + i) * wo + ox] = (float)(v0 + b);
                if (ox + 1 < wo) y[(oy + i) * wo + ox + 1] = (float)(v1 + b);
            }
        }
    }
}

void lpnx_winograd_double_forward(float *out, const float *inp, const float *weight, const float *bias,
                                  float *work, const lpnx_conv2d_dims *d) {
    const wd_plan p = make_plan(d);
    /* doubles on 8 bytes: the workspace starts on 64 and holds 16 spare floats */
    void *base = work;
    double *U = base; /* (16, cout, cin) */
    double *buffers = U + p.u_doubles;
    weight_transform(U, weight, d);
    const int64_t count = d->n * p.blocks, ld = p.per_block, cin = d->cin, cout = d->cout;
#pragma omp parallel num_threads(p.threads) if (p.threads > 1)
    {
        const int me = lpnx_thread_num();
        double *V = buffers + (size_t)me * (p.v_doubles + p.m_doubles); /* (16, cin, ld) */
        double *M = V + p.v_doubles;                                     /* (16, cout, ld) */
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < count; b++) {
            const int64_t img = b / p.blocks, t0 = (b % p.blocks) * p.per_block;
            const int64_t nb = lpnx_imin(p.per_block, p.tiles - t0);
            input_block(V, ld, inp, img, t0, nb, &p, d);
            for (int xi = 0; xi < 16; xi++)
                lpnx_dgemm(0, 0, (int)cout, (int)nb, (int)cin, U + (size_t)xi * (size_t)(cout * cin), (int)cin,
                           V + (size_t)xi * (size_t)(cin * ld), (int)ld, 0.0, M + (size_t)xi * (size_t)(cout * ld),
                           (int)ld);
            output_block(out, M, ld, bias, img, t0, nb, &p, d);
        }
    }
}
