/* Elementwise kernels over strided operands with broadcasting (stride 0).
 * Dims are first coalesced (adjacent dims that are one run in every
 * operand become one), so contiguous tensors become a single unit-stride
 * loop the compiler vectorises; the rest walk rows of the last dim. */
#include <math.h>
#include <string.h>

#include "ops.h"

#define MAXOPS 3

typedef struct {
    int ndim;
    int64_t size[LPNX_MAXDIM];
    int64_t stride[MAXOPS][LPNX_MAXDIM];
    int nops;
} walk;

static void walk_init(walk *w, int nops, const lpnx_operand *ops, int ndim, const int64_t *size) {
    w->nops = nops;
    w->ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (size[d] == 1) continue; /* size-1 dims never move */
        int k = w->ndim;
        if (k > 0) {
            int merge = 1;
            for (int o = 0; o < nops; o++)
                if (w->stride[o][k - 1] != ops[o].stride[d] * size[d]) merge = 0;
            if (merge) {
                w->size[k - 1] *= size[d];
                for (int o = 0; o < nops; o++) w->stride[o][k - 1] = ops[o].stride[d];
                continue;
            }
        }
        w->size[k] = size[d];
        for (int o = 0; o < nops; o++) w->stride[o][k] = ops[o].stride[d];
        w->ndim++;
    }
    if (w->ndim == 0) { /* a single element */
        w->ndim = 1;
        w->size[0] = 1;
        for (int o = 0; o < nops; o++) w->stride[o][0] = 1;
    }
}

/* Offsets of row r (all dims but the last) in each operand. */
static void row_offsets(const walk *w, int64_t r, int64_t *off) {
    for (int o = 0; o < w->nops; o++) off[o] = 0;
    for (int d = w->ndim - 2; d >= 0; d--) {
        int64_t i = r % w->size[d];
        r /= w->size[d];
        for (int o = 0; o < w->nops; o++) off[o] += i * w->stride[o][d];
    }
}

static int64_t walk_numel(const walk *w) {
    int64_t n = 1;
    for (int d = 0; d < w->ndim; d++) n *= w->size[d];
    return n;
}

/* Runs body(row pointer offsets, start, count) over the index space: split
 * into rows of the last dim, and a long single row into chunks. */
#define WALK(w, ops, BODY)                                                          \
    do {                                                                            \
        int64_t inner_ = (w).size[(w).ndim - 1];                                    \
        int64_t rows_ = walk_numel(&(w)) / (inner_ ? inner_ : 1);                   \
        if (inner_ == 0) break;                                                     \
        int64_t chunk_ = inner_, nchunks_ = 1;                                      \
        if (rows_ == 1 && inner_ >= 2 * LPNX_PARALLEL_MIN) {                        \
            chunk_ = LPNX_PARALLEL_MIN;                                             \
            nchunks_ = (inner_ + chunk_ - 1) / chunk_;                              \
        }                                                                           \
        int64_t tasks_ = rows_ * nchunks_;                                          \
        _Pragma("omp parallel for schedule(static) if (rows_ * inner_ >= LPNX_PARALLEL_MIN)") \
        for (int64_t t_ = 0; t_ < tasks_; t_++) {                                   \
            int64_t off_[MAXOPS];                                                   \
            int64_t r_ = t_ / nchunks_, c_ = t_ % nchunks_;                         \
            row_offsets(&(w), r_, off_);                                            \
            int64_t start_ = c_ * chunk_;                                           \
            int64_t n_ = inner_ - start_ < chunk_ ? inner_ - start_ : chunk_;       \
            for (int o_ = 0; o_ < (w).nops; o_++)                                   \
                off_[o_] += start_ * (w).stride[o_][(w).ndim - 1];                  \
            BODY(off_, n_);                                                         \
        }                                                                           \
    } while (0)

static inline float sigmoidf(float x) {
    /* Stable on both tails: exp of a non-positive number only. */
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* Binary expression on x (from a) and y (from b). */
#define BIN_CASES(X)                                     \
    X(LPNX_OP_ADD, x + y)                                \
    X(LPNX_OP_SUB, x - y)                                \
    X(LPNX_OP_MUL, x * y)                                \
    X(LPNX_OP_DIV, x / y)                                \
    X(LPNX_OP_POW, powf(x, y))                           \
    X(LPNX_OP_MAX, (x != x || x > y) ? x : y)            \
    X(LPNX_OP_MIN, (x != x || x < y) ? x : y)            \
    X(LPNX_OP_RSUB, y - x)                               \
    X(LPNX_OP_RDIV, y / x)                               \
    X(LPNX_OP_RPOW, powf(y, x))                          \
    X(LPNX_OP_EQ, (float)(x == y))                       \
    X(LPNX_OP_NE, (float)(x != y))                       \
    X(LPNX_OP_LT, (float)(x < y))                        \
    X(LPNX_OP_LE, (float)(x <= y))                       \
    X(LPNX_OP_GT, (float)(x > y))                        \
    X(LPNX_OP_GE, (float)(x >= y))

typedef struct { float *o, *a, *b; int64_t so, sa, sb; lpnx_binop op; } bin_row;

static void binary_row(bin_row r, int64_t n) {
#define BIN_LOOP(CODE, EXPR)                                                     \
    case CODE:                                                                   \
        if (r.so == 1 && r.sa == 1 && r.sb == 1) {                               \
            for (int64_t i = 0; i < n; i++) { float x = r.a[i], y = r.b[i]; r.o[i] = EXPR; } \
        } else if (r.so == 1 && r.sa == 1 && r.sb == 0) {                        \
            float y = r.b[0];                                                    \
            for (int64_t i = 0; i < n; i++) { float x = r.a[i]; r.o[i] = EXPR; } \
        } else {                                                                 \
            for (int64_t i = 0; i < n; i++) {                                    \
                float x = r.a[i * r.sa], y = r.b[i * r.sb];                      \
                r.o[i * r.so] = EXPR;                                            \
            }                                                                    \
        }                                                                        \
        break;
    switch (r.op) { BIN_CASES(BIN_LOOP) }
#undef BIN_LOOP
}

void lpnx_binary(lpnx_operand out, lpnx_operand a, lpnx_operand b,
                 int ndim, const int64_t *size, lpnx_binop op) {
    lpnx_operand ops[3] = {out, a, b};
    walk w;
    walk_init(&w, 3, ops, ndim, size);
    int last = w.ndim - 1;
#define BIN_BODY(off, n)                                                          \
    binary_row((bin_row){out.data + off[0], a.data + off[1], b.data + off[2],     \
                         w.stride[0][last], w.stride[1][last], w.stride[2][last], op}, n)
    WALK(w, ops, BIN_BODY);
#undef BIN_BODY
}

#define UN_CASES(X)                                       \
    X(LPNX_OP_COPY, x)                                    \
    X(LPNX_OP_NEG, -x)                                    \
    X(LPNX_OP_ABS, fabsf(x))                              \
    X(LPNX_OP_SQRT, sqrtf(x))                             \
    X(LPNX_OP_EXP, expf(x))                               \
    X(LPNX_OP_LOG, logf(x))                               \
    X(LPNX_OP_SIGMOID, sigmoidf(x))                       \
    X(LPNX_OP_RELU, x > 0 ? x : (x != x ? x : 0.0f))      \
    X(LPNX_OP_TANH, tanhf(x))                             \
    X(LPNX_OP_FLOOR, floorf(x))                           \
    X(LPNX_OP_CEIL, ceilf(x))                             \
    X(LPNX_OP_ROUND, nearbyintf(x))                       \
    X(LPNX_OP_SIGN, (float)((x > 0) - (x < 0)))

static void unary_row(float *o, const float *a, int64_t so, int64_t sa, int64_t n, lpnx_unop op) {
#define UN_LOOP(CODE, EXPR)                                                        \
    case CODE:                                                                     \
        if (so == 1 && sa == 1) {                                                  \
            for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = EXPR; }       \
        } else {                                                                   \
            for (int64_t i = 0; i < n; i++) { float x = a[i * sa]; o[i * so] = EXPR; } \
        }                                                                          \
        break;
    switch (op) { UN_CASES(UN_LOOP) }
#undef UN_LOOP
}

void lpnx_unary(lpnx_operand out, lpnx_operand a, int ndim, const int64_t *size, lpnx_unop op) {
    lpnx_operand ops[2] = {out, a};
    walk w;
    walk_init(&w, 2, ops, ndim, size);
    int last = w.ndim - 1;
#define UN_BODY(off, n) \
    unary_row(out.data + off[0], a.data + off[1], w.stride[0][last], w.stride[1][last], n, op)
    WALK(w, ops, UN_BODY);
#undef UN_BODY
}

static void clamp_row(float *o, const float *a, int64_t so, int64_t sa, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        float x = a[i * sa];
        if (x < lo) x = lo;
        if (x > hi) x = hi;
        o[i * so] = x;
    }
}

void lpnx_clamp(lpnx_operand out, lpnx_operand a, int ndim, const int64_t *size, float lo, float hi) {
    lpnx_operand ops[2] = {out, a};
    walk w;
    walk_init(&w, 2, ops, ndim, size);
    int last = w.ndim - 1;
#define CLAMP_BODY(off, n) \
    clamp_row(out.data + off[0], a.data + off[1], w.stride[0][last], w.stride[1][last], n, lo, hi)
    WALK(w, ops, CLAMP_BODY);
#undef CLAMP_BODY
}

static void fill_row(float *o, int64_t so, int64_t n, float v) {
    if (so == 1) for (int64_t i = 0; i < n; i++) o[i] = v;
    else for (int64_t i = 0; i < n; i++) o[i * so] = v;
}

void lpnx_fill(lpnx_operand out, int ndim, const int64_t *size, float v) {
    lpnx_operand ops[1] = {out};
    walk w;
    walk_init(&w, 1, ops, ndim, size);
    int last = w.ndim - 1;
#define FILL_BODY(off, n) fill_row(out.data + off[0], w.stride[0][last], n, v)
    WALK(w, ops, FILL_BODY);
#undef FILL_BODY
}
