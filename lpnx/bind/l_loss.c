/* lpnx.kernels / lpnx.ref: loss functions on logits.
 *
 *   bce_with_logits(logits, target [, pos_weight]) -> mean loss
 *   bce_with_logits_backward(logits, target [, pos_weight]) -> dlogits
 *   dice_loss(logits, target, eps) -> loss
 *   dice_loss_backward(logits, target, eps) -> dlogits
 *   dice_sums(logits, target) -> sum_pt, sum_p, sum_t
 *   dice_loss_backward_sums(logits, target, sum_pt, sum_p, sum_t, eps) -> dlogits
 *     (the Dice loss of a batch spread over several processes: the sums
 *     added up over all of them, the gradient for this one's logits)
 *   focal_loss(logits, target, gamma [, alpha]) -> mean loss
 *   focal_loss_backward(logits, target, gamma [, alpha]) -> dlogits
 *
 * logits and target have one shape (any, non-empty); non-contiguous ones
 * are copied. pos_weight is a number or a tensor broadcastable to that
 * shape (PyTorch's rule: trailing dims align, each equal or 1). The
 * backward functions return a new tensor, the gradient of the returned
 * loss (so already divided by numel for the means). The lpnx.ref versions
 * take the same arguments and run the naive oracles of lpnx/ref. */
#include <math.h>

#include "../ops/loss.h"
#include "../ref/ref_table.h"
#include "bind.h"

/* logits (arg 1) and target (arg 2): non-empty, one shape. Returns numel. */
static size_t checkpair(lua_State *L, lpnx_Tensor **logits, lpnx_Tensor **target) {
    char s1[160], s2[160];
    lpnx_Tensor *x = lpnx_checkcontiguous(L, 1);
    size_t n = lpnx_tensor_numel(x);
    if (n == 0) {
        lpnx_shape_str(s1, sizeof s1, x->ndim, x->size);
        luaL_argerror(L, 1, lua_pushfstring(L, "expected non-empty logits, got %s", s1));
    }
    lpnx_Tensor *t = lpnx_checkcontiguous(L, 2);
    int same = t->ndim == x->ndim;
    for (int d = 0; same && d < x->ndim; d++) same = t->size[d] == x->size[d];
    if (!same) {
        lpnx_shape_str(s1, sizeof s1, x->ndim, x->size);
        lpnx_shape_str(s2, sizeof s2, t->ndim, t->size);
        luaL_argerror(L, 2, lua_pushfstring(L, "expected target of the logits' shape %s, got %s", s1, s2));
    }
    *logits = x;
    *target = t;
    return n;
}

/* A number at arg within [lo, hi] (NaN rejected); what names it. The bounds
 * are whole numbers (they print as integers). */
static float checkrange(lua_State *L, int arg, const char *what, double lo, double hi) {
    double v = luaL_checknumber(L, arg);
    if (!(v >= lo && v <= hi)) {
        if (isinf(hi))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a finite number >= %d, got %s", what, (int)lo, lua_tostring(L, arg)));
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a number in [%d, %d], got %s", what, (int)lo, (int)hi, lua_tostring(L, arg)));
    }
    if (isinf(v)) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be finite, got %s", what, lua_tostring(L, arg)));
    return (float)v;
}

/* pos_weight at arg 3 for logits x: NULL when absent, else the weights and
 * the stride between consecutive elements' weights (0: one weight for all).
 * full != 0 always gives n weights (the oracles' form). A broadcast tensor
 * is expanded into a tensor pushed onto the stack. */
static const float *checkposweight(lua_State *L, const lpnx_Tensor *x, int full, float *scalar,
                                   size_t *stride) {
    char s1[160], s2[160];
    const int arg = 3;
    *stride = 0;
    if (lua_isnoneornil(L, arg)) return NULL;
    lpnx_Tensor *w = lpnx_testtensor(L, arg);
    if (!w) {
        if (lua_type(L, arg) != LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L, "expected pos_weight as a number or a tensor, got %s", luaL_typename(L, arg)));
        *scalar = checkrange(L, arg, "pos_weight", 0, HUGE_VAL);
        if (!full) return scalar;
        lpnx_Tensor *t = lpnx_pushnew(L, x->ndim, x->size, 0);
        lpnx_fill(lpnx_operand_of(t), t->ndim, t->size, *scalar);
        *stride = 1;
        return lpnx_tensor_data(t);
    }
    if (!w->storage) luaL_argerror(L, arg, "tensor was closed");
    int fits = w->ndim <= x->ndim;
    for (int d = 0; fits && d < w->ndim; d++) {
        int64_t have = w->size[w->ndim - 1 - d], want = x->size[x->ndim - 1 - d];
        fits = have == want || have == 1;
    }
    if (!fits) {
        lpnx_shape_str(s1, sizeof s1, x->ndim, x->size);
        lpnx_shape_str(s2, sizeof s2, w->ndim, w->size);
        luaL_argerror(L, arg, lua_pushfstring(L, "expected pos_weight broadcastable to the logits' shape %s, got %s", s1, s2));
    }
    if (!full && lpnx_tensor_numel(w) == 1) {
        *scalar = lpnx_tensor_data(w)[0];
        return scalar;
    }
    int same = w->ndim == x->ndim;
    for (int d = 0; same && d < x->ndim; d++) same = w->size[d] == x->size[d];
    *stride = 1;
    if (same) return lpnx_tensor_data(lpnx_checkcontiguous(L, arg));
    /* Broadcast: dims of w align with the last w->ndim dims of x. */
    lpnx_operand src = lpnx_operand_of(w);
    int shift = x->ndim - w->ndim;
    for (int d = 0; d < x->ndim; d++) {
        int k = d - shift;
        src.stride[d] = k >= 0 && w->size[k] == x->size[d] ? w->stride[k] : 0;
    }
    lpnx_Tensor *t = lpnx_pushnew(L, x->ndim, x->size, 0);
    lpnx_unary(lpnx_operand_of(t), src, x->ndim, x->size, LPNX_OP_COPY);
    return lpnx_tensor_data(t);
}

/* alpha at arg 4: absent, or a number in [0, 1]. */
static int checkalpha(lua_State *L, float *alpha) {
    *alpha = 0;
    if (lua_isnoneornil(L, 4)) return 0;
    *alpha = checkrange(L, 4, "alpha", 0, 1);
    return 1;
}

/* ---- BCE with logits ------------------------------------------------- */

/* Each entry first fixes the stack to its argument count, so that copies
 * pushed by the checks never pass for absent optional arguments. */
static int bce(lua_State *L, int ref, int backward) {
    lpnx_Tensor *x, *t;
    lua_settop(L, 3);
    float scalar;
    size_t stride;
    size_t n = checkpair(L, &x, &t);
    const float *w = checkposweight(L, x, ref, &scalar, &stride);
    const float *xd = lpnx_tensor_data(x), *td = lpnx_tensor_data(t);
    if (!backward) {
        lua_pushnumber(L, ref ? lpnx_oracles(L)->bce_with_logits(xd, td, w, n)
                              : lpnx_bce_with_logits_forward(xd, td, w, stride, n));
        return 1;
    }
    lpnx_Tensor *g = lpnx_pushnew(L, x->ndim, x->size, 0);
    if (ref)
        lpnx_oracles(L)->bce_with_logits_backward(lpnx_tensor_data(g), xd, td, w, n);
    else
        lpnx_bce_with_logits_backward(lpnx_tensor_data(g), xd, td, w, stride, n);
    return 1;
}

static int l_bce(lua_State *L) { return bce(L, 0, 0); }
static int l_bce_backward(lua_State *L) { return bce(L, 0, 1); }
static int l_ref_bce(lua_State *L) { return bce(L, 1, 0); }
static int l_ref_bce_backward(lua_State *L) { return bce(L, 1, 1); }

/* ---- soft Dice ------------------------------------------------------- */

static int dice(lua_State *L, int ref, int backward) {
    lpnx_Tensor *x, *t;
    lua_settop(L, 3);
    size_t n = checkpair(L, &x, &t);
    float eps = checkrange(L, 3, "eps", 0, HUGE_VAL);
    const float *xd = lpnx_tensor_data(x), *td = lpnx_tensor_data(t);
    if (!backward) {
        lua_pushnumber(L, ref ? lpnx_oracles(L)->dice_loss(xd, td, eps, n) : lpnx_dice_loss_forward(xd, td, eps, n));
        return 1;
    }
    lpnx_Tensor *g = lpnx_pushnew(L, x->ndim, x->size, 0);
    if (ref)
        lpnx_oracles(L)->dice_loss_backward(lpnx_tensor_data(g), xd, td, eps, n);
    else
        lpnx_dice_loss_backward(lpnx_tensor_data(g), xd, td, eps, n);
    return 1;
}

static int l_dice(lua_State *L) { return dice(L, 0, 0); }
static int l_dice_backward(lua_State *L) { return dice(L, 0, 1); }
static int l_ref_dice(lua_State *L) { return dice(L, 1, 0); }
static int l_ref_dice_backward(lua_State *L) { return dice(L, 1, 1); }

static int dice_sums(lua_State *L, int ref) {
    lpnx_Tensor *x, *t;
    lua_settop(L, 2);
    size_t n = checkpair(L, &x, &t);
    double spt = 0, sp = 0, st = 0;
    (ref ? lpnx_oracles(L)->dice_sums : lpnx_dice_sums)(&spt, &sp, &st, lpnx_tensor_data(x), lpnx_tensor_data(t), n);
    lua_pushnumber(L, spt);
    lua_pushnumber(L, sp);
    lua_pushnumber(L, st);
    return 3;
}

static int dice_backward_sums(lua_State *L, int ref) {
    lpnx_Tensor *x, *t;
    lua_settop(L, 6);
    size_t n = checkpair(L, &x, &t);
    double sums[3];
    static const char *const names[] = {"sum_pt", "sum_p", "sum_t"};
    for (int k = 0; k < 3; k++) {
        sums[k] = luaL_checknumber(L, 3 + k);
        if (!(sums[k] >= 0 && sums[k] < HUGE_VAL))
            luaL_argerror(L, 3 + k, lua_pushfstring(L, "%s must be a finite number >= 0, got %f", names[k], sums[k]));
    }
    float eps = checkrange(L, 6, "eps", 0, HUGE_VAL);
    lpnx_Tensor *g = lpnx_pushnew(L, x->ndim, x->size, 0);
    (ref ? lpnx_oracles(L)->dice_loss_backward_sums : lpnx_dice_loss_backward_sums)(
        lpnx_tensor_data(g), lpnx_tensor_data(x), lpnx_tensor_data(t), sums[0], sums[1], sums[2], eps, n);
    return 1;
}

static int l_dice_sums(lua_State *L) { return dice_sums(L, 0); }
static int l_ref_dice_sums(lua_State *L) { return dice_sums(L, 1); }
static int l_dice_backward_sums(lua_State *L) { return dice_backward_sums(L, 0); }
static int l_ref_dice_backward_sums(lua_State *L) { return dice_backward_sums(L, 1); }

/* ---- focal loss ------------------------------------------------------ */

static int focal(lua_State *L, int ref, int backward) {
    lpnx_Tensor *x, *t;
    float alpha;
    lua_settop(L, 4);
    size_t n = checkpair(L, &x, &t);
    float gamma = checkrange(L, 3, "gamma", 0, HUGE_VAL);
    int use_alpha = checkalpha(L, &alpha);
    const float *xd = lpnx_tensor_data(x), *td = lpnx_tensor_data(t);
    if (!backward) {
        lua_pushnumber(L, ref ? lpnx_oracles(L)->focal_loss(xd, td, gamma, use_alpha, alpha, n)
                              : lpnx_focal_loss_forward(xd, td, gamma, use_alpha, alpha, n));
        return 1;
    }
    lpnx_Tensor *g = lpnx_pushnew(L, x->ndim, x->size, 0);
    if (ref)
        lpnx_oracles(L)->focal_loss_backward(lpnx_tensor_data(g), xd, td, gamma, use_alpha, alpha, n);
    else
        lpnx_focal_loss_backward(lpnx_tensor_data(g), xd, td, gamma, use_alpha, alpha, n);
    return 1;
}

static int l_focal(lua_State *L) { return focal(L, 0, 0); }
static int l_focal_backward(lua_State *L) { return focal(L, 0, 1); }
static int l_ref_focal(lua_State *L) { return focal(L, 1, 0); }
static int l_ref_focal_backward(lua_State *L) { return focal(L, 1, 1); }

void lpnx_open_loss(lua_State *L, int kidx, int ridx) {
    static const luaL_Reg fast[] = {
        {"bce_with_logits", l_bce}, {"bce_with_logits_backward", l_bce_backward},
        {"dice_loss", l_dice}, {"dice_loss_backward", l_dice_backward},
        {"dice_sums", l_dice_sums}, {"dice_loss_backward_sums", l_dice_backward_sums},
        {"focal_loss", l_focal}, {"focal_loss_backward", l_focal_backward},
        {NULL, NULL}};
    static const luaL_Reg ref[] = {
        {"bce_with_logits", l_ref_bce}, {"bce_with_logits_backward", l_ref_bce_backward},
        {"dice_loss", l_ref_dice}, {"dice_loss_backward", l_ref_dice_backward},
        {"dice_sums", l_ref_dice_sums}, {"dice_loss_backward_sums", l_ref_dice_backward_sums},
        {"focal_loss", l_ref_focal}, {"focal_loss_backward", l_ref_focal_backward},
        {NULL, NULL}};
    lpnx_setfuncs(L, kidx, fast);
    lpnx_setfuncs(L, ridx, ref);
}
