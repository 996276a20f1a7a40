/* lpnx.kernels / lpnx.ref: batch normalisation, max pooling, nearest and
 * bilinear upsampling, and the ReLU and sigmoid backward passes. Each Lua
 * function checks its arguments once and then calls either the fast kernel
 * (ops/) or the oracle (ref/), so both tables share one signature:
 *
 *   batchnorm_train(x, weight, bias, running_mean, running_var, momentum, eps,
 *                   save_mean, save_invstd [, y]) -> y
 *   batchnorm_eval(x, weight, bias, running_mean, running_var, eps [, y]) -> y
 *   batchnorm_backward(x, gy, weight, save_mean, save_invstd, gweight, gbias [, gx]) -> gx
 *   batchnorm_backward_eval(x, gy, weight, running_mean, running_var, eps,
 *                           gweight, gbias [, gx]) -> gx
 *   relu_backward(y, gy [, gx]) -> gx        sigmoid_backward(y, gy [, gx]) -> gx
 *
 * Train-mode batch normalisation split where per-channel sums may be added
 * up over several processes (synchronised batch normalisation); sums are
 * Lua tables of C numbers (doubles), count the values per channel over
 * every process:
 *   batchnorm_sum(x) -> sum, count           batchnorm_sqdev(x, mean) -> ss
 *   batchnorm_train_apply(x, weight, bias, running_mean, running_var, momentum, eps,
 *                         save_mean, save_invstd, mean, ss, count [, y]) -> y
 *   batchnorm_backward_reduce(x, gy, save_mean) -> sum_gy, dot
 *   batchnorm_backward_input(x, gy, weight, save_mean, save_invstd, gweight, gbias,
 *                            sum_gy, dot, count, part [, gx]) -> gx
 *     (gweight += dot * invstd * part, gbias += sum_gy * part: part is this
 *     process's share of the parameter gradients, 1/processes)
 *   maxpool2d_forward(x, kh, kw, stride_h, stride_w, pad_h, pad_w [, y, indices]) -> y, indices
 *   maxpool2d_backward(gy, indices, H, W [, gx]) -> gx
 *   upsample_nearest(x, Ho, Wo [, y]) -> y   upsample_nearest_backward(gy, H, W [, gx]) -> gx
 *   upsample_bilinear(x, Ho, Wo [, y]) -> y  upsample_bilinear_backward(gy, H, W [, gx]) -> gx
 *
 * x is (N,C,H,W); per-channel tensors are (C). running_mean, running_var,
 * save_mean, save_invstd, gweight and gbias are written in place, so they
 * must be contiguous; gweight and gbias accumulate.
 *
 * The trailing y, indices and gx are optional output buffers: the caller's
 * own contiguous tensors of exactly the result's shape, sharing no memory
 * with any other argument, except that the backward passes of batchnorm,
 * relu and sigmoid may write gx over gy itself (each kernel reads a part
 * of gy before it writes that part of gx: a channel for batchnorm, an
 * element for the others). When given, the result is written there
 * (zeroed first where the kernel accumulates) and those same tensors are
 * returned; when nil, new tensors are made. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../ops/layers.h"
#include "../ref/ref_table.h"
#include "bind.h"

/* Largest input plane whose flat positions are exact in float32. */
#define MAX_PLANE (INT64_C(1) << 24)
/* Bound for kernel, stride, pad and output sizes given as numbers. */
#define MAX_SIZE INT64_C(2147483647)

/* ---- argument helpers ------------------------------------------------ */

/* An integer in [lo, MAX_SIZE] at arg; what names it in the message. */
static int64_t checkrange(lua_State *L, int arg, const char *what, int64_t lo) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) {
        const char *got = lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : luaL_typename(L, arg);
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", what, got));
    }
    if (v < lo) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be at least %I, got %I", what, (lua_Integer)lo, v));
    if (v > MAX_SIZE) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be at most %I, got %I", what,
                                                            (lua_Integer)MAX_SIZE, v));
    return (int64_t)v;
}

/* eps: a finite number >= 0. */
static double checkeps(lua_State *L, int arg) {
    double eps = luaL_checknumber(L, arg);
    if (!(eps >= 0 && eps < HUGE_VAL))
        luaL_argerror(L, arg, lua_pushfstring(L, "eps must be a non-negative number, got %f", eps));
    return eps;
}

/* A per-channel (C) tensor at arg. Inputs may be copied to make them
 * contiguous; in-place outputs must be contiguous already. */
static float *checkchannel(lua_State *L, int arg, const char *name, int64_t C, int inplace) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, arg);
    if (t->ndim != 1 || t->size[0] != C)
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected %s (%I) to match input channels %I, got %s", name, (lua_Integer)C,
                                      (lua_Integer)C, lpnx_shape_of(s, sizeof s, t)));
    t = inplace ? lpnx_checkcontiguous_inplace(L, arg) : lpnx_checkcontiguous(L, arg);
    return lpnx_tensor_data(t);
}

/* The tensor at arg, contiguous, with exactly like's shape; the message
 * names it and like. */
static lpnx_Tensor *checklike(lua_State *L, int arg, const char *name, const lpnx_Tensor *like,
                              const char *like_name) {
    char s1[160], s2[160];
    lpnx_Tensor *t = lpnx_checklive(L, arg);
    int same = t->ndim == like->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->size[d] == like->size[d];
    if (!same)
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected %s %s to match %s, got %s", name, lpnx_shape_of(s1, sizeof s1, like),
                                      like_name, lpnx_shape_of(s2, sizeof s2, t)));
    return lpnx_checkcontiguous(L, arg);
}

/* Raises unless an (H,W) plane has at most MAX_PLANE values. */
static void checkplane(lua_State *L, int arg, int64_t H, int64_t W, const char *what) {
    if (H > MAX_PLANE || W > MAX_PLANE || H * W > MAX_PLANE)
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s planes of at most %I values so that float "
                                                 "indices are exact, got %Ix%I",
                                              what, (lua_Integer)MAX_PLANE, (lua_Integer)H, (lua_Integer)W));
}

static float *data(const lpnx_Tensor *t) { return lpnx_tensor_data(t); }

/* ---- output buffers -------------------------------------------------- */

/* 1 when a and b are the same view: one storage, offset and shape. */
/* The tensor for a result: out when given (pushed again, so it is what the
 * function returns), else a new one of the given sizes; zero: the kernel
 * accumulates into it, so it starts at zero either way. */
static lpnx_Tensor *result(lua_State *L, lpnx_Tensor *out, int arg, int ndim, const int64_t *size, int zero) {
    if (!out) return lpnx_pushnew(L, ndim, size, zero);
    lua_pushvalue(L, arg);
    size_t n = lpnx_tensor_numel(out);
    if (zero && n > 0) memset(data(out), 0, n * sizeof(float));
    return out;
}

/* a * b for sizes >= 0, saturating: an empty tensor may have other sizes
 * whose product does not fit, and such products are never used to index. */
static int64_t mul(int64_t a, int64_t b) {
    return a != 0 && b > INT64_MAX / a ? INT64_MAX : a * b;
}

static void check_status(lua_State *L, lpnx_status st, const char *what) {
    if (st == LPNX_ENOMEM) luaL_error(L, "%s: not enough memory for the index tables", what);
    if (st != LPNX_OK) luaL_error(L, "%s: %s", what, lpnx_strerror(st));
}

/* ---- batch normalisation --------------------------------------------- */

/* The arguments the train-mode forward passes share, at 1..9: x, weight,
 * bias, running_mean, running_var, momentum, eps, save_mean, save_invstd. */
typedef struct {
    lpnx_Tensor *x;
    int64_t N, C, HW;
    const float *weight, *bias;
    float *running_mean, *running_var, *save_mean, *save_invstd;
    double momentum, eps;
} bn_train_args;

static bn_train_args check_bn_train(lua_State *L) {
    bn_train_args a;
    a.x = lpnx_checknchw(L, 1);
    a.N = a.x->size[0];
    a.C = a.x->size[1];
    a.HW = mul(a.x->size[2], a.x->size[3]);
    a.weight = checkchannel(L, 2, "weight", a.C, 0);
    a.bias = checkchannel(L, 3, "bias", a.C, 0);
    a.running_mean = checkchannel(L, 4, "running_mean", a.C, 1);
    a.running_var = checkchannel(L, 5, "running_var", a.C, 1);
    a.momentum = luaL_checknumber(L, 6);
    if (!(a.momentum >= 0 && a.momentum <= 1))
        luaL_argerror(L, 6, lua_pushfstring(L, "momentum must be in [0, 1], got %f", a.momentum));
    a.eps = checkeps(L, 7);
    a.save_mean = checkchannel(L, 8, "save_mean", a.C, 1);
    a.save_invstd = checkchannel(L, 9, "save_invstd", a.C, 1);
    return a;
}

/* The output buffer at arg (nil: a new one) for check_bn_train's x. */
static lpnx_Tensor *bn_train_output(lua_State *L, int arg, const bn_train_args *a) {
    static const int args[] = {1, 2, 3, 4, 5, 8, 9, 0};
    lpnx_Tensor *out =
        lpnx_optoutput(L, arg, "y", "output", 4, a->x->size, args, 0, "x, the per-channel tensors or the saved statistics");
    return result(L, out, arg, 4, a->x->size, 0);
}

static int batchnorm_train(lua_State *L, int ref) {
    char s[160];
    lua_settop(L, 10); /* missing arguments become nil; copies go above them */
    const bn_train_args a = check_bn_train(L);
    if (mul(a.N, a.HW) <= 1)
        luaL_argerror(L, 1,
                      lua_pushfstring(L,
                                      "expected more than 1 value per channel when training, "
                                      "got input %s",
                                      lpnx_shape_of(s, sizeof s, a.x)));
    lpnx_Tensor *y = bn_train_output(L, 10, &a);
    if (a.C == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_train_forward
         : lpnx_batchnorm_train_forward)(data(y), a.save_mean, a.save_invstd, a.running_mean, a.running_var, data(a.x),
                                         a.weight, a.bias, a.N, a.C, a.HW, a.momentum, a.eps);
    return 1;
}

static int batchnorm_eval(lua_State *L, int ref) {
    static const int args[] = {1, 2, 3, 4, 5, 0};
    lua_settop(L, 7);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    const int64_t N = x->size[0], C = x->size[1], HW = mul(x->size[2], x->size[3]);
    const float *weight = checkchannel(L, 2, "weight", C, 0);
    const float *bias = checkchannel(L, 3, "bias", C, 0);
    const float *running_mean = checkchannel(L, 4, "running_mean", C, 0);
    const float *running_var = checkchannel(L, 5, "running_var", C, 0);
    double eps = checkeps(L, 6);
    lpnx_Tensor *out = lpnx_optoutput(L, 7, "y", "output", 4, x->size, args, 0, "x or the per-channel tensors");
    lpnx_Tensor *y = result(L, out, 7, 4, x->size, 0);
    if (lpnx_tensor_numel(y) == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_eval_forward
         : lpnx_batchnorm_eval_forward)(data(y), data(x), weight, bias, running_mean, running_var, N, C, HW, eps);
    return 1;
}

/* The arguments train-mode backward passes share, at 1..7:
 * x, gy, weight, save_mean, save_invstd, gweight, gbias. */
typedef struct {
    lpnx_Tensor *x, *gy;
    int64_t N, C, HW;
    const float *weight, *save_mean, *save_invstd;
    float *gweight, *gbias;
} bn_backward_args;

static bn_backward_args check_bn_backward(lua_State *L) {
    bn_backward_args a;
    a.x = lpnx_checknchw(L, 1);
    a.N = a.x->size[0];
    a.C = a.x->size[1];
    a.HW = mul(a.x->size[2], a.x->size[3]);
    a.gy = checklike(L, 2, "gy", a.x, "x");
    a.weight = checkchannel(L, 3, "weight", a.C, 0);
    a.save_mean = checkchannel(L, 4, "save_mean", a.C, 0);
    a.save_invstd = checkchannel(L, 5, "save_invstd", a.C, 0);
    a.gweight = checkchannel(L, 6, "gweight", a.C, 1);
    a.gbias = checkchannel(L, 7, "gbias", a.C, 1);
    return a;
}

/* The input gradient buffer at arg (nil: a new one) for the arguments of
 * check_bn_backward; it may be gy itself. */
static lpnx_Tensor *bn_backward_output(lua_State *L, int arg, const bn_backward_args *a) {
    static const int args[] = {1, 2, 3, 4, 5, 6, 7, 0};
    lpnx_Tensor *out = lpnx_optoutput(L, arg, "gx", "input gradient", 4, a->x->size, args, 2,
                                  "x, the per-channel tensors or, partly, gy");
    return result(L, out, arg, 4, a->x->size, 0);
}

static int batchnorm_backward(lua_State *L, int ref) {
    lua_settop(L, 8);
    const bn_backward_args a = check_bn_backward(L);
    lpnx_Tensor *gx = bn_backward_output(L, 8, &a);
    if (lpnx_tensor_numel(gx) == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_train_backward : lpnx_batchnorm_train_backward)(
        data(gx), a.gweight, a.gbias, data(a.gy), data(a.x), a.weight, a.save_mean, a.save_invstd, a.N, a.C, a.HW);
    return 1;
}

static int batchnorm_backward_eval(lua_State *L, int ref) {
    static const int args[] = {1, 2, 3, 4, 5, 7, 8, 0};
    lua_settop(L, 9);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    const int64_t N = x->size[0], C = x->size[1], HW = mul(x->size[2], x->size[3]);
    lpnx_Tensor *gy = checklike(L, 2, "gy", x, "x");
    const float *weight = checkchannel(L, 3, "weight", C, 0);
    const float *running_mean = checkchannel(L, 4, "running_mean", C, 0);
    const float *running_var = checkchannel(L, 5, "running_var", C, 0);
    double eps = checkeps(L, 6);
    float *gweight = checkchannel(L, 7, "gweight", C, 1);
    float *gbias = checkchannel(L, 8, "gbias", C, 1);
    lpnx_Tensor *out = lpnx_optoutput(L, 9, "gx", "input gradient", 4, x->size, args, 2,
                                  "x, the per-channel tensors or, partly, gy");
    lpnx_Tensor *gx = result(L, out, 9, 4, x->size, 0);
    if (lpnx_tensor_numel(gx) == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_eval_backward : lpnx_batchnorm_eval_backward)(
        data(gx), gweight, gbias, data(gy), data(x), weight, running_mean, running_var, N, C, HW, eps);
    return 1;
}

/* ---- batch normalisation, split for summed statistics ----------------- */

/* C doubles from the table of numbers at arg, in a Lua-owned buffer pushed
 * on the stack (freed by the collector, even if a later check raises). */
static double *checknumbers(lua_State *L, int arg, const char *name, int64_t C) {
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer len = (lua_Integer)lua_rawlen(L, arg);
    if (len != C)
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s as %I numbers (one per channel), got %I",
                                              name, (lua_Integer)C, len));
    double *v = lua_newuserdatauv(L, (size_t)(C > 0 ? C : 1) * sizeof(double), 0);
    for (int64_t c = 0; c < C; c++) {
        int isnum;
        lua_rawgeti(L, arg, (lua_Integer)c + 1);
        v[c] = lua_tonumberx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum || !isfinite(v[c]))
            luaL_argerror(L, arg, lua_pushfstring(L, "expected %s[%I] to be a finite number",
                                                  name, (lua_Integer)c + 1));
    }
    return v;
}

/* A scratch buffer of C doubles, Lua-owned. */
static double *newnumbers(lua_State *L, int64_t C) {
    return lua_newuserdatauv(L, (size_t)(C > 0 ? C : 1) * sizeof(double), 0);
}

/* Pushes v[0..C) as a table. */
static void pushnumbers(lua_State *L, const double *v, int64_t C) {
    lua_createtable(L, (int)C, 0);
    for (int64_t c = 0; c < C; c++) {
        lua_pushnumber(L, v[c]);
        lua_rawseti(L, -2, (lua_Integer)c + 1);
    }
}

/* count: the values per channel over every process, at least this
 * process's n and more than 1. */
static double checkcount(lua_State *L, int arg, int64_t n) {
    double count = luaL_checknumber(L, arg);
    if (!(count >= (double)n && count > 1 && count < HUGE_VAL))
        luaL_argerror(L, arg, lua_pushfstring(L, "count must be more than 1 and at least the %I values per "
                                                 "channel of x, got %f", (lua_Integer)n, count));
    return count;
}

static int batchnorm_sum(lua_State *L, int ref) {
    lua_settop(L, 1);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    const int64_t N = x->size[0], C = x->size[1], HW = mul(x->size[2], x->size[3]);
    double *sum = newnumbers(L, C);
    (ref ? lpnx_oracles(L)->batchnorm_sum : lpnx_batchnorm_sum)(sum, data(x), N, C, HW);
    pushnumbers(L, sum, C);
    lua_pushinteger(L, (lua_Integer)mul(N, HW));
    return 2;
}

static int batchnorm_sqdev(lua_State *L, int ref) {
    lua_settop(L, 2);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    const int64_t N = x->size[0], C = x->size[1], HW = mul(x->size[2], x->size[3]);
    const double *mean = checknumbers(L, 2, "mean", C);
    double *ss = newnumbers(L, C);
    (ref ? lpnx_oracles(L)->batchnorm_sqdev : lpnx_batchnorm_sqdev)(ss, data(x), mean, N, C, HW);
    pushnumbers(L, ss, C);
    return 1;
}

static int batchnorm_train_apply(lua_State *L, int ref) {
    lua_settop(L, 13);
    const bn_train_args a = check_bn_train(L);
    const double *mean = checknumbers(L, 10, "mean", a.C);
    const double *ss = checknumbers(L, 11, "ss", a.C);
    double count = checkcount(L, 12, mul(a.N, a.HW));
    for (int64_t c = 0; c < a.C; c++)
        if (!(ss[c] >= 0)) luaL_argerror(L, 11, lua_pushfstring(L, "expected ss[%I] >= 0", (lua_Integer)c + 1));
    lpnx_Tensor *y = bn_train_output(L, 13, &a);
    if (a.C == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_train_apply
         : lpnx_batchnorm_train_apply)(data(y), a.save_mean, a.save_invstd, a.running_mean, a.running_var, data(a.x),
                                       a.weight, a.bias, mean, ss, count, a.N, a.C, a.HW, a.momentum, a.eps);
    return 1;
}

static int batchnorm_backward_reduce(lua_State *L, int ref) {
    lua_settop(L, 3);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    const int64_t N = x->size[0], C = x->size[1], HW = mul(x->size[2], x->size[3]);
    lpnx_Tensor *gy = checklike(L, 2, "gy", x, "x");
    const float *save_mean = checkchannel(L, 3, "save_mean", C, 0);
    double *sum_gy = newnumbers(L, C), *dot = newnumbers(L, C);
    (ref ? lpnx_oracles(L)->batchnorm_backward_reduce : lpnx_batchnorm_backward_reduce)(sum_gy, dot, data(gy), data(x),
                                                                                        save_mean, N, C, HW);
    pushnumbers(L, sum_gy, C);
    pushnumbers(L, dot, C);
    return 2;
}

static int batchnorm_backward_input(lua_State *L, int ref) {
    lua_settop(L, 12);
    const bn_backward_args a = check_bn_backward(L);
    const double *sum_gy = checknumbers(L, 8, "sum_gy", a.C);
    const double *dot = checknumbers(L, 9, "dot", a.C);
    double count = checkcount(L, 10, mul(a.N, a.HW));
    double part = luaL_checknumber(L, 11);
    if (!(part > 0 && part <= 1))
        luaL_argerror(L, 11, lua_pushfstring(L, "part must be in (0, 1], got %f", part));
    lpnx_Tensor *gx = bn_backward_output(L, 12, &a);
    if (lpnx_tensor_numel(gx) == 0) return 1;
    (ref ? lpnx_oracles(L)->batchnorm_backward_input
         : lpnx_batchnorm_backward_input)(data(gx), a.gweight, a.gbias, data(a.gy), data(a.x), a.weight, a.save_mean,
                                          a.save_invstd, sum_gy, dot, count, (float)part, a.N, a.C, a.HW);
    return 1;
}

/* ---- activations ----------------------------------------------------- */

typedef void (*activation_backward)(float *gx, const float *y, const float *gy, size_t n);

/* gx may be gy itself: each element is read before it is written. */
static int act_backward(lua_State *L, activation_backward f) {
    static const int args[] = {1, 2, 0};
    lua_settop(L, 3);
    lpnx_Tensor *y = lpnx_checkcontiguous(L, 1);
    lpnx_Tensor *gy = checklike(L, 2, "gy", y, "y");
    lpnx_Tensor *out = lpnx_optoutput(L, 3, "gx", "input gradient", y->ndim, y->size, args, 2, "y or, partly, gy");
    lpnx_Tensor *gx = result(L, out, 3, y->ndim, y->size, 0);
    size_t n = lpnx_tensor_numel(gx);
    if (n > 0) f(data(gx), data(y), data(gy), n);
    return 1;
}

/* ---- max pooling ----------------------------------------------------- */

static int maxpool2d_forward(lua_State *L, int ref) {
    static const int args_y[] = {1, 0}, args_indices[] = {1, 8, 0};
    char s[160];
    lua_settop(L, 9);
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    lpnx_pool2d_dims d;
    d.kh = checkrange(L, 2, "kernel_h", 1);
    d.kw = checkrange(L, 3, "kernel_w", 1);
    d.sh = checkrange(L, 4, "stride_h", 1);
    d.sw = checkrange(L, 5, "stride_w", 1);
    d.ph = checkrange(L, 6, "pad_h", 0);
    d.pw = checkrange(L, 7, "pad_w", 0);
    if (d.ph > d.kh / 2)
        luaL_argerror(L, 6, lua_pushfstring(L, "pad should be at most half of kernel size, got pad_h %d "
                                               "for kernel_h %d", (int)d.ph, (int)d.kh));
    if (d.pw > d.kw / 2)
        luaL_argerror(L, 7, lua_pushfstring(L, "pad should be at most half of kernel size, got pad_w %d "
                                               "for kernel_w %d", (int)d.pw, (int)d.kw));
    d.planes = mul(x->size[0], x->size[1]);
    d.H = x->size[2];
    d.W = x->size[3];
    if (d.H < 1 || d.W < 1)
        luaL_argerror(L, 1,
                      lua_pushfstring(L, "expected a non-empty input plane, got %s", lpnx_shape_of(s, sizeof s, x)));
    checkplane(L, 1, d.H, d.W, "input");
    const int64_t span_h = d.H + 2 * d.ph - d.kh, span_w = d.W + 2 * d.pw - d.kw;
    d.Ho = span_h < 0 ? 0 : span_h / d.sh + 1;
    d.Wo = span_w < 0 ? 0 : span_w / d.sw + 1;
    if (d.Ho < 1 || d.Wo < 1)
        luaL_argerror(L, 1,
                      lua_pushfstring(L,
                                      "output size is too small: input %s with kernel %dx%d, "
                                      "stride %dx%d, padding %dx%d gives %dx%d",
                                      lpnx_shape_of(s, sizeof s, x), (int)d.kh, (int)d.kw, (int)d.sh, (int)d.sw,
                                      (int)d.ph, (int)d.pw, (int)d.Ho, (int)d.Wo));
    int64_t size[4] = {x->size[0], x->size[1], d.Ho, d.Wo};
    lpnx_Tensor *out_y = lpnx_optoutput(L, 8, "y", "output", 4, size, args_y, 0, "x");
    lpnx_Tensor *out_indices = lpnx_optoutput(L, 9, "indices", "argmax positions", 4, size, args_indices, 0, "x or y");
    if ((out_y == NULL) != (out_indices == NULL))
        luaL_argerror(L, out_y ? 9 : 8, "expected y and indices buffers together, or neither");
    lpnx_Tensor *y = result(L, out_y, 8, 4, size, 0);
    lpnx_Tensor *indices = result(L, out_indices, 9, 4, size, 0);
    if (d.planes == 0) return 2;
    if (ref)
        lpnx_oracles(L)->maxpool2d_forward(data(y), data(indices), data(x), d.planes, d.H, d.W, d.Ho, d.Wo, d.kh, d.kw,
                                           d.sh, d.sw, d.ph, d.pw);
    else
        lpnx_maxpool2d_forward(data(y), data(indices), data(x), d);
    return 2;
}

/* Raises naming the first entry of indices that is not a position in an
 * (H,W) plane; does nothing when they all are. */
static void check_indices(lua_State *L, const lpnx_Tensor *indices, int64_t H, int64_t W) {
    const float *p = data(indices);
    size_t n = lpnx_tensor_numel(indices);
    for (size_t i = 0; i < n; i++) {
        float f = p[i];
        if (f >= 0 && f < (float)(H * W) && f == floorf(f)) continue;
        int64_t at[4], r = (int64_t)i;
        for (int dim = 3; dim >= 0; dim--) {
            at[dim] = r % indices->size[dim] + 1;
            r /= indices->size[dim];
        }
        if (f == floorf(f) && fabsf(f) < 1e15f) lua_pushinteger(L, (lua_Integer)f);
        else lua_pushnumber(L, f);
        luaL_argerror(L, 2, lua_pushfstring(L, "indices hold %s at (%I,%I,%I,%I), not a position in a "
                                               "%Ix%I input plane (0 to %I)", lua_tostring(L, -1),
                                            (lua_Integer)at[0], (lua_Integer)at[1], (lua_Integer)at[2],
                                            (lua_Integer)at[3], (lua_Integer)H, (lua_Integer)W,
                                            (lua_Integer)(H * W - 1)));
    }
}

static int maxpool2d_backward(lua_State *L, int ref) {
    static const int args[] = {1, 2, 0};
    lua_settop(L, 5);
    lpnx_Tensor *gy = lpnx_checknchw(L, 1);
    lpnx_Tensor *indices = checklike(L, 2, "indices", gy, "gy");
    lpnx_pool2d_dims d = {0};
    d.H = checkrange(L, 3, "H", 1);
    d.W = checkrange(L, 4, "W", 1);
    checkplane(L, 3, d.H, d.W, "input");
    d.planes = mul(gy->size[0], gy->size[1]);
    d.Ho = gy->size[2];
    d.Wo = gy->size[3];
    int64_t size[4] = {gy->size[0], gy->size[1], d.H, d.W};
    lpnx_Tensor *out = lpnx_optoutput(L, 5, "gx", "input gradient", 4, size, args, 0, "gy or indices");
    lpnx_Tensor *gx = result(L, out, 5, 4, size, 1);
    if (lpnx_tensor_numel(gy) == 0) return 1;
    if (ref) {
        check_indices(L, indices, d.H, d.W);
        lpnx_oracles(L)->maxpool2d_backward(data(gx), data(gy), data(indices), d.planes, d.H, d.W, d.Ho, d.Wo);
    } else if (lpnx_maxpool2d_backward(data(gx), data(gy), data(indices), d) != 0) {
        check_indices(L, indices, d.H, d.W);
    }
    return 1;
}

/* ---- upsampling ------------------------------------------------------ */

typedef lpnx_status (*resample_fn)(float *out, const float *inp, int64_t planes,
                                   int64_t H, int64_t W, int64_t Ho, int64_t Wo);
typedef void (*resample_ref_fn)(float *out, const float *inp, int64_t planes,
                                int64_t H, int64_t W, int64_t Ho, int64_t Wo);

/* Forward (x, Ho, Wo) -> y, or backward (gy, H, W) -> gx: both take a
 * plane tensor and the size of the other side. The kernels' arguments are
 * (out, in, planes, small side H, W, large side Ho, Wo) either way. */
static int resample(lua_State *L, resample_fn fast, resample_ref_fn ref, const char *what, int backward) {
    static const int args[] = {1, 0};
    char s[160];
    lua_settop(L, 4);
    lpnx_Tensor *in = lpnx_checknchw(L, 1);
    int64_t H2 = checkrange(L, 2, backward ? "input height" : "output height", 1);
    int64_t W2 = checkrange(L, 3, backward ? "input width" : "output width", 1);
    if (in->size[2] < 1 || in->size[3] < 1)
        luaL_argerror(L, 1, lua_pushfstring(L, "expected a non-empty %s plane, got %s", backward ? "gy" : "input",
                                            lpnx_shape_of(s, sizeof s, in)));
    int64_t size[4] = {in->size[0], in->size[1], H2, W2};
    lpnx_Tensor *given = backward ? lpnx_optoutput(L, 4, "gx", "input gradient", 4, size, args, 0, "gy")
                                  : lpnx_optoutput(L, 4, "y", "output", 4, size, args, 0, "x");
    lpnx_Tensor *out = result(L, given, 4, 4, size, backward); /* backward accumulates */
    if (lpnx_tensor_numel(out) == 0) return 1;
    const int64_t planes = mul(in->size[0], in->size[1]);
    const int64_t H = backward ? H2 : in->size[2], W = backward ? W2 : in->size[3];
    const int64_t Ho = backward ? in->size[2] : H2, Wo = backward ? in->size[3] : W2;
    if (ref) ref(data(out), data(in), planes, H, W, Ho, Wo);
    else check_status(L, fast(data(out), data(in), planes, H, W, Ho, Wo), what);
    return 1;
}

/* ---- registration ---------------------------------------------------- */

/* The fast and the oracle entry points of one function. */
#define PAIR(name, body_fast, body_ref)                          \
    static int l_##name(lua_State *L) { return body_fast; }      \
    static int l_ref_##name(lua_State *L) { return body_ref; }

PAIR(batchnorm_train, batchnorm_train(L, 0), batchnorm_train(L, 1))
PAIR(batchnorm_eval, batchnorm_eval(L, 0), batchnorm_eval(L, 1))
PAIR(batchnorm_backward, batchnorm_backward(L, 0), batchnorm_backward(L, 1))
PAIR(batchnorm_backward_eval, batchnorm_backward_eval(L, 0), batchnorm_backward_eval(L, 1))
PAIR(batchnorm_sum, batchnorm_sum(L, 0), batchnorm_sum(L, 1))
PAIR(batchnorm_sqdev, batchnorm_sqdev(L, 0), batchnorm_sqdev(L, 1))
PAIR(batchnorm_train_apply, batchnorm_train_apply(L, 0), batchnorm_train_apply(L, 1))
PAIR(batchnorm_backward_reduce, batchnorm_backward_reduce(L, 0), batchnorm_backward_reduce(L, 1))
PAIR(batchnorm_backward_input, batchnorm_backward_input(L, 0), batchnorm_backward_input(L, 1))
PAIR(relu_backward, act_backward(L, lpnx_relu_backward), act_backward(L, lpnx_oracles(L)->relu_backward))
PAIR(sigmoid_backward, act_backward(L, lpnx_sigmoid_backward), act_backward(L, lpnx_oracles(L)->sigmoid_backward))
PAIR(maxpool2d_forward, maxpool2d_forward(L, 0), maxpool2d_forward(L, 1))
PAIR(maxpool2d_backward, maxpool2d_backward(L, 0), maxpool2d_backward(L, 1))
PAIR(upsample_nearest, resample(L, lpnx_upsample_nearest_forward, NULL, "upsample_nearest", 0),
     resample(L, NULL, lpnx_oracles(L)->upsample_nearest_forward, "upsample_nearest", 0))
PAIR(upsample_nearest_backward, resample(L, lpnx_upsample_nearest_backward, NULL, "upsample_nearest_backward", 1),
     resample(L, NULL, lpnx_oracles(L)->upsample_nearest_backward, "upsample_nearest_backward", 1))
PAIR(upsample_bilinear, resample(L, lpnx_upsample_bilinear_forward, NULL, "upsample_bilinear", 0),
     resample(L, NULL, lpnx_oracles(L)->upsample_bilinear_forward, "upsample_bilinear", 0))
PAIR(upsample_bilinear_backward, resample(L, lpnx_upsample_bilinear_backward, NULL, "upsample_bilinear_backward", 1),
     resample(L, NULL, lpnx_oracles(L)->upsample_bilinear_backward, "upsample_bilinear_backward", 1))

#undef PAIR

/* Every function of this file, under one name in lpnx.kernels and lpnx.ref. */
#define FUNCTIONS(X) \
    X(batchnorm_train) \
    X(batchnorm_eval) \
    X(batchnorm_backward) \
    X(batchnorm_backward_eval) \
    X(batchnorm_sum) \
    X(batchnorm_sqdev) \
    X(batchnorm_train_apply) \
    X(batchnorm_backward_reduce) \
    X(batchnorm_backward_input) \
    X(relu_backward) \
    X(sigmoid_backward) \
    X(maxpool2d_forward) \
    X(maxpool2d_backward) \
    X(upsample_nearest) \
    X(upsample_nearest_backward) \
    X(upsample_bilinear) \
    X(upsample_bilinear_backward)

#define FAST(name) {#name, l_##name},
#define REF(name) {#name, l_ref_##name},

void lpnx_open_layers(lua_State *L, int kidx, int ridx) {
    static const luaL_Reg fast[] = {FUNCTIONS(FAST){NULL, NULL}};
    static const luaL_Reg ref[] = {FUNCTIONS(REF){NULL, NULL}};
    lpnx_setfuncs(L, kidx, fast);
    lpnx_setfuncs(L, ridx, ref);
}
