/* The tensor and generator userdata as the bindings share them: typed
 * getters, tensor creation that raises a Lua error (never returns NULL),
 * contiguous copies, size and dim arguments, and the default generator.
 * Every binding file uses these; none of them uses a binding file. */
#include <string.h>

#include "bind.h"

/* ---- userdata basics ------------------------------------------------- */

lpnx_Tensor *lpnx_checktensor(lua_State *L, int i) {
    return luaL_checkudata(L, i, LPNX_TENSOR_MT);
}

lpnx_Tensor *lpnx_testtensor(lua_State *L, int i) {
    return luaL_testudata(L, i, LPNX_TENSOR_MT);
}

lpnx_Tensor *lpnx_pushempty(lua_State *L) {
    lpnx_Tensor *t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, LPNX_TENSOR_MT);
    return t;
}

/* Bytes of tensors made since the collector last ran in full. Lua paces
 * its collector by its own heap, where a tensor weighs a few dozen bytes
 * whatever its storage, so dead tensors would pile up; a full collection
 * every GC_BUDGET bytes of new tensors bounds them, and their storages go
 * back to the allocator's cache (tensor.c) for the next ones. Incremental
 * steps, even large ones, were seen to leave dead tensors unfinalized for
 * many cycles when several ran between two allocations. A full collection
 * of a Lua heap of a few megabytes takes about a millisecond. */
#define GC_BUDGET ((size_t)32 << 20)
static size_t made_since_gc; /* atomic: Lua states may live in several threads */

lpnx_Tensor *lpnx_pushnew(lua_State *L, int ndim, const int64_t *size, int zero) {
    char shape[160];
    lpnx_Tensor *t = lpnx_pushempty(L);
    lpnx_status st = lpnx_tensor_alloc(t, ndim, size, zero);
    if (st != LPNX_OK) {
        lpnx_shape_str(shape, sizeof shape, ndim, size);
        if (st == LPNX_ENOMEM) luaL_error(L, "not enough memory for a %s tensor", shape);
        luaL_error(L, "cannot make a %s tensor: %s", shape, lpnx_strerror(st));
    }
    size_t bytes = lpnx_tensor_numel(t) * sizeof(float);
    if (__atomic_add_fetch(&made_since_gc, bytes, __ATOMIC_RELAXED) >= GC_BUDGET) {
        __atomic_store_n(&made_since_gc, 0, __ATOMIC_RELAXED);
        lua_gc(L, LUA_GCCOLLECT, 0);
    }
    return t;
}

lpnx_Tensor *lpnx_pushview(lua_State *L, const lpnx_Tensor *t) {
    lpnx_Tensor *v = lpnx_pushempty(L);
    lpnx_tensor_share(v, t);
    return v;
}

lpnx_operand lpnx_operand_of(const lpnx_Tensor *t) {
    lpnx_operand o;
    o.data = lpnx_tensor_data(t);
    for (int d = 0; d < LPNX_MAXDIM; d++) o.stride[d] = d < t->ndim ? t->stride[d] : 0;
    return o;
}

/* Copies src into a new contiguous tensor on the stack. */
lpnx_Tensor *lpnx_pushcopy(lua_State *L, const lpnx_Tensor *src) {
    lpnx_Tensor *c = lpnx_pushnew(L, src->ndim, src->size, 0);
    if (lpnx_tensor_numel(src) > 0)
        lpnx_unary(lpnx_operand_of(c), lpnx_operand_of(src), src->ndim, src->size, LPNX_OP_COPY);
    return c;
}

static void checklive(lua_State *L, const lpnx_Tensor *t, int arg) {
    if (!t->storage) luaL_argerror(L, arg, "tensor was closed");
}

/* Typed getter that also rejects closed tensors. */
lpnx_Tensor *lpnx_checklive(lua_State *L, int i) {
    lpnx_Tensor *t = lpnx_checktensor(L, i);
    checklive(L, t, i);
    return t;
}

lpnx_Tensor *lpnx_checkcontiguous(lua_State *L, int i) {
    lpnx_Tensor *t = lpnx_checklive(L, i);
    return lpnx_tensor_is_contiguous(t) ? t : lpnx_pushcopy(L, t);
}

lpnx_Tensor *lpnx_checknchw(lua_State *L, int i) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, i);
    if (t->ndim == 4 && !lpnx_tensor_is_contiguous(t)) t = lpnx_pushcopy(L, t);
    if (t->ndim != 4) {
        lpnx_shape_str(s, sizeof s, t->ndim, t->size);
        luaL_argerror(L, i, lua_pushfstring(L, "expected (N,C,H,W), got %s", s));
    }
    return t;
}

void lpnx_checkshape(lua_State *L, int arg, const lpnx_Tensor *t, int ndim, const int64_t *size) {
    char s1[160], s2[160];
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->size[d] == size[d];
    if (!same) {
        lpnx_shape_str(s1, sizeof s1, ndim, size);
        lpnx_shape_str(s2, sizeof s2, t->ndim, t->size);
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s, got %s", s1, s2));
    }
}

lpnx_Tensor *lpnx_checkcontiguous_inplace(lua_State *L, int i) {
    lpnx_Tensor *t = lpnx_checklive(L, i);
    if (!lpnx_tensor_is_contiguous(t))
        luaL_argerror(L, i, "expected a contiguous tensor (call :contiguous() first)");
    return t;
}

/* ---- argument helpers ------------------------------------------------ */

int64_t lpnx_checkint(lua_State *L, int arg, const char *what) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) {
        if (lua_type(L, arg) == LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", what, lua_tostring(L, arg)));
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", what, luaL_typename(L, arg)));
    }
    return (int64_t)v;
}

static int64_t checksize_at(lua_State *L, int arg, int idx_in_table) {
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < 0) {
        const char *got = lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1);
        if (idx_in_table)
            luaL_argerror(L, arg, lua_pushfstring(L, "size %d must be a non-negative integer, got %s", idx_in_table, got));
        luaL_argerror(L, arg, lua_pushfstring(L, "size must be a non-negative integer, got %s", got));
    }
    return (int64_t)v;
}

/* Sizes from the numbers at first..last (last < 0: up to the first non-number). */
int lpnx_readsizes(lua_State *L, int first, int last, int64_t *size, int *next) {
    int ndim = 0, i = first;
    while (last < 0 ? lua_type(L, i) == LUA_TNUMBER : i <= last) {
        if (ndim == LPNX_MAXDIM) luaL_argerror(L, i, lua_pushfstring(L, "at most %d dims", LPNX_MAXDIM));
        lua_pushvalue(L, i);
        size[ndim++] = checksize_at(L, i, 0);
        lua_pop(L, 1);
        i++;
    }
    if (next) *next = i;
    return ndim;
}

int lpnx_checksizes(lua_State *L, int first, int64_t *size, int *next) {
    int ndim = 0;
    if (lua_istable(L, first)) {
        lua_Integer n = luaL_len(L, first);
        if (n > LPNX_MAXDIM) luaL_argerror(L, first, lua_pushfstring(L, "at most %d dims, got %d", LPNX_MAXDIM, (int)n));
        for (int i = 1; i <= n; i++) {
            lua_geti(L, first, i);
            size[ndim++] = checksize_at(L, first, i);
            lua_pop(L, 1);
        }
        if (next) *next = first + 1;
        return ndim;
    }
    int t = lua_type(L, first);
    if (t != LUA_TNUMBER && t != LUA_TNONE && t != LUA_TNIL && !next)
        luaL_argerror(L, first, lua_pushfstring(L, "expected sizes as numbers or a table, got %s", luaL_typename(L, first)));
    return lpnx_readsizes(L, first, -1, size, next);
}

int lpnx_checkdim(lua_State *L, int arg, int ndim) {
    int64_t d = lpnx_checkint(L, arg, "dim");
    int64_t n = ndim > 0 ? ndim : 1;
    if (d < 0) d += n + 1;
    if (d < 1 || d > n)
        luaL_argerror(L, arg, lua_pushfstring(L, "dim %d out of range for a %d-dim tensor", (int)lpnx_checkint(L, arg, "dim"), ndim));
    return (int)(d - 1);
}

/* ---- output buffers ---------------------------------------------------- */

static int same_view(const lpnx_Tensor *a, const lpnx_Tensor *b) {
    if (!a || !b || a->storage != b->storage || a->offset != b->offset || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->size[d] != b->size[d] || a->stride[d] != b->stride[d]) return 0;
    return 1;
}

void lpnx_checkdisjoint(lua_State *L, int arg, const char *what, const lpnx_Tensor *t, const int *args, int same,
                        const char *names) {
    for (const int *a = args; *a; a++) {
        const lpnx_Tensor *other = lpnx_testtensor(L, *a);
        if (*a == same && same_view(t, other)) continue;
        if (lpnx_overlaps(t, other))
            luaL_argerror(L, arg, lua_pushfstring(L, "%s must not share memory with %s", what, names));
    }
}

/* The output buffer at arg: NULL for nil (the caller then makes a new
 * tensor); otherwise the caller's own contiguous tensor with exactly the
 * ndim sizes, sharing no memory with the tensors at the stack indices in
 * args (0-terminated; non-tensors skipped), except that it may be the very
 * tensor at index same (0 for none). what names the buffer, role what it
 * holds and names the arguments, in messages. */
lpnx_Tensor *lpnx_optoutput(lua_State *L, int arg, const char *what, const char *role, int ndim,
                             const int64_t *size, const int *args, int same, const char *names) {
    char s1[160], s2[160];
    if (lua_isnoneornil(L, arg)) return NULL;
    lpnx_Tensor *t = lpnx_checklive(L, arg);
    int match = t->ndim == ndim;
    for (int d = 0; match && d < ndim; d++) match = t->size[d] == size[d];
    if (!match) {
        lpnx_Tensor want = {0};
        want.ndim = ndim;
        for (int d = 0; d < ndim; d++) want.size[d] = size[d];
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected %s %s to hold the %s, got %s", what,
                                      lpnx_shape_of(s1, sizeof s1, &want), role, lpnx_shape_of(s2, sizeof s2, t)));
    }
    if (!lpnx_tensor_is_contiguous(t))
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s to be contiguous: it is written in place", what));
    lpnx_checkdisjoint(L, arg, what, t, args, same, names);
    return t;
}

/* ---- generators ------------------------------------------------------ */

lpnx_rng *lpnx_default_generator(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, LPNX_DEFAULT_GENERATOR);
    lpnx_rng *g = lua_touserdata(L, -1);
    lua_pop(L, 1); /* the registry keeps it alive */
    return g;
}

lpnx_rng *lpnx_optgenerator(lua_State *L, int i) {
    if (lua_isnoneornil(L, i)) return lpnx_default_generator(L);
    lpnx_rng *g = luaL_testudata(L, i, LPNX_GENERATOR_MT);
    if (!g) luaL_argerror(L, i, lua_pushfstring(L, "expected an lpnx.Generator, got %s", luaL_typename(L, i)));
    return g;
}
