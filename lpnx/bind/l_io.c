/* lpnx.save / lpnx.load: safetensors files. The file image and its parsed
 * index live in Lua-owned holders, so a Lua error halfway (say, out of
 * memory for one tensor) frees them through the collector. */
#include <string.h>

#include "../io/safetensors.h"
#include "bind.h"

#define HOLDER_MT "lpnx.SafetensorsHolder"

typedef struct {
    lpnx_st_file file; /* the parsed index, owned; its data points into the file's bytes */
} holder;

static int holder_gc(lua_State *L) {
    holder *h = luaL_checkudata(L, 1, HOLDER_MT);
    lpnx_st_free(&h->file);
    return 0;
}

/* load(path) -> {name = tensor}, {meta key = string}, {names in file order} */
static int l_load(lua_State *L) {
    char err[512];
    const char *path = luaL_checkstring(L, 1);
    lpnx_file_bytes *fb = lpnx_pushfile(L, path, "lpnx.load");
    holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, HOLDER_MT);
    if (lpnx_st_parse(&h->file, fb->bytes, fb->len, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.load: %s: %s", path, err);
    const lpnx_st_file *f = &h->file;
    lua_createtable(L, 0, (int)f->n_entries);
    lua_createtable(L, 0, (int)f->n_meta);
    lua_createtable(L, (int)f->n_entries, 0);
    int tensors = lua_gettop(L) - 2, meta = tensors + 1, names = tensors + 2;
    for (size_t i = 0; i < f->n_entries; i++) {
        const lpnx_st_entry *e = &f->entries[i];
        lpnx_Tensor *t = lpnx_pushnew(L, e->ndim, e->shape, 0);
        if (lpnx_tensor_numel(t) > 0) lpnx_st_to_f32(lpnx_tensor_data(t), f, e);
        lua_setfield(L, tensors, e->name);
        lua_pushstring(L, e->name);
        lua_rawseti(L, names, (lua_Integer)i + 1);
    }
    for (size_t i = 0; i < f->n_meta; i++) {
        lua_pushstring(L, f->meta[i].value);
        lua_setfield(L, meta, f->meta[i].key);
    }
    lpnx_st_free(&h->file); /* done early; the collector would do it too */
    lpnx_freefile(fb);
    return 3;
}

/* save(path, {name = tensor}, [meta]): meta values are strings, numbers or
 * booleans (stored as their string form). */
static int l_save(lua_State *L) {
    char err[512];
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    size_t n = 0, n_meta = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_argerror(L, 2, lua_pushfstring(L, "tensor names must be strings, got a %s key", luaL_typename(L, -2)));
        lpnx_Tensor *t = lpnx_testtensor(L, -1);
        if (!t || !t->storage)
            return luaL_argerror(L, 2, lua_pushfstring(L, "'%s' is a %s, expected a tensor", lua_tostring(L, -2), luaL_typename(L, -1)));
        n++;
        lua_pop(L, 1);
    }
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            int vt = lua_type(L, -1);
            if (lua_type(L, -2) != LUA_TSTRING)
                return luaL_argerror(L, 3, "metadata keys must be strings");
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)
                return luaL_argerror(L, 3, lua_pushfstring(L, "metadata '%s' is a %s, expected a string or number", lua_tostring(L, -2), luaL_typename(L, -1)));
            n_meta++;
            lua_pop(L, 1);
        }
    }
    /* Arrays in Lua-owned memory; contiguous copies and meta strings are
     * kept alive in the anchor table at index 4. */
    lpnx_st_out *outs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *outs, 0);
    const char **mk = lua_newuserdatauv(L, (n_meta ? n_meta : 1) * sizeof *mk, 0);
    const char **mv = lua_newuserdatauv(L, (n_meta ? n_meta : 1) * sizeof *mv, 0);
    lua_newtable(L);
    int anchor = lua_gettop(L);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lpnx_Tensor *t = lpnx_testtensor(L, -1);
        if (!lpnx_tensor_is_contiguous(t)) {
            lpnx_Tensor *c = lpnx_pushnew(L, t->ndim, t->size, 0);
            lpnx_tensor_gather(lpnx_tensor_data(c), t);
            t = c;
            lua_rawseti(L, anchor, (lua_Integer)i + 1);
        }
        outs[i].name = lua_tostring(L, -2); /* key strings are anchored by the table */
        outs[i].data = lpnx_tensor_data(t);
        outs[i].ndim = t->ndim;
        for (int d = 0; d < LPNX_ST_MAXDIM; d++) outs[i].shape[d] = d < t->ndim ? t->size[d] : 0;
        i++;
        lua_pop(L, 1);
    }
    i = 0;
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            mk[i] = lua_tostring(L, -2);
            lua_pushvalue(L, -1);
            mv[i] = luaL_tolstring(L, -1, NULL); /* converts a copy, leaves the key alone */
            lua_rawseti(L, anchor, -(lua_Integer)i - 1);
            lua_pop(L, 2);
            i++;
        }
    }
    /* metadata in key order, so equal inputs give byte-identical files */
    for (size_t a = 1; a < n_meta; a++)
        for (size_t b = a; b > 0 && strcmp(mk[b - 1], mk[b]) > 0; b--) {
            const char *tk = mk[b], *tv = mv[b];
            mk[b] = mk[b - 1];
            mv[b] = mv[b - 1];
            mk[b - 1] = tk;
            mv[b - 1] = tv;
        }
    if (lpnx_st_write(path, outs, n, mk, mv, n_meta, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.save: %s", err);
    return 0;
}

static const luaL_Reg functions[] = {{"load", l_load}, {"save", l_save}, {NULL, NULL}};

void lpnx_open_io(lua_State *L) {
    lpnx_gcmeta(L, HOLDER_MT, holder_gc);
    luaL_setfuncs(L, functions, 0);
}
