/* Lua bindings of 2-D convolution: the im2col + gemm kernels of
 * ops/conv2d.c as lpnx.kernels.conv2d_*, and the direct oracles of
 * ref/conv2d_ref.c with the same signatures as lpnx.ref.conv2d_*.
 *
 *   conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w
 *                  [, workspace [, y [, algo [, parts]]]]) -> y
 *   conv2d_backward(x, w, gy, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
 *                   gw, gb, need_gx [, workspace [, gx [, algo [, parts]]]]) -> gx or nil
 *   conv2d_output_size(H, W, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w) -> Ho, Wo
 *   conv2d_workspace_size(x, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w
 *                         [, algo [, parts]]) -> floats
 *
 * algo is "winograd" (the default), "winograd2", "direct" or "double"
 * (ops/conv2d.h). parts (default 1) is how many processes share the batch,
 * interleaved, a power of two: the kernels then group the images as the
 * whole batch would be grouped (ops/conv_groups.h). A workspace must be
 * sized for the same algo and parts.
 *
 * y and gx are optional output buffers: the caller's own contiguous
 * tensors of exactly the output's (or the input's) shape, sharing no
 * memory with any other argument. When given, the result is written there
 * (gx is zeroed first: the kernels accumulate into it) and that same
 * tensor is returned; when nil, a new tensor is made. gx must be nil when
 * need_gx is false. The oracles take the same arguments and honour the
 * buffers too; they ignore the workspace.
 *
 * Every argument is checked here; the kernels then cannot fail. Scratch
 * memory is a tensor on the Lua stack, so an error raised after it was
 * made leaks nothing. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../ops/conv2d.h"
#include "../ref/ref_table.h"
#include "bind.h"

#define SHAPE_LEN 160

/* An integer argument in [min, INT_MAX]; what names it in the message. */
static int64_t check_param(lua_State *L, int arg, const char *what, int64_t min) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) {
        const char *got = lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : luaL_typename(L, arg);
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer >= %d, got %s", what, (int)min, got));
    }
    if (v < min)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer >= %d, got %I", what, (int)min, v));
    if (v > INT_MAX)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be at most %d, got %I", what, INT_MAX, v));
    return (int64_t)v;
}

/* a*b, or -1 when it exceeds INT_MAX (a, b >= 0). */
static int64_t int_product(int64_t a, int64_t b) {
    if (a > INT_MAX || b > INT_MAX) return -1;
    return a * b > INT_MAX ? -1 : a * b;
}

/* Stride, padding and dilation at first..first+5 and the output size.
 * Raises, naming argument xarg, when the padded input is smaller than the
 * dilated kernel. The input and kernel sizes must already be in d. */
static void read_geometry(lua_State *L, int first, int xarg, const lpnx_Tensor *x,
                          lpnx_conv2d_dims *d) {
    char s[SHAPE_LEN];
    d->stride_h = check_param(L, first, "stride_h", 1);
    d->stride_w = check_param(L, first + 1, "stride_w", 1);
    d->pad_h = check_param(L, first + 2, "pad_h", 0);
    d->pad_w = check_param(L, first + 3, "pad_w", 0);
    d->dil_h = check_param(L, first + 4, "dil_h", 1);
    d->dil_w = check_param(L, first + 5, "dil_w", 1);
    d->ho = lpnx_conv2d_output_size(d->h, d->kh, d->stride_h, d->pad_h, d->dil_h);
    d->wo = lpnx_conv2d_output_size(d->w, d->kw, d->stride_w, d->pad_w, d->dil_w);
    if (d->ho < 1 || d->wo < 1) {
        if (x)
            lpnx_shape_of(s, SHAPE_LEN, x);
        else
            snprintf(s, sizeof s, "%lldx%lld", (long long)d->h, (long long)d->w);
        luaL_argerror(L, xarg, lua_pushfstring(L,
            "input %s is too small for the kernel: padded size %Ix%I is smaller than the dilated kernel %Ix%I",
            s, (lua_Integer)(d->h + 2 * d->pad_h), (lua_Integer)(d->w + 2 * d->pad_w),
            (lua_Integer)(d->dil_h * (d->kh - 1) + 1), (lua_Integer)(d->dil_w * (d->kw - 1) + 1)));
    }
    if (int_product(d->ho, d->wo) < 0)
        luaL_argerror(L, xarg, lua_pushfstring(L, "output %Ix%I has more than %d pixels per channel",
                                               (lua_Integer)d->ho, (lua_Integer)d->wo, INT_MAX));
}

/* The algorithm named at arg (nil: winograd) and the processes sharing
 * the batch at arg + 1 (nil: 1) into d. */
static void read_algo(lua_State *L, int arg, lpnx_conv2d_dims *d) {
    static const char *const names[] = {"winograd", "winograd2", "direct", "double", NULL};
    static const lpnx_conv2d_algo algos[] = {LPNX_CONV_WINOGRAD, LPNX_CONV_WINOGRAD2, LPNX_CONV_DIRECT,
                                             LPNX_CONV_DOUBLE};
    d->algo = algos[luaL_checkoption(L, arg, "winograd", names)];
    d->batch_parts = 1;
    if (!lua_isnoneornil(L, arg + 1)) {
        int ok;
        lua_Integer n = lua_tointegerx(L, arg + 1, &ok);
        if (!ok || lua_type(L, arg + 1) != LUA_TNUMBER || n < 1 || n > (1 << 20) || (n & (n - 1)) != 0) {
            const char *got =
                lua_type(L, arg + 1) == LUA_TNUMBER ? lua_tostring(L, arg + 1) : luaL_typename(L, arg + 1);
            luaL_argerror(L, arg + 1, lua_pushfstring(L, "parts must be a power of two of processes, got %s", got));
        }
        d->batch_parts = (int64_t)n;
    }
}

/* x (N,Cin,H,W) at 1 and weight (Cout,Cin,kh,kw) at 2, both contiguous
 * (copies pushed on the stack when needed); fills the sizes of d. */
static void check_input_weight(lua_State *L, lpnx_Tensor **px, lpnx_Tensor **pw, lpnx_conv2d_dims *d) {
    char s1[SHAPE_LEN], s2[SHAPE_LEN];
    lpnx_Tensor *x = lpnx_checknchw(L, 1);
    lpnx_Tensor *w = lpnx_checktensor(L, 2);
    if (w->ndim != 4)
        luaL_argerror(L, 2,
                      lua_pushfstring(L, "expected weight (Cout,Cin,kh,kw), got %s", lpnx_shape_of(s1, SHAPE_LEN, w)));
    if (w->size[1] != x->size[1]) {
        lpnx_Tensor want = *w;
        want.size[1] = x->size[1];
        luaL_argerror(L, 2,
                      lua_pushfstring(L, "expected weight %s to match input channels %I, got %s",
                                      lpnx_shape_of(s1, SHAPE_LEN, &want), (lua_Integer)x->size[1],
                                      lpnx_shape_of(s2, SHAPE_LEN, w)));
    }
    if (w->size[2] < 1 || w->size[3] < 1)
        luaL_argerror(
            L, 2,
            lua_pushfstring(L, "expected a kernel of at least 1x1, got weight %s", lpnx_shape_of(s1, SHAPE_LEN, w)));
    if (w->size[0] > INT_MAX || int_product(int_product(w->size[1], w->size[2]), w->size[3]) < 0)
        luaL_argerror(L, 2,
                      lua_pushfstring(L, "weight %s is too large: Cout and Cin*kh*kw must be at most %d",
                                      lpnx_shape_of(s1, SHAPE_LEN, w), INT_MAX));
    if (int_product(x->size[2], x->size[3]) < 0)
        luaL_argerror(L, 1,
                      lua_pushfstring(L, "input %s has more than %d pixels per channel",
                                      lpnx_shape_of(s1, SHAPE_LEN, x), INT_MAX));
    w = lpnx_checkcontiguous(L, 2);
    d->n = x->size[0];
    d->cin = x->size[1];
    d->h = x->size[2];
    d->w = x->size[3];
    d->cout = w->size[0];
    d->kh = w->size[2];
    d->kw = w->size[3];
    *px = x;
    *pw = w;
}

/* A (Cout) vector at arg, or NULL for nil. inplace: the caller's own
 * contiguous tensor (it will be written); else a contiguous version. */
static lpnx_Tensor *opt_vector(lua_State *L, int arg, const char *what, int64_t cout, int inplace) {
    char s[SHAPE_LEN];
    if (lua_isnoneornil(L, arg)) return NULL;
    lpnx_Tensor *t = inplace ? lpnx_checkcontiguous_inplace(L, arg) : lpnx_checktensor(L, arg);
    if (t->ndim != 1 || t->size[0] != cout)
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected %s (%I) for %I output channels, got %s", what, (lua_Integer)cout,
                                      (lua_Integer)cout, lpnx_shape_of(s, SHAPE_LEN, t)));
    return inplace ? t : lpnx_checkcontiguous(L, arg);
}

/* The column buffer: the workspace tensor at arg when it is given, holds
 * enough floats and starts on 64 bytes, else a temporary tensor pushed on
 * the stack. NULL
 * when the convolution needs none. */
static float *column_buffer(lua_State *L, int arg, const lpnx_conv2d_dims *d, const int *others,
                            const char *names) {
    size_t need = lpnx_conv2d_col_size(d);
    if (!lua_isnoneornil(L, arg)) {
        lpnx_Tensor *ws = lpnx_checkcontiguous_inplace(L, arg);
        lpnx_checkdisjoint(L, arg, "workspace", ws, others, 0, names);
        if (need == 0) return NULL;
        /* the double forward keeps doubles in it: 64-byte aligned only */
        if (lpnx_tensor_numel(ws) >= need && ((uintptr_t)lpnx_tensor_data(ws) & 63) == 0)
            return lpnx_tensor_data(ws);
    }
    if (need == 0) return NULL;
    int64_t size = (int64_t)need;
    return lpnx_tensor_data(lpnx_pushnew(L, 1, &size, 0));
}

static int conv2d_forward(lua_State *L, int fast) {
    lua_settop(L, 13); /* missing arguments become nil; copies go above them */
    lpnx_Tensor *x, *w;
    lpnx_conv2d_dims d;
    read_algo(L, 12, &d);
    check_input_weight(L, &x, &w, &d);
    lpnx_Tensor *b = opt_vector(L, 3, "bias", d.cout, 0);
    read_geometry(L, 4, 1, x, &d);
    /* the caller's tensors, not the private copies */
    static const int inputs[] = {1, 2, 3, 0}, inputs_ws[] = {1, 2, 3, 10, 0};
    const int64_t ysize[4] = {d.n, d.cout, d.ho, d.wo};
    lpnx_Tensor *y = lpnx_optoutput(L, 11, "y", "output", 4, ysize, inputs_ws, 0, "x, w, b or the workspace");
    float *col = NULL;
    if (fast) col = column_buffer(L, 10, &d, inputs, "x, w or b");
    if (y)
        lua_pushvalue(L, 11);
    else
        y = lpnx_pushnew(L, 4, ysize, 0);
    const float *bias = b ? lpnx_tensor_data(b) : NULL;
    if (fast)
        lpnx_conv2d_forward(lpnx_tensor_data(y), lpnx_tensor_data(x), lpnx_tensor_data(w), bias, col, &d);
    else
        lpnx_oracles(L)->conv2d_forward(lpnx_tensor_data(y), lpnx_tensor_data(x), lpnx_tensor_data(w), bias, &d);
    return 1;
}

static int conv2d_backward(lua_State *L, int fast) {
    char s1[SHAPE_LEN], s2[SHAPE_LEN];
    lua_settop(L, 16); /* missing arguments become nil; copies go above them */
    lpnx_Tensor *x, *w;
    lpnx_conv2d_dims d;
    read_algo(L, 15, &d);
    check_input_weight(L, &x, &w, &d);
    read_geometry(L, 4, 1, x, &d);
    lpnx_Tensor *gy = lpnx_checknchw(L, 3);
    if (gy->size[0] != d.n || gy->size[1] != d.cout || gy->size[2] != d.ho || gy->size[3] != d.wo) {
        lpnx_Tensor want = *gy;
        want.size[0] = d.n;
        want.size[1] = d.cout;
        want.size[2] = d.ho;
        want.size[3] = d.wo;
        luaL_argerror(L, 3,
                      lua_pushfstring(L, "expected gy %s to match the forward output, got %s",
                                      lpnx_shape_of(s1, SHAPE_LEN, &want), lpnx_shape_of(s2, SHAPE_LEN, gy)));
    }
    lpnx_Tensor *gw = lpnx_checkcontiguous_inplace(L, 10);
    if (gw->ndim != 4 || gw->size[0] != w->size[0] || gw->size[1] != w->size[1] ||
        gw->size[2] != w->size[2] || gw->size[3] != w->size[3])
        luaL_argerror(L, 10,
                      lua_pushfstring(L, "expected gw %s like the weight, got %s", lpnx_shape_of(s1, SHAPE_LEN, w),
                                      lpnx_shape_of(s2, SHAPE_LEN, gw)));
    lpnx_Tensor *gb = opt_vector(L, 11, "gb", d.cout, 1);
    luaL_checktype(L, 12, LUA_TBOOLEAN);
    int need_gx = lua_toboolean(L, 12);
    /* the caller's tensors, not the private copies */
    static const int inputs3[] = {1, 2, 3, 0}, inputs4[] = {1, 2, 3, 10, 0}, inputs5[] = {1, 2, 3, 10, 11, 0},
                     inputs6[] = {1, 2, 3, 10, 11, 13, 0};
    lpnx_checkdisjoint(L, 10, "gw", gw, inputs3, 0, "x, w or gy");
    if (gb) lpnx_checkdisjoint(L, 11, "gb", gb, inputs4, 0, "x, w, gy or gw");
    lpnx_Tensor *gx = NULL;
    if (!need_gx && !lua_isnil(L, 14))
        luaL_argerror(L, 14, "gx is given but need_gx is false");
    if (need_gx) {
        const int64_t xsize[4] = {d.n, d.cin, d.h, d.w};
        gx = lpnx_optoutput(L, 14, "gx", "input gradient", 4, xsize, inputs6, 0,
                            "x, w, gy, gw, gb or the workspace");
    }
    float *col = NULL;
    if (fast) col = column_buffer(L, 13, &d, inputs5, "x, w, gy, gw or gb");
    float *dinp = NULL;
    if (gx) { /* the kernels accumulate into it */
        lua_pushvalue(L, 14);
        dinp = lpnx_tensor_data(gx);
        if (dinp) memset(dinp, 0, lpnx_tensor_numel(gx) * sizeof(float));
    } else if (need_gx) {
        int64_t size[4] = {d.n, d.cin, d.h, d.w};
        dinp = lpnx_tensor_data(lpnx_pushnew(L, 4, size, 1));
    } else {
        lua_pushnil(L);
    }
    float *dbias = gb ? lpnx_tensor_data(gb) : NULL;
    if (fast)
        lpnx_conv2d_backward(dinp, lpnx_tensor_data(gw), dbias, lpnx_tensor_data(gy), lpnx_tensor_data(x),
                             lpnx_tensor_data(w), col, &d);
    else
        lpnx_oracles(L)->conv2d_backward(dinp, lpnx_tensor_data(gw), dbias, lpnx_tensor_data(gy), lpnx_tensor_data(x),
                                         lpnx_tensor_data(w), &d);
    return 1;
}

static int l_conv2d_forward(lua_State *L) { return conv2d_forward(L, 1); }
static int l_conv2d_backward(lua_State *L) { return conv2d_backward(L, 1); }
static int l_ref_conv2d_forward(lua_State *L) { return conv2d_forward(L, 0); }
static int l_ref_conv2d_backward(lua_State *L) { return conv2d_backward(L, 0); }

static int l_conv2d_output_size(lua_State *L) {
    lpnx_conv2d_dims d = {0};
    lua_settop(L, 10);
    d.h = check_param(L, 1, "H", 0);
    d.w = check_param(L, 2, "W", 0);
    d.kh = check_param(L, 3, "kh", 1);
    d.kw = check_param(L, 4, "kw", 1);
    read_geometry(L, 5, 1, NULL, &d);
    lua_pushinteger(L, (lua_Integer)d.ho);
    lua_pushinteger(L, (lua_Integer)d.wo);
    return 2;
}

/* Floats the fast kernels want in a workspace for this convolution (0
 * when they need none), so that callers can share one buffer. */
static int l_conv2d_workspace_size(lua_State *L) {
    lua_settop(L, 10);
    lpnx_Tensor *x, *w;
    lpnx_conv2d_dims d;
    read_algo(L, 9, &d);
    check_input_weight(L, &x, &w, &d);
    read_geometry(L, 3, 1, x, &d);
    lua_pushinteger(L, (lua_Integer)lpnx_conv2d_col_size(&d));
    return 1;
}

void lpnx_open_conv(lua_State *L, int kidx, int ridx) {
    static const luaL_Reg fast[] = {{"conv2d_forward", l_conv2d_forward},
                                    {"conv2d_backward", l_conv2d_backward},
                                    {"conv2d_output_size", l_conv2d_output_size},
                                    {"conv2d_workspace_size", l_conv2d_workspace_size},
                                    {NULL, NULL}};
    static const luaL_Reg ref[] = {
        {"conv2d_forward", l_ref_conv2d_forward}, {"conv2d_backward", l_ref_conv2d_backward}, {NULL, NULL}};
    lpnx_setfuncs(L, kidx, fast);
    lpnx_setfuncs(L, ridx, ref);
}
