/* lpnx.kernels / lpnx.ref: optimizer updates, in place.
 *
 *   sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)
 *   adam_step(p, g, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
 *             weight_decay, decoupled)
 *   sum_squares(t) -> number
 *
 * p and the state tensors (buf, exp_avg, exp_avg_sq) are updated in place,
 * so they must be contiguous (never copied) and must not share memory; g
 * has p's shape and may be strided (it is then copied). buf may be nil
 * when momentum is 0. nesterov, first and decoupled are booleans. The
 * lpnx.ref versions take the same arguments and run the oracles. */
#include <math.h>
#include <stdint.h>

#include "../ops/optim.h"
#include "../ref/ref_table.h"
#include "bind.h"

/* A number at arg within [lo, hi] (finite, NaN rejected); hi_open excludes hi.
 * The bounds are whole numbers or infinite (they print as integers). */
static double checkrange(lua_State *L, int arg, const char *what, double lo, double hi, int hi_open) {
    double v = luaL_checknumber(L, arg);
    int ok = v >= lo && (hi_open ? v < hi : v <= hi) && !isinf(v);
    if (!ok) {
        if (isinf(lo))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a finite number, got %s", what, lua_tostring(L, arg)));
        if (isinf(hi))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a finite number >= %d, got %s", what, (int)lo, lua_tostring(L, arg)));
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a number in [%d, %d%s, got %s", what, (int)lo, (int)hi, hi_open ? ")" : "]", lua_tostring(L, arg)));
    }
    return v;
}

static int checkbool(lua_State *L, int arg, const char *what) {
    if (!lua_isboolean(L, arg))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a boolean, got %s", what, luaL_typename(L, arg)));
    return lua_toboolean(L, arg);
}

/* A tensor at arg with ref's shape, updated in place: contiguous, live. */
static float *checkstate(lua_State *L, int arg, const char *what, const lpnx_Tensor *ref) {
    char s1[160], s2[160];
    lpnx_Tensor *t = lpnx_checktensor(L, arg);
    int same = t->ndim == ref->ndim;
    for (int d = 0; same && d < ref->ndim; d++) same = t->size[d] == ref->size[d];
    if (!same) {
        lpnx_shape_str(s1, sizeof s1, ref->ndim, ref->size);
        lpnx_shape_str(s2, sizeof s2, t->ndim, t->size);
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s of the parameter's shape %s, got %s", what, s1, s2));
    }
    return lpnx_tensor_data(lpnx_checkcontiguous_inplace(L, arg));
}

/* The gradient at arg: p's shape, contiguous or copied. */
static const float *checkgrad(lua_State *L, int arg, const lpnx_Tensor *p) {
    char s1[160], s2[160];
    lpnx_Tensor *g = lpnx_checktensor(L, arg);
    if (!g->storage) luaL_argerror(L, arg, "tensor was closed");
    int same = g->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = g->size[d] == p->size[d];
    if (!same) {
        lpnx_shape_str(s1, sizeof s1, p->ndim, p->size);
        lpnx_shape_str(s2, sizeof s2, g->ndim, g->size);
        luaL_argerror(L, arg, lua_pushfstring(L, "expected grad of the parameter's shape %s, got %s", s1, s2));
    }
    return lpnx_tensor_data(lpnx_checkcontiguous(L, arg));
}

/* Raises when two n-float buffers overlap (in-place updates need distinct
 * memory: a shared buffer would be updated twice). */
static void checkdistinct(lua_State *L, int arg, const char *what, const float *a,
                          const char *other, const float *b, size_t n) {
    if (a && b && a < b + n && b < a + n)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must not share memory with %s", what, other));
}

/* Each entry first fixes the stack to its argument count, so that copies
 * pushed by the checks never pass for absent optional arguments. */
static int sgd(lua_State *L, int ref) {
    lua_settop(L, 9);
    lpnx_Tensor *p = lpnx_checkcontiguous_inplace(L, 1);
    size_t n = lpnx_tensor_numel(p);
    lpnx_sgd_hyper h;
    h.lr = checkrange(L, 4, "lr", 0, HUGE_VAL, 0);
    h.momentum = checkrange(L, 5, "momentum", 0, HUGE_VAL, 0);
    h.dampening = checkrange(L, 6, "dampening", -HUGE_VAL, HUGE_VAL, 0);
    h.weight_decay = checkrange(L, 7, "weight_decay", 0, HUGE_VAL, 0);
    h.nesterov = checkbool(L, 8, "nesterov");
    int first = checkbool(L, 9, "first");
    if (h.nesterov && (h.momentum <= 0 || h.dampening != 0))
        luaL_argerror(L, 8, "nesterov momentum requires a momentum and zero dampening");
    float *pd = lpnx_tensor_data(p), *buf = NULL;
    if (h.momentum != 0) {
        if (lua_isnoneornil(L, 3)) luaL_argerror(L, 3, "expected a momentum buffer when momentum is not 0, got nil");
        buf = checkstate(L, 3, "momentum buffer", p);
        checkdistinct(L, 3, "momentum buffer", buf, "the parameter", pd, n);
    } else if (!lua_isnoneornil(L, 3)) {
        checkstate(L, 3, "momentum buffer", p);
    }
    const float *g = checkgrad(L, 2, p);
    checkdistinct(L, 2, "grad", g, "the parameter", pd, n);
    checkdistinct(L, 2, "grad", g, "the momentum buffer", buf, n);
    if (ref)
        lpnx_oracles(L)->sgd_step(pd, buf, g, n, &h, first);
    else
        lpnx_sgd_step(pd, buf, g, n, &h, first);
    return 0;
}

static int adam(lua_State *L, int ref) {
    lua_settop(L, 11);
    lpnx_Tensor *p = lpnx_checkcontiguous_inplace(L, 1);
    size_t n = lpnx_tensor_numel(p);
    lpnx_adam_hyper h;
    lua_Integer step = luaL_checkinteger(L, 5);
    if (step < 1) luaL_argerror(L, 5, lua_pushfstring(L, "step must be >= 1, got %I", step));
    h.step = (long long)step;
    h.lr = checkrange(L, 6, "lr", 0, HUGE_VAL, 0);
    h.beta1 = checkrange(L, 7, "beta1", 0, 1, 1);
    h.beta2 = checkrange(L, 8, "beta2", 0, 1, 1);
    h.eps = checkrange(L, 9, "eps", 0, HUGE_VAL, 0);
    h.weight_decay = checkrange(L, 10, "weight_decay", 0, HUGE_VAL, 0);
    h.decoupled = checkbool(L, 11, "decoupled");
    float *pd = lpnx_tensor_data(p);
    float *m = checkstate(L, 3, "exp_avg", p);
    float *v = checkstate(L, 4, "exp_avg_sq", p);
    checkdistinct(L, 3, "exp_avg", m, "the parameter", pd, n);
    checkdistinct(L, 4, "exp_avg_sq", v, "the parameter", pd, n);
    checkdistinct(L, 4, "exp_avg_sq", v, "exp_avg", m, n);
    const float *g = checkgrad(L, 2, p);
    checkdistinct(L, 2, "grad", g, "the parameter", pd, n);
    checkdistinct(L, 2, "grad", g, "exp_avg", m, n);
    checkdistinct(L, 2, "grad", g, "exp_avg_sq", v, n);
    if (ref)
        lpnx_oracles(L)->adam_step(pd, m, v, g, n, &h);
    else
        lpnx_adam_step(pd, m, v, g, n, &h);
    return 0;
}

static int sum_squares(lua_State *L, int ref) {
    lua_settop(L, 1);
    lpnx_Tensor *t = lpnx_checkcontiguous(L, 1);
    size_t n = lpnx_tensor_numel(t);
    const float *x = lpnx_tensor_data(t);
    lua_pushnumber(L, n == 0 ? 0.0 : ref ? lpnx_oracles(L)->sum_squares(x, n) : lpnx_sum_squares(x, n));
    return 1;
}

static int l_sgd(lua_State *L) { return sgd(L, 0); }
static int l_adam(lua_State *L) { return adam(L, 0); }
static int l_sum_squares(lua_State *L) { return sum_squares(L, 0); }
static int l_ref_sgd(lua_State *L) { return sgd(L, 1); }
static int l_ref_adam(lua_State *L) { return adam(L, 1); }
static int l_ref_sum_squares(lua_State *L) { return sum_squares(L, 1); }

void lpnx_open_optim(lua_State *L, int kidx, int ridx) {
    static const luaL_Reg fast[] = {
        {"sgd_step", l_sgd}, {"adam_step", l_adam}, {"sum_squares", l_sum_squares}, {NULL, NULL}};
    static const luaL_Reg ref[] = {
        {"sgd_step", l_ref_sgd}, {"adam_step", l_ref_adam}, {"sum_squares", l_ref_sum_squares},
        {NULL, NULL}};
    lpnx_setfuncs(L, kidx, fast);
    lpnx_setfuncs(L, ridx, ref);
}
