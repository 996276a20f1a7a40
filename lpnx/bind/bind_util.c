/* Helpers the bindings share: a whole file read into a Lua-owned holder,
 * so that a Lua error raised while it is decoded (out of memory for a
 * tensor, a bad value) frees it through the collector; the check of an
 * options table's keys. */
#include <stdlib.h>
#include <string.h>

#include "../io/file.h"
#include "../ref/ref_table.h"
#include "bind.h"

#define FILE_BYTES_MT "lpnx.FileBytes"

static int file_bytes_gc(lua_State *L) {
    lpnx_freefile(luaL_checkudata(L, 1, FILE_BYTES_MT));
    return 0;
}

lpnx_file_bytes *lpnx_pushfile(lua_State *L, const char *path, const char *where) {
    char err[512];
    lpnx_file_bytes *fb = lua_newuserdatauv(L, sizeof *fb, 0);
    fb->bytes = NULL;
    fb->len = 0;
    lpnx_gcmeta(L, FILE_BYTES_MT, file_bytes_gc);
    luaL_setmetatable(L, FILE_BYTES_MT);
    if (lpnx_file_read(path, &fb->bytes, &fb->len, err, sizeof err) != 0)
        luaL_error(L, "%s: %s", where, err);
    return fb;
}

void lpnx_freefile(lpnx_file_bytes *fb) {
    free(fb->bytes);
    fb->bytes = NULL;
}

void lpnx_checkkeys(lua_State *L, int arg, const char *const *keys) {
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *k = keys; *k && !known; k++) known = strcmp(*k, lua_tostring(L, -1)) == 0;
        if (!known) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *const *k = keys; *k; k++) {
                if (k != keys) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *k);
            }
            luaL_pushresult(&b);
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2);
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s' (expected one of %s)", key,
                                                  lua_tostring(L, -1)));
        }
    }
}

const char *lpnx_shape_of(char *buf, size_t len, const lpnx_Tensor *t) {
    size_t used = 0;
    if (len == 0) return buf;
    if (t->ndim == 0) {
        snprintf(buf, len, "scalar");
        return buf;
    }
    buf[0] = '\0';
    for (int d = 0; d < t->ndim && used < len; d++) {
        int n = snprintf(buf + used, len - used, "%s%lld%s", d ? "," : "(", (long long)t->size[d],
                         d == t->ndim - 1 ? ")" : "");
        if (n < 0) break;
        used += (size_t)n;
    }
    return buf;
}

/* Floats from t's offset to one past its last element (0 when empty). */
static size_t extent(const lpnx_Tensor *t) {
    size_t last = 0;
    if (lpnx_tensor_numel(t) == 0) return 0;
    for (int d = 0; d < t->ndim; d++) last += (size_t)(t->size[d] - 1) * (size_t)t->stride[d];
    return last + 1;
}

int lpnx_overlaps(const lpnx_Tensor *a, const lpnx_Tensor *b) {
    if (!a || !b || !a->storage || a->storage != b->storage) return 0;
    size_t na = extent(a), nb = extent(b);
    return na && nb && a->offset < b->offset + nb && b->offset < a->offset + na;
}

void lpnx_setfuncs(lua_State *L, int idx, const luaL_Reg *reg) {
    lua_pushvalue(L, idx);
    luaL_setfuncs(L, reg, 0);
    lua_pop(L, 1);
}

const lpnx_ref_table *lpnx_oracles(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, LPNX_REF_TABLE_KEY);
    const lpnx_ref_table *t = lua_islightuserdata(L, -1) ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    if (!t) luaL_error(L, "lpnx.ref: the oracles are not loaded (require \"lpnx.ref\" first)");
    if (t->version != LPNX_REF_TABLE_VERSION)
        luaL_error(L, "lpnx.ref: lpnx/ref.so does not match lpnx/core.so (rebuild both with make)");
    return t;
}

void lpnx_gcmeta(lua_State *L, const char *name, lua_CFunction gc) {
    if (luaL_newmetatable(L, name)) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
