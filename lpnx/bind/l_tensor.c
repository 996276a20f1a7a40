/* lpnx.Tensor: the userdata, its constructors, views, arithmetic,
 * reductions, matmul and cat. Every argument is checked here; kernels in
 * ops/ get valid, contiguous-or-strided operands and cannot fail. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bind.h"

static void checklive(lua_State *L, const lpnx_Tensor *t, int arg) {
    if (!t->storage) luaL_argerror(L, arg, "tensor was closed");
}

static const char *shapestr(const lpnx_Tensor *t, char *buf, size_t len) {
    lpnx_shape_str(buf, len, t->ndim, t->size);
    return buf;
}

static int t_gc(lua_State *L) {
    lpnx_tensor_free(lpnx_checktensor(L, 1));
    return 0;
}

/* Checks a 1-based index (negatives count from the end) -> 0-based. */
static int64_t checkindex(lua_State *L, int arg, int64_t i, int64_t n, int dim) {
    int64_t j = i < 0 ? i + n : i - 1;
    if (i == 0 || j < 0 || j >= n)
        luaL_argerror(L, arg, lua_pushfstring(L, "index %d out of range for dim %d of size %d", (int)i, dim + 1, (int)n));
    return j;
}

static float checkfloat(lua_State *L, int arg) {
    return (float)luaL_checknumber(L, arg);
}

/* ---- constructors ---------------------------------------------------- */

/* Shape of a nested table: descend through first elements. */
static int nested_shape(lua_State *L, int idx, int64_t *size) {
    int ndim = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1) || lpnx_testtensor(L, -1)) {
        if (ndim == LPNX_MAXDIM) luaL_error(L, "lpnx.tensor: more than %d nesting levels", LPNX_MAXDIM);
        if (lpnx_testtensor(L, -1)) {
            lpnx_Tensor *t = lpnx_testtensor(L, -1);
            for (int d = 0; d < t->ndim && ndim < LPNX_MAXDIM; d++) size[ndim++] = t->size[d];
            break;
        }
        lua_Integer n = luaL_len(L, -1);
        size[ndim++] = n;
        if (n == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return ndim;
}

/* Fills dst from the nested table at idx; depth d of ndim. */
static float *nested_fill(lua_State *L, int idx, int d, int ndim, const int64_t *size, float *dst) {
    if (d == ndim) {
        int isnum;
        lua_Number v = lua_tonumberx(L, idx, &isnum);
        if (!isnum) {
            if (lua_isboolean(L, idx)) v = lua_toboolean(L, idx);
            else luaL_error(L, "lpnx.tensor: expected a number, got %s", luaL_typename(L, idx));
        }
        *dst = (float)v;
        return dst + 1;
    }
    lpnx_Tensor *t = lpnx_testtensor(L, idx);
    if (t) {
        if (t->ndim != ndim - d || memcmp(t->size, size + d, sizeof(int64_t) * (size_t)t->ndim) != 0)
            luaL_error(L, "lpnx.tensor: a tensor element at depth %d has the wrong shape", d + 1);
        lpnx_tensor_gather(dst, t);
        return dst + lpnx_tensor_numel(t);
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "lpnx.tensor: expected a table at depth %d, got %s", d + 1, luaL_typename(L, idx));
    lua_Integer n = luaL_len(L, idx);
    if (n != size[d])
        luaL_error(L, "lpnx.tensor: ragged table: a row at depth %d has %d elements, expected %d",
                   d + 1, (int)n, (int)size[d]);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        dst = nested_fill(L, lua_gettop(L), d + 1, ndim, size, dst);
        lua_pop(L, 1);
    }
    return dst;
}

static int l_tensor(lua_State *L) {
    int64_t size[LPNX_MAXDIM];
    lpnx_Tensor *src = lpnx_testtensor(L, 1);
    if (src) {
        checklive(L, src, 1);
        lpnx_pushcopy(L, src);
        return 1;
    }
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lpnx_Tensor *t = lpnx_pushnew(L, 0, size, 0);
        lpnx_tensor_data(t)[0] = (float)lua_tonumber(L, 1);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int ndim = nested_shape(L, 1, size);
    lpnx_Tensor *t = lpnx_pushnew(L, ndim, size, 0);
    nested_fill(L, 1, 0, ndim, size, lpnx_tensor_data(t));
    return 1;
}

static int make_filled(lua_State *L, float v, int zero) {
    int64_t size[LPNX_MAXDIM];
    int next;
    int ndim = lpnx_checksizes(L, 1, size, &next);
    if (!lua_isnone(L, next))
        luaL_argerror(L, next, lua_pushfstring(L, "expected sizes as numbers or a table, got %s", luaL_typename(L, next)));
    lpnx_Tensor *t = lpnx_pushnew(L, ndim, size, zero);
    if (!zero && v != 0) {
        float *p = lpnx_tensor_data(t);
        size_t n = lpnx_tensor_numel(t);
        for (size_t i = 0; i < n; i++) p[i] = v;
    }
    return 1;
}

static int l_zeros(lua_State *L) { return make_filled(L, 0, 1); }
static int l_ones(lua_State *L) { return make_filled(L, 1, 0); }
/* Uninitialised, like torch.empty. */
static int l_empty(lua_State *L) { return make_filled(L, 0, 0); }

/* full({2, 3}, v) or full(2, 3, v). */
static int l_full(lua_State *L) {
    int64_t size[LPNX_MAXDIM];
    int ndim, value_arg;
    if (lua_istable(L, 1)) {
        ndim = lpnx_checksizes(L, 1, size, &value_arg);
    } else {
        value_arg = lua_gettop(L);
        if (value_arg < 1) return luaL_argerror(L, 1, "expected sizes and a fill value");
        ndim = lpnx_readsizes(L, 1, value_arg - 1, size, NULL);
    }
    float v = checkfloat(L, value_arg);
    lpnx_Tensor *t = lpnx_pushnew(L, ndim, size, 0);
    float *p = lpnx_tensor_data(t);
    size_t n = lpnx_tensor_numel(t);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return 1;
}

static int random_fill(lua_State *L, int normal) {
    int64_t size[LPNX_MAXDIM];
    int next;
    int ndim = lpnx_checksizes(L, 1, size, &next);
    lpnx_rng *g = lpnx_optgenerator(L, next);
    lpnx_Tensor *t = lpnx_pushnew(L, ndim, size, 0);
    if (normal) lpnx_rng_fill_normal(g, lpnx_tensor_data(t), lpnx_tensor_numel(t), 0, 1);
    else lpnx_rng_fill_uniform(g, lpnx_tensor_data(t), lpnx_tensor_numel(t), 0, 1);
    return 1;
}

static int l_rand(lua_State *L) { return random_fill(L, 0); }
static int l_randn(lua_State *L) { return random_fill(L, 1); }

static int l_arange(lua_State *L) {
    double a = 0, b, step = 1;
    if (lua_isnoneornil(L, 2)) {
        b = luaL_checknumber(L, 1);
    } else {
        a = luaL_checknumber(L, 1);
        b = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    if (step == 0 || step != step) return luaL_argerror(L, 3, "step must be non-zero");
    double count = ceil((b - a) / step);
    if (!(count >= 0)) count = 0;
    if (count > 1e15) return luaL_error(L, "arange: %f elements is too many", count);
    int64_t n = (int64_t)count;
    lpnx_Tensor *t = lpnx_pushnew(L, 1, &n, 0);
    float *p = lpnx_tensor_data(t);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(a + (double)i * step);
    return 1;
}

/* ---- queries --------------------------------------------------------- */

/* size() / stride(): the whole table, or one dim's value. */
static int push_dims(lua_State *L, const int64_t *values) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        if (t->ndim == 0) return luaL_argerror(L, 2, "a scalar tensor has no dims");
        lua_pushinteger(L, values[lpnx_checkdim(L, 2, t->ndim)]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, values[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int l_size(lua_State *L) { return push_dims(L, lpnx_checklive(L, 1)->size); }
static int l_stride(lua_State *L) { return push_dims(L, lpnx_checklive(L, 1)->stride); }

static int l_dim(lua_State *L) {
    lua_pushinteger(L, lpnx_checklive(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lpnx_tensor_numel(lpnx_checklive(L, 1)));
    return 1;
}

static int l_is_contiguous(lua_State *L) {
    lua_pushboolean(L, lpnx_tensor_is_contiguous(lpnx_checklive(L, 1)));
    return 1;
}

static int l_len(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim == 0) return luaL_error(L, "# of a scalar tensor: it has no dims");
    lua_pushinteger(L, t->size[0]);
    return 1;
}

/* Whether two tensors share storage (views of one another). */
static int l_is_view_of(lua_State *L) {
    lpnx_Tensor *a = lpnx_checklive(L, 1), *b = lpnx_checklive(L, 2);
    lua_pushboolean(L, a->storage == b->storage);
    return 1;
}

/* ---- views ----------------------------------------------------------- */

static int l_narrow(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim == 0) return luaL_argerror(L, 1, "cannot narrow a scalar tensor");
    int d = lpnx_checkdim(L, 2, t->ndim);
    int64_t start = lpnx_checkint(L, 3, "start"), len = lpnx_checkint(L, 4, "length");
    int64_t n = t->size[d];
    if (start < 0) start += n + 1;
    if (start < 1 || start > n + 1 || len < 0 || start - 1 + len > n)
        return luaL_error(L, "narrow: start %d and length %d out of range for dim %d of size %d",
                          (int)lpnx_checkint(L, 3, "start"), (int)len, d + 1, (int)n);
    lpnx_tensor_narrow(lpnx_pushview(L, t), d, start - 1, len);
    return 1;
}

static int l_select(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim == 0) return luaL_argerror(L, 1, "cannot select from a scalar tensor");
    int d = lpnx_checkdim(L, 2, t->ndim);
    int64_t i = checkindex(L, 3, lpnx_checkint(L, 3, "index"), t->size[d], d);
    lpnx_tensor_select(lpnx_pushview(L, t), d, i);
    return 1;
}

static int l_transpose(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim < 2 && lua_isnoneornil(L, 2)) return luaL_argerror(L, 1, "transpose needs a tensor of 2 or more dims");
    int d1 = lua_isnoneornil(L, 2) ? 0 : lpnx_checkdim(L, 2, t->ndim);
    int d2 = lua_isnoneornil(L, 3) ? 1 : lpnx_checkdim(L, 3, t->ndim);
    lpnx_tensor_transpose(lpnx_pushview(L, t), d1, d2);
    return 1;
}

static int l_t(lua_State *L) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim != 2) return luaL_argerror(L, 1, lua_pushfstring(L, "t() expects a 2-dim tensor, got %s", shapestr(t, s, sizeof s)));
    lpnx_tensor_transpose(lpnx_pushview(L, t), 0, 1);
    return 1;
}

static int l_permute(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    int perm[LPNX_MAXDIM], seen[LPNX_MAXDIM] = {0};
    int n, table = lua_istable(L, 2);
    n = table ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
    if (n != t->ndim) return luaL_error(L, "permute: expected %d dims, got %d", t->ndim, n);
    for (int i = 0; i < n; i++) {
        int arg = table ? lua_gettop(L) + 1 : i + 2;
        if (table) lua_geti(L, 2, i + 1);
        perm[i] = lpnx_checkdim(L, arg, t->ndim);
        if (table) lua_pop(L, 1);
        if (seen[perm[i]]++) return luaL_error(L, "permute: dim %d repeated", perm[i] + 1);
    }
    lpnx_tensor_permute(lpnx_pushview(L, t), perm);
    return 1;
}

/* Sizes for view/reshape with one -1 inferred. */
static int view_sizes(lua_State *L, const lpnx_Tensor *t, int64_t *size) {
    int ndim = 0, infer = -1;
    int table = lua_istable(L, 2);
    int n = table ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
    char s[160];
    if (n > LPNX_MAXDIM) luaL_error(L, "at most %d dims, got %d", LPNX_MAXDIM, n);
    for (int i = 0; i < n; i++) {
        int arg = table ? 2 : i + 2;
        if (table) lua_geti(L, 2, i + 1);
        else lua_pushvalue(L, i + 2);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || v < -1) luaL_argerror(L, arg, "sizes must be non-negative integers or one -1");
        if (v == -1) {
            if (infer >= 0) luaL_argerror(L, arg, "only one size can be -1");
            infer = ndim;
        }
        size[ndim++] = v;
    }
    size_t numel = lpnx_tensor_numel(t);
    if (infer >= 0) {
        size_t rest = 1;
        for (int d = 0; d < ndim; d++)
            if (d != infer) rest *= (size_t)size[d];
        if (rest == 0 || numel % rest != 0)
            luaL_error(L, "cannot view a %s tensor with an inferred size: %d elements", shapestr(t, s, sizeof s), (int)numel);
        size[infer] = (int64_t)(numel / rest);
    }
    size_t n2;
    if (lpnx_numel_of(ndim, size, &n2) != LPNX_OK || n2 != numel) {
        char s2[160];
        lpnx_shape_str(s2, sizeof s2, ndim, size);
        luaL_error(L, "cannot view a %s tensor (%d elements) as %s", shapestr(t, s, sizeof s), (int)numel, s2);
    }
    return ndim;
}

static int l_view(lua_State *L) {
    int64_t size[LPNX_MAXDIM];
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    int ndim = view_sizes(L, t, size);
    lpnx_Tensor *v = lpnx_pushview(L, t);
    if (lpnx_tensor_view(v, ndim, size) != LPNX_OK)
        return luaL_error(L, "view: the strides of this %s tensor do not allow it without a copy; "
                             "use :reshape() or :contiguous():view()", shapestr(t, s, sizeof s));
    return 1;
}

static int l_reshape(lua_State *L) {
    int64_t size[LPNX_MAXDIM];
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    int ndim = view_sizes(L, t, size);
    lpnx_Tensor *v = lpnx_pushview(L, t);
    if (lpnx_tensor_view(v, ndim, size) != LPNX_OK) {
        lpnx_Tensor *c = lpnx_pushcopy(L, t);
        lpnx_tensor_view(c, ndim, size); /* contiguous: cannot fail */
    }
    return 1;
}

static int l_contiguous(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (lpnx_tensor_is_contiguous(t)) lua_settop(L, 1);
    else lpnx_pushcopy(L, t);
    return 1;
}

static int l_clone(lua_State *L) {
    lpnx_pushcopy(L, lpnx_checklive(L, 1));
    return 1;
}

static int l_unsqueeze(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (t->ndim == LPNX_MAXDIM) return luaL_argerror(L, 1, "tensor already has the most dims");
    int d = lpnx_checkdim(L, 2, t->ndim + 1);
    lpnx_Tensor *v = lpnx_pushview(L, t);
    for (int k = v->ndim; k > d; k--) {
        v->size[k] = v->size[k - 1];
        v->stride[k] = v->stride[k - 1];
    }
    v->size[d] = 1;
    v->stride[d] = d < v->ndim ? v->size[d + 1] * v->stride[d + 1] : 1; /* PyTorch's choice */
    v->ndim++;
    return 1;
}

static int l_squeeze(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    int only = lua_isnoneornil(L, 2) ? -1 : lpnx_checkdim(L, 2, t->ndim);
    lpnx_Tensor *v = lpnx_pushview(L, t);
    int k = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (t->size[d] == 1 && (only < 0 || only == d)) continue;
        v->size[k] = t->size[d];
        v->stride[k] = t->stride[d];
        k++;
    }
    v->ndim = k;
    return 1;
}

static int l_expand(lua_State *L) {
    int64_t size[LPNX_MAXDIM];
    char s[160], s2[160];
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    int table = lua_istable(L, 2);
    int n = table ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
    if (n < t->ndim || n > LPNX_MAXDIM)
        return luaL_error(L, "expand: %d sizes for a %d-dim tensor", n, t->ndim);
    for (int i = 0; i < n; i++) {
        if (table) lua_geti(L, 2, i + 1);
        else lua_pushvalue(L, i + 2);
        size[i] = lpnx_checkint(L, -1, "size");
        lua_pop(L, 1);
    }
    lpnx_Tensor *v = lpnx_pushview(L, t);
    int shift = n - t->ndim;
    for (int i = n - 1; i >= 0; i--) {
        int src = i - shift;
        int64_t have = src >= 0 ? t->size[src] : 1, want = size[i] == -1 ? have : size[i];
        int64_t stride = src >= 0 ? t->stride[src] : 0;
        if (want < 0 || (have != want && have != 1)) {
            lpnx_shape_str(s2, sizeof s2, n, size);
            return luaL_error(L, "expand: cannot expand %s to %s", shapestr(t, s, sizeof s), s2);
        }
        v->size[i] = want;
        v->stride[i] = have == want ? stride : 0;
    }
    v->ndim = n;
    return 1;
}

/* ---- element access -------------------------------------------------- */

static float *element(lua_State *L, lpnx_Tensor *t, int first) {
    int n = lua_gettop(L) - first + 1;
    char s[160];
    if (n != t->ndim)
        luaL_error(L, "expected %d indices for a %s tensor, got %d", t->ndim, shapestr(t, s, sizeof s), n);
    size_t off = t->offset;
    for (int d = 0; d < t->ndim; d++)
        off += (size_t)(checkindex(L, first + d, lpnx_checkint(L, first + d, "index"), t->size[d], d) * t->stride[d]);
    return t->storage->data + off;
}

static int l_get(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    lua_pushnumber(L, *element(L, t, 2));
    return 1;
}

static int l_set(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    float v = checkfloat(L, 2);
    *element(L, t, 3) = v;
    lua_settop(L, 1);
    return 1;
}

static void push_nested(lua_State *L, const lpnx_Tensor *t, int d, size_t off) {
    if (d == t->ndim) {
        lua_pushnumber(L, t->storage->data[off]);
        return;
    }
    luaL_checkstack(L, 4, "tensor too deep");
    lua_createtable(L, (int)t->size[d], 0);
    for (int64_t i = 0; i < t->size[d]; i++) {
        push_nested(L, t, d + 1, off + (size_t)(i * t->stride[d]));
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_totable(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    push_nested(L, t, 0, t->offset);
    return 1;
}

/* Scalar value of a one-element tensor. */
static int l_item(lua_State *L) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (lpnx_tensor_numel(t) != 1)
        return luaL_error(L, "item: expected a tensor of one element, got %s", shapestr(t, s, sizeof s));
    float v;
    lpnx_tensor_gather(&v, t);
    lua_pushnumber(L, v);
    return 1;
}

static int copy_into(lua_State *L, lpnx_Tensor *dst, int src_arg);

/* t[i]: a view of row i, or the number itself for a 1-dim tensor. */
static int t_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lpnx_Tensor *t = lpnx_checklive(L, 1);
        if (t->ndim == 0) return luaL_error(L, "cannot index a scalar tensor");
        int64_t i = checkindex(L, 2, lpnx_checkint(L, 2, "index"), t->size[0], 0);
        if (t->ndim == 1) {
            lua_pushnumber(L, t->storage->data[t->offset + (size_t)(i * t->stride[0])]);
            return 1;
        }
        lpnx_tensor_select(lpnx_pushview(L, t), 0, i);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

/* t[i] = v: sets the number, or fills/copies row i. */
static int t_newindex(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER) return luaL_error(L, "tensors take only integer keys, got %s", luaL_typename(L, 2));
    if (t->ndim == 0) return luaL_error(L, "cannot index a scalar tensor");
    int64_t i = checkindex(L, 2, lpnx_checkint(L, 2, "index"), t->size[0], 0);
    lpnx_Tensor *row = lpnx_pushview(L, t);
    lpnx_tensor_select(row, 0, i);
    return copy_into(L, row, 3);
}

/* ---- broadcasting ---------------------------------------------------- */

/* Broadcast shape of a and b (numpy/PyTorch rule); raises when they clash. */
static int broadcast_shape(lua_State *L, const lpnx_Tensor *a, const lpnx_Tensor *b, int64_t *size) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    char s1[160], s2[160];
    for (int i = 0; i < n; i++) {
        int da = a->ndim - n + i, db = b->ndim - n + i;
        int64_t sa = da >= 0 ? a->size[da] : 1, sb = db >= 0 ? b->size[db] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            luaL_error(L, "shapes %s and %s cannot broadcast: dim %d is %d vs %d",
                       shapestr(a, s1, sizeof s1), shapestr(b, s2, sizeof s2), i + 1, (int)sa, (int)sb);
        size[i] = sa == 1 ? sb : sa;
    }
    return n;
}

/* Strides that read t as if it had shape (ndim, size). */
static lpnx_operand broadcast_operand(const lpnx_Tensor *t, int ndim, const int64_t *size) {
    lpnx_operand o;
    o.data = lpnx_tensor_data(t);
    for (int i = 0; i < LPNX_MAXDIM; i++) o.stride[i] = 0;
    for (int i = 0; i < ndim; i++) {
        int d = t->ndim - ndim + i;
        if (d >= 0 && t->size[d] == size[i] && size[i] != 1) o.stride[i] = t->stride[d];
    }
    return o;
}

/* Whether writes to t could land on one element twice (expanded views). */
static int has_overlap(const lpnx_Tensor *t) {
    for (int d = 0; d < t->ndim; d++)
        if (t->stride[d] == 0 && t->size[d] > 1) return 1;
    return 0;
}

/* An operand that is a number (value kept in *slot) or a tensor. */
static const lpnx_Tensor *operand_arg(lua_State *L, int arg, lpnx_Tensor *scalar, float *slot) {
    lpnx_Tensor *t = lpnx_testtensor(L, arg);
    if (t) {
        checklive(L, t, arg);
        return t;
    }
    if (lua_type(L, arg) != LUA_TNUMBER)
        luaL_argerror(L, arg, lua_pushfstring(L, "expected a tensor or a number, got %s", luaL_typename(L, arg)));
    *slot = (float)lua_tonumber(L, arg);
    static lpnx_Storage dummy; /* never retained or released */
    memset(scalar, 0, sizeof *scalar);
    scalar->storage = &dummy;
    scalar->ndim = 0;
    return scalar;
}

static lpnx_operand scalar_aware(const lpnx_Tensor *t, const lpnx_Tensor *scalar, float *slot,
                                 int ndim, const int64_t *size) {
    if (t == scalar) {
        lpnx_operand o;
        memset(&o, 0, sizeof o);
        o.data = slot;
        return o;
    }
    return broadcast_operand(t, ndim, size);
}

/* a op b into a new tensor; either side may be a number. */
static int binary_new(lua_State *L, int ia, int ib, lpnx_binop op) {
    lpnx_Tensor sa, sb;
    float va, vb;
    int64_t size[LPNX_MAXDIM];
    /* number op tensor: swap and use the reversed op */
    if (!lpnx_testtensor(L, ia) && lpnx_testtensor(L, ib)) {
        int t = ia;
        ia = ib;
        ib = t;
        switch (op) {
        case LPNX_OP_SUB: op = LPNX_OP_RSUB; break;
        case LPNX_OP_DIV: op = LPNX_OP_RDIV; break;
        case LPNX_OP_POW: op = LPNX_OP_RPOW; break;
        case LPNX_OP_LT: op = LPNX_OP_GT; break;
        case LPNX_OP_LE: op = LPNX_OP_GE; break;
        case LPNX_OP_GT: op = LPNX_OP_LT; break;
        case LPNX_OP_GE: op = LPNX_OP_LE; break;
        default: break;
        }
    }
    const lpnx_Tensor *a = operand_arg(L, ia, &sa, &va);
    if (a == &sa) return luaL_argerror(L, ia, "expected a tensor");
    const lpnx_Tensor *b = operand_arg(L, ib, &sb, &vb);
    int ndim = broadcast_shape(L, a, b, size);
    lpnx_Tensor *out = lpnx_pushnew(L, ndim, size, 0);
    if (lpnx_tensor_numel(out) == 0) return 1;
    lpnx_binary(lpnx_operand_of(out), broadcast_operand(a, ndim, size),
                scalar_aware(b, &sb, &vb, ndim, size), ndim, size, op);
    return 1;
}

/* self op= other in place: other broadcasts to self's shape. */
static int binary_inplace(lua_State *L, lpnx_binop op) {
    lpnx_Tensor *self = lpnx_checklive(L, 1);
    lpnx_Tensor sb;
    float vb;
    int64_t size[LPNX_MAXDIM];
    char s1[160], s2[160];
    const lpnx_Tensor *b = operand_arg(L, 2, &sb, &vb);
    if (has_overlap(self)) return luaL_error(L, "in-place op on an expanded tensor: several elements share memory");
    int ndim = broadcast_shape(L, self, b, size);
    if (ndim != self->ndim || memcmp(size, self->size, sizeof(int64_t) * (size_t)ndim) != 0)
        return luaL_error(L, "in-place op: %s does not broadcast to %s",
                          shapestr(b, s2, sizeof s2), shapestr(self, s1, sizeof s1));
    if (b != &sb && b->storage == self->storage &&
        (b->offset != self->offset || memcmp(b->stride, self->stride, sizeof(int64_t) * (size_t)b->ndim) != 0 ||
         b->ndim != self->ndim))
        b = lpnx_pushcopy(L, b); /* overlapping views: read from a snapshot */
    lua_pushvalue(L, 1);
    if (lpnx_tensor_numel(self) == 0) return 1;
    lpnx_operand o = lpnx_operand_of(self);
    lpnx_binary(o, o, scalar_aware(b, &sb, &vb, ndim, size), ndim, size, op);
    return 1;
}

/* Copies (broadcasting) or fills the value at src_arg into dst. */
static int copy_into(lua_State *L, lpnx_Tensor *dst, int src_arg) {
    char s1[160], s2[160];
    int64_t size[LPNX_MAXDIM];
    if (has_overlap(dst)) return luaL_error(L, "cannot write to an expanded tensor: several elements share memory");
    if (lua_type(L, src_arg) == LUA_TNUMBER) {
        if (lpnx_tensor_numel(dst))
            lpnx_fill(lpnx_operand_of(dst), dst->ndim, dst->size, (float)lua_tonumber(L, src_arg));
        return 0;
    }
    lpnx_Tensor *src = lpnx_testtensor(L, src_arg);
    if (!src) return luaL_argerror(L, src_arg, lua_pushfstring(L, "expected a tensor or a number, got %s", luaL_typename(L, src_arg)));
    checklive(L, src, src_arg);
    int ndim = broadcast_shape(L, dst, src, size);
    if (ndim != dst->ndim || memcmp(size, dst->size, sizeof(int64_t) * (size_t)ndim) != 0)
        return luaL_error(L, "copy: %s does not broadcast to %s", shapestr(src, s2, sizeof s2),
                          shapestr(dst, s1, sizeof s1));
    if (src->storage == dst->storage) src = lpnx_pushcopy(L, src);
    if (lpnx_tensor_numel(dst))
        lpnx_unary(lpnx_operand_of(dst), broadcast_operand(src, ndim, size), ndim, size, LPNX_OP_COPY);
    return 0;
}

static int l_copy_(lua_State *L) {
    copy_into(L, lpnx_checklive(L, 1), 2);
    lua_settop(L, 1);
    return 1;
}

static int l_fill_(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    luaL_checknumber(L, 2);
    copy_into(L, t, 2);
    lua_settop(L, 1);
    return 1;
}

static int l_zero_(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    lua_settop(L, 1);
    lua_pushnumber(L, 0);
    copy_into(L, t, 2);
    lua_settop(L, 1);
    return 1;
}

/* ---- arithmetic ------------------------------------------------------ */

static int mm_add(lua_State *L) { return binary_new(L, 1, 2, LPNX_OP_ADD); }
static int mm_sub(lua_State *L) { return binary_new(L, 1, 2, LPNX_OP_SUB); }
static int mm_mul(lua_State *L) { return binary_new(L, 1, 2, LPNX_OP_MUL); }
static int mm_div(lua_State *L) { return binary_new(L, 1, 2, LPNX_OP_DIV); }
static int mm_pow(lua_State *L) { return binary_new(L, 1, 2, LPNX_OP_POW); }

static int mm_unm(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    lpnx_Tensor *out = lpnx_pushnew(L, t->ndim, t->size, 0);
    if (lpnx_tensor_numel(t))
        lpnx_unary(lpnx_operand_of(out), lpnx_operand_of(t), t->ndim, t->size, LPNX_OP_NEG);
    return 1;
}

/* x:add(y [, alpha]) and x:sub(y [, alpha]): x + alpha*y as in PyTorch. */
static int scaled_other(lua_State *L) {
    if (lua_isnoneornil(L, 3)) return 0;
    float alpha = checkfloat(L, 3);
    lua_settop(L, 2);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_pushnumber(L, lua_tonumber(L, 2) * alpha);
    } else {
        lua_pushnumber(L, alpha);
        binary_new(L, 2, 3, LPNX_OP_MUL);
        lua_remove(L, 3);
    }
    lua_replace(L, 2);
    return 0;
}

static int l_add(lua_State *L) { lpnx_checklive(L, 1); scaled_other(L); return binary_new(L, 1, 2, LPNX_OP_ADD); }
static int l_sub(lua_State *L) { lpnx_checklive(L, 1); scaled_other(L); return binary_new(L, 1, 2, LPNX_OP_SUB); }
static int l_mul(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_MUL); }
static int l_div(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_DIV); }
static int l_pow(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_POW); }
static int l_maximum(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_MAX); }
static int l_minimum(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_MIN); }
static int l_eq(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_EQ); }
static int l_ne(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_NE); }
static int l_lt(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_LT); }
static int l_le(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_LE); }
static int l_gt(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_GT); }
static int l_ge(lua_State *L) { lpnx_checklive(L, 1); return binary_new(L, 1, 2, LPNX_OP_GE); }

static int l_add_(lua_State *L) { lpnx_checklive(L, 1); scaled_other(L); return binary_inplace(L, LPNX_OP_ADD); }
static int l_sub_(lua_State *L) { lpnx_checklive(L, 1); scaled_other(L); return binary_inplace(L, LPNX_OP_SUB); }
static int l_mul_(lua_State *L) { return binary_inplace(L, LPNX_OP_MUL); }
static int l_div_(lua_State *L) { return binary_inplace(L, LPNX_OP_DIV); }
static int l_pow_(lua_State *L) { return binary_inplace(L, LPNX_OP_POW); }

/* Where an elementwise op on t (at index 1) writes: t itself, in place
 * (not an expanded view), with the stack cut to it; or a new tensor of t's
 * shape pushed on the stack. */
static lpnx_Tensor *elementwise_out(lua_State *L, lpnx_Tensor *t, int inplace) {
    if (!inplace) return lpnx_pushnew(L, t->ndim, t->size, 0);
    if (has_overlap(t)) luaL_error(L, "in-place op on an expanded tensor: several elements share memory");
    lua_settop(L, 1);
    return t;
}

static int unary(lua_State *L, lpnx_unop op, int inplace) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    lpnx_Tensor *out = elementwise_out(L, t, inplace);
    if (lpnx_tensor_numel(t))
        lpnx_unary(lpnx_operand_of(out), lpnx_operand_of(t), t->ndim, t->size, op);
    return 1;
}

#define UNARY_PAIR(name, OP)                                          \
    static int u_##name(lua_State *L) { return unary(L, OP, 0); }     \
    static int u_##name##_(lua_State *L) { return unary(L, OP, 1); }
UNARY_PAIR(neg, LPNX_OP_NEG)
UNARY_PAIR(abs, LPNX_OP_ABS)
UNARY_PAIR(sqrt, LPNX_OP_SQRT)
UNARY_PAIR(exp, LPNX_OP_EXP)
UNARY_PAIR(log, LPNX_OP_LOG)
UNARY_PAIR(sigmoid, LPNX_OP_SIGMOID)
UNARY_PAIR(relu, LPNX_OP_RELU)
UNARY_PAIR(tanh, LPNX_OP_TANH)
UNARY_PAIR(floor, LPNX_OP_FLOOR)
UNARY_PAIR(ceil, LPNX_OP_CEIL)
UNARY_PAIR(round, LPNX_OP_ROUND)
UNARY_PAIR(sign, LPNX_OP_SIGN)

static int clamp(lua_State *L, int inplace) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    float lo = lua_isnoneornil(L, 2) ? -INFINITY : checkfloat(L, 2);
    float hi = lua_isnoneornil(L, 3) ? INFINITY : checkfloat(L, 3);
    if (lo > hi) return luaL_error(L, "clamp: min %f is above max %f", (double)lo, (double)hi);
    lpnx_Tensor *out = elementwise_out(L, t, inplace);
    if (lpnx_tensor_numel(t))
        lpnx_clamp(lpnx_operand_of(out), lpnx_operand_of(t), t->ndim, t->size, lo, hi);
    return 1;
}

static int l_clamp(lua_State *L) { return clamp(L, 0); }
static int l_clamp_(lua_State *L) { return clamp(L, 1); }

/* In-place random fills, Torch7 style: t:uniform_(a, b), t:normal_(m, s). */

typedef void (*rng_fill)(lpnx_rng *g, float *out, size_t n, float p1, float p2);

/* Fills t (at index 1) with fill(g, ..., p1, p2), drawn into a contiguous
 * buffer and scattered, so that strided views take the same draws. */
static int fill_random_(lua_State *L, lpnx_Tensor *t, lpnx_rng *g, rng_fill fill, float p1, float p2) {
    if (has_overlap(t)) return luaL_error(L, "in-place op on an expanded tensor: several elements share memory");
    lpnx_Tensor *c = lpnx_pushnew(L, t->ndim, t->size, 0);
    fill(g, lpnx_tensor_data(c), lpnx_tensor_numel(t), p1, p2);
    lpnx_tensor_scatter(t, lpnx_tensor_data(c));
    lua_settop(L, 1);
    return 1;
}

static int l_uniform_(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    float a = (float)luaL_optnumber(L, 2, 0), b = (float)luaL_optnumber(L, 3, 1);
    lpnx_rng *g = lpnx_optgenerator(L, 4);
    if (!(a <= b)) return luaL_error(L, "uniform_: empty range [%f, %f)", (double)a, (double)b);
    return fill_random_(L, t, g, lpnx_rng_fill_uniform, a, b);
}

static int l_normal_(lua_State *L) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    float m = (float)luaL_optnumber(L, 2, 0), s = (float)luaL_optnumber(L, 3, 1);
    lpnx_rng *g = lpnx_optgenerator(L, 4);
    if (!(s >= 0)) return luaL_error(L, "normal_: std must be non-negative, got %f", (double)s);
    return fill_random_(L, t, g, lpnx_rng_fill_normal, m, s);
}

/* ---- reductions ------------------------------------------------------ */

/* Splits t (contiguous) around dim d into (outer, n, inner) and pushes the
 * result tensor: d removed, or kept as size 1 with keepdim. */
static lpnx_Tensor *reduce_out(lua_State *L, const lpnx_Tensor *t, int d, int keepdim,
                               size_t *outer, size_t *n, size_t *inner) {
    int64_t size[LPNX_MAXDIM];
    int k = 0;
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (i < d) *outer *= (size_t)t->size[i];
        if (i > d) *inner *= (size_t)t->size[i];
        if (i != d) size[k++] = t->size[i];
        else if (keepdim) size[k++] = 1;
    }
    *n = (size_t)t->size[d];
    return lpnx_pushnew(L, k, size, 0);
}

static void check_nonempty(lua_State *L, const lpnx_Tensor *t, const char *what) {
    char s[160];
    if (lpnx_tensor_numel(t) == 0)
        luaL_error(L, "%s of an empty tensor (size %s)", what, shapestr(t, s, sizeof s));
}

static int reduce_sum_mean(lua_State *L, int mean) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lpnx_Tensor *c = lpnx_checkcontiguous(L, 1);
        size_t n = lpnx_tensor_numel(c);
        double s = lpnx_sum_all(lpnx_tensor_data(c), n);
        lua_pushnumber(L, mean ? (n ? s / (double)n : NAN) : s);
        return 1;
    }
    int d = lpnx_checkdim(L, 2, t->ndim);
    if (t->ndim == 0) return luaL_argerror(L, 2, "a scalar tensor has no dims");
    int keepdim = lua_toboolean(L, 3);
    lpnx_Tensor *c = lpnx_checkcontiguous(L, 1);
    size_t outer, n, inner;
    lpnx_Tensor *out = reduce_out(L, c, d, keepdim, &outer, &n, &inner);
    if (mean) lpnx_reduce_mean(lpnx_tensor_data(out), lpnx_tensor_data(c), outer, n, inner);
    else lpnx_reduce_sum(lpnx_tensor_data(out), lpnx_tensor_data(c), outer, n, inner);
    return 1;
}

static int l_sum(lua_State *L) { return reduce_sum_mean(L, 0); }
static int l_mean(lua_State *L) { return reduce_sum_mean(L, 1); }

/* max/min: a number, or (values, 1-based indices) along a dim.
 * argmax/argmin: the 1-based flat index, or indices along a dim. */
static int reduce_extreme(lua_State *L, int which, int want_values, int want_index) {
    lpnx_Tensor *t = lpnx_checklive(L, 1);
    check_nonempty(L, t, which > 0 ? "max" : "min");
    if (lua_isnoneornil(L, 2)) {
        lpnx_Tensor *c = lpnx_checkcontiguous(L, 1);
        float v;
        int64_t at;
        lpnx_reduce_extreme(&v, &at, lpnx_tensor_data(c), 1, lpnx_tensor_numel(c), 1, which);
        if (want_values) lua_pushnumber(L, v);
        if (want_index) lua_pushinteger(L, at + 1);
        return want_values + want_index;
    }
    if (t->ndim == 0) return luaL_argerror(L, 2, "a scalar tensor has no dims");
    int d = lpnx_checkdim(L, 2, t->ndim);
    int keepdim = lua_toboolean(L, 3);
    lpnx_Tensor *c = lpnx_checkcontiguous(L, 1);
    int base = lua_gettop(L);
    size_t outer, n, inner;
    lpnx_Tensor *values = reduce_out(L, c, d, keepdim, &outer, &n, &inner);
    lpnx_Tensor *index = lpnx_pushnew(L, values->ndim, values->size, 0);
    size_t m = outer * inner;
    int64_t *idx = malloc((m ? m : 1) * sizeof(int64_t));
    if (!idx) return luaL_error(L, "not enough memory for %d indices", (int)m);
    lpnx_reduce_extreme(lpnx_tensor_data(values), idx, lpnx_tensor_data(c), outer, n, inner, which);
    float *ip = lpnx_tensor_data(index);
    for (size_t i = 0; i < m; i++) ip[i] = (float)(idx[i] + 1);
    free(idx);
    if (!want_values) lua_remove(L, base + 1);
    if (!want_index) lua_pop(L, 1);
    return want_values + want_index;
}

static int l_max(lua_State *L) {
    if (lpnx_testtensor(L, 2)) return l_maximum(L);
    return reduce_extreme(L, 1, 1, !lua_isnoneornil(L, 2));
}
static int l_min(lua_State *L) {
    if (lpnx_testtensor(L, 2)) return l_minimum(L);
    return reduce_extreme(L, -1, 1, !lua_isnoneornil(L, 2));
}
static int l_argmax(lua_State *L) { return reduce_extreme(L, 1, 0, 1); }
static int l_argmin(lua_State *L) { return reduce_extreme(L, -1, 0, 1); }

/* ---- matmul ---------------------------------------------------------- */

/* A 2-dim (rows, cols) operand usable by gemm as is, or NULL. */
static int gemm_layout(const float *base, int64_t rows, int64_t cols, int64_t s0, int64_t s1,
                       int *trans, int *ld) {
    (void)base;
    if (s1 == 1 && (rows == 1 || s0 >= (cols > 1 ? cols : 1))) {
        *trans = 0;
        *ld = (int)(rows == 1 ? (cols > 1 ? cols : 1) : s0);
        return 1;
    }
    if (s0 == 1 && (cols == 1 || s1 >= (rows > 1 ? rows : 1))) {
        *trans = 1;
        *ld = (int)(cols == 1 ? (rows > 1 ? rows : 1) : s1);
        return 1;
    }
    return 0;
}

/* Copies the (B, rows, cols) view of t's storage with strides s0, s1, s2
 * into a new contiguous tensor pushed on the stack; returns its data. */
static float *pushgathered(lua_State *L, const lpnx_Tensor *t, int64_t B, int64_t rows, int64_t cols,
                           int64_t s0, int64_t s1, int64_t s2) {
    int64_t size[3] = {B, rows, cols};
    lpnx_Tensor view = *t;
    view.ndim = 3;
    for (int d = 0; d < 3; d++) view.size[d] = size[d];
    view.stride[0] = s0;
    view.stride[1] = s1;
    view.stride[2] = s2;
    lpnx_Tensor *c = lpnx_pushnew(L, 3, size, 0);
    lpnx_tensor_gather(lpnx_tensor_data(c), &view);
    return lpnx_tensor_data(c);
}

/* Batched gemm over views: a (B, M, K), b (B, K, N) (batch stride 0 for a
 * shared matrix), out contiguous (B, M, N). */
static void batched_gemm(lua_State *L, lpnx_Tensor *out, const lpnx_Tensor *a, const lpnx_Tensor *b,
                         int64_t B, int64_t M, int64_t N, int64_t K,
                         int64_t as0, int64_t as1, int64_t as2, int64_t bs0, int64_t bs1, int64_t bs2) {
    int ta, tb, lda, ldb;
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff) luaL_error(L, "matmul: matrix too large for BLAS");
    float *pa = lpnx_tensor_data(a), *pb = lpnx_tensor_data(b), *po = lpnx_tensor_data(out);
    int oka = gemm_layout(pa, M, K, as1, as2, &ta, &lda);
    int okb = gemm_layout(pb, K, N, bs1, bs2, &tb, &ldb);
    if (M * N == 0) return;
    if (K == 0) {
        memset(po, 0, (size_t)(B * M * N) * sizeof(float));
        return;
    }
    /* operands gemm cannot take as they are get a contiguous copy */
    if (!oka) {
        pa = pushgathered(L, a, B, M, K, as0, as1, as2);
        as0 = M * K;
        ta = 0;
        lda = (int)K;
    }
    if (!okb) {
        pb = pushgathered(L, b, B, K, N, bs0, bs1, bs2);
        bs0 = K * N;
        tb = 0;
        ldb = (int)N;
    }
    for (int64_t i = 0; i < B; i++)
        lpnx_gemm_blocks(ta, tb, (int)M, (int)N, (int)K, 1.0f, pa + i * as0, lda, pb + i * bs0, ldb, 0.0f,
                  po + i * M * N, (int)N);
}

static int l_matmul(lua_State *L) {
    lpnx_Tensor *a = lpnx_checklive(L, 1), *b = lpnx_checklive(L, 2);
    char s1[160], s2[160];
    int na = a->ndim, nb = b->ndim;
    if (na < 1 || nb < 1 || na > 3 || nb > 3)
        return luaL_error(L, "matmul: expected 1-, 2- or 3-dim tensors, got %s and %s",
                          shapestr(a, s1, sizeof s1), shapestr(b, s2, sizeof s2));
    /* Normalise both to (B, rows, cols) with strides. */
    int64_t Ba = na == 3 ? a->size[0] : 1, Bb = nb == 3 ? b->size[0] : 1;
    int64_t M = na == 1 ? 1 : a->size[na - 2], K = a->size[na - 1];
    int64_t K2 = nb == 1 ? b->size[0] : b->size[nb - 2], N = nb == 1 ? 1 : b->size[nb - 1];
    int64_t as0 = na == 3 ? a->stride[0] : 0, as1 = na == 1 ? 0 : a->stride[na - 2], as2 = a->stride[na - 1];
    int64_t bs0 = nb == 3 ? b->stride[0] : 0, bs1 = nb == 1 ? b->stride[0] : b->stride[nb - 2];
    int64_t bs2 = nb == 1 ? 1 : b->stride[nb - 1];
    if (na == 1) as1 = K * as2 > 0 ? K * as2 : 1;
    if (nb == 1) bs2 = 1;
    if (K != K2 || (Ba != Bb && Ba != 1 && Bb != 1))
        return luaL_error(L, "matmul: shapes %s and %s do not match (inner sizes %d and %d)",
                          shapestr(a, s1, sizeof s1), shapestr(b, s2, sizeof s2), (int)K, (int)K2);
    int64_t B = Ba > Bb ? Ba : Bb;
    if (Ba == 1) as0 = 0;
    if (Bb == 1) bs0 = 0;
    if (na == 1 && nb == 1) { /* dot product */
        double s = 0;
        float *pa = lpnx_tensor_data(a), *pb = lpnx_tensor_data(b);
        for (int64_t k = 0; k < K; k++) s += (double)pa[k * as2] * pb[k * b->stride[0]];
        lua_pushnumber(L, s);
        return 1;
    }
    int64_t size[3];
    int nd = 0;
    if (na == 3 || nb == 3) size[nd++] = B;
    if (na > 1) size[nd++] = M;
    if (nb > 1) size[nd++] = N;
    lpnx_Tensor *out = lpnx_pushnew(L, nd, size, 0);
    int top = lua_gettop(L);
    batched_gemm(L, out, a, b, B, M, N, K, as0, as1, as2, bs0, bs1, bs2);
    lua_settop(L, top);
    return 1;
}

/* ---- cat ------------------------------------------------------------- */

/* lpnx.cat(list [, dim [, out]]): the tensors of list joined along dim
 * (default 1), into out when it is given (a tensor of exactly the joined
 * shape, any layout, sharing no memory with the inputs; it is returned),
 * else into a new tensor. */
static int l_cat(lua_State *L) {
    char s1[160], s2[160];
    lua_settop(L, 3);
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    if (n == 0) return luaL_argerror(L, 1, "expected a non-empty list of tensors");
    lua_geti(L, 1, 1);
    lpnx_Tensor *first = lpnx_testtensor(L, -1);
    if (!first) return luaL_argerror(L, 1, "element 1 is not a tensor");
    checklive(L, first, 1);
    lua_pop(L, 1);
    if (first->ndim == 0) return luaL_argerror(L, 1, "cannot cat scalar tensors");
    int d = lua_isnoneornil(L, 2) ? 0 : lpnx_checkdim(L, 2, first->ndim);
    int64_t size[LPNX_MAXDIM];
    memcpy(size, first->size, sizeof size);
    size[d] = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        lpnx_Tensor *t = lpnx_testtensor(L, -1);
        if (!t) return luaL_argerror(L, 1, lua_pushfstring(L, "element %d is not a tensor", i));
        checklive(L, t, 1);
        int same = t->ndim == first->ndim;
        for (int k = 0; same && k < t->ndim; k++)
            if (k != d && t->size[k] != first->size[k]) same = 0;
        if (!same)
            return luaL_error(L, "cat: tensor %d is %s, expected %s apart from dim %d", i,
                              shapestr(t, s1, sizeof s1), shapestr(first, s2, sizeof s2), d + 1);
        size[d] += t->size[d];
        lua_pop(L, 1);
    }
    lpnx_Tensor *out;
    if (lua_isnil(L, 3)) {
        out = lpnx_pushnew(L, first->ndim, size, 0);
    } else {
        out = lpnx_checklive(L, 3);
        int same = out->ndim == first->ndim;
        for (int k = 0; same && k < out->ndim; k++) same = out->size[k] == size[k];
        if (!same) {
            lpnx_shape_str(s1, sizeof s1, first->ndim, size);
            return luaL_argerror(L, 3, lua_pushfstring(L, "expected out %s to hold the joined tensors, got %s", s1,
                                                       shapestr(out, s2, sizeof s2)));
        }
        if (has_overlap(out))
            return luaL_argerror(L, 3, "out is an expanded tensor: several elements share memory");
        for (int i = 1; i <= n; i++) {
            lua_geti(L, 1, i);
            int clash = lpnx_overlaps(out, lpnx_testtensor(L, -1));
            lua_pop(L, 1);
            if (clash)
                return luaL_argerror(L, 3, lua_pushfstring(L, "out must not share memory with tensor %d of the list", i));
        }
        lua_pushvalue(L, 3);
    }
    int64_t at = 0;
    for (int i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        lpnx_Tensor *t = lpnx_testtensor(L, -1);
        lpnx_Tensor part = *out;
        lpnx_tensor_narrow(&part, d, at, t->size[d]);
        if (lpnx_tensor_numel(t))
            lpnx_unary(lpnx_operand_of(&part), lpnx_operand_of(t), t->ndim, t->size, LPNX_OP_COPY);
        at += t->size[d];
        lua_pop(L, 1);
    }
    return 1;
}

/* ---- misc ------------------------------------------------------------ */

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, lpnx_testtensor(L, 1) != NULL);
    return 1;
}

static int l_set_num_threads(lua_State *L) {
    int64_t n = lpnx_checkint(L, 1, "thread count");
    if (n < 1 || n > 1024) return luaL_argerror(L, 1, "thread count must be in 1..1024");
    lpnx_set_num_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, lpnx_get_num_threads());
    return 1;
}

/* lpnx.memory_stats() -> {allocated_bytes, cached_bytes, peak_bytes,
 * cache_limit, allocations, reuses}: the storage allocator's counters
 * (tensor.h). allocations counts blocks obtained from the system, reuses
 * the blocks taken back from the cache of freed ones. */
static int l_memory_stats(lua_State *L) {
    lpnx_memory_stats st;
    lpnx_memory_get_stats(&st);
    const struct {
        const char *name;
        uint64_t value;
    } fields[] = {{"allocated_bytes", st.allocated_bytes}, {"cached_bytes", st.cached_bytes},
                  {"peak_bytes", st.peak_bytes},           {"cache_limit", st.cache_limit},
                  {"allocations", st.allocations},         {"reuses", st.reuses}};
    lua_createtable(L, 0, (int)(sizeof fields / sizeof fields[0]));
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_pushinteger(L, (lua_Integer)fields[i].value);
        lua_setfield(L, -2, fields[i].name);
    }
    return 1;
}

/* lpnx.empty_cache() -> bytes: gives every cached block back to the system. */
static int l_empty_cache(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lpnx_memory_empty_cache());
    return 1;
}

/* lpnx.set_cache_limit(bytes): bounds the cache of freed blocks (0 turns
 * it off); blocks above the new bound are freed now. */
static int l_set_cache_limit(lua_State *L) {
    int64_t bytes = lpnx_checkint(L, 1, "cache limit");
    if (bytes < 0) return luaL_argerror(L, 1, lua_pushfstring(L, "cache limit must be >= 0 bytes, got %I",
                                                               (lua_Integer)bytes));
    lpnx_memory_set_cache_limit((size_t)bytes);
    return 0;
}

static const luaL_Reg methods[] = {
    {"size", l_size}, {"stride", l_stride}, {"dim", l_dim}, {"numel", l_numel},
    {"is_contiguous", l_is_contiguous}, {"is_view_of", l_is_view_of},
    {"narrow", l_narrow}, {"select", l_select}, {"transpose", l_transpose}, {"t", l_t},
    {"permute", l_permute}, {"view", l_view}, {"reshape", l_reshape},
    {"contiguous", l_contiguous}, {"clone", l_clone}, {"unsqueeze", l_unsqueeze},
    {"squeeze", l_squeeze}, {"expand", l_expand},
    {"get", l_get}, {"set", l_set}, {"totable", l_totable}, {"item", l_item},
    {"copy_", l_copy_}, {"fill_", l_fill_}, {"zero_", l_zero_},
    {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"pow", l_pow},
    {"add_", l_add_}, {"sub_", l_sub_}, {"mul_", l_mul_}, {"div_", l_div_}, {"pow_", l_pow_},
    {"maximum", l_maximum}, {"minimum", l_minimum},
    {"eq", l_eq}, {"ne", l_ne}, {"lt", l_lt}, {"le", l_le}, {"gt", l_gt}, {"ge", l_ge},
    {"neg", u_neg}, {"neg_", u_neg_}, {"abs", u_abs}, {"abs_", u_abs_},
    {"sqrt", u_sqrt}, {"sqrt_", u_sqrt_}, {"exp", u_exp}, {"exp_", u_exp_},
    {"log", u_log}, {"log_", u_log_}, {"sigmoid", u_sigmoid}, {"sigmoid_", u_sigmoid_},
    {"relu", u_relu}, {"relu_", u_relu_}, {"tanh", u_tanh}, {"tanh_", u_tanh_},
    {"floor", u_floor}, {"floor_", u_floor_}, {"ceil", u_ceil}, {"ceil_", u_ceil_},
    {"round", u_round}, {"round_", u_round_}, {"sign", u_sign}, {"sign_", u_sign_},
    {"clamp", l_clamp}, {"clamp_", l_clamp_},
    {"uniform_", l_uniform_}, {"normal_", l_normal_},
    {"sum", l_sum}, {"mean", l_mean}, {"max", l_max}, {"min", l_min},
    {"argmax", l_argmax}, {"argmin", l_argmin},
    {NULL, NULL}};

static const luaL_Reg metamethods[] = {
    {"__gc", t_gc}, {"__close", t_gc}, {"__len", l_len},
    {"__newindex", t_newindex}, {"__add", mm_add}, {"__sub", mm_sub}, {"__mul", mm_mul},
    {"__div", mm_div}, {"__pow", mm_pow}, {"__unm", mm_unm},
    {NULL, NULL}};

static const luaL_Reg functions[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"empty", l_empty},
    {"full", l_full}, {"rand", l_rand}, {"randn", l_randn}, {"arange", l_arange},
    {"matmul", l_matmul}, {"cat", l_cat}, {"is_tensor", l_is_tensor},
    {"memory_stats", l_memory_stats}, {"empty_cache", l_empty_cache},
    {"set_cache_limit", l_set_cache_limit},
    {"set_num_threads", l_set_num_threads}, {"get_num_threads", l_get_num_threads},
    {NULL, NULL}};

/* Registers the lpnx.Tensor metatable and adds the tensor functions to the
 * module table on top of the stack. The methods table is also exported as
 * Tensor so Lua code can add methods written in Lua. */
void lpnx_open_tensor(lua_State *L) {
    luaL_newmetatable(L, LPNX_TENSOR_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "Tensor");
    lua_pushcclosure(L, t_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, -2, "_Tensor_mt");
    luaL_setfuncs(L, functions, 0);
}
