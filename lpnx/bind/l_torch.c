/* lpnx._torch_tree(path): a PyTorch zip checkpoint's object as Lua data,
 * for lpnx.load_torch (lua/lpnx/torch.lua), which flattens it. The
 * checkpoint lives in a Lua-owned holder, so an error halfway (a damaged
 * storage, out of memory) frees it through the collector.
 *
 *   dict        -> {kind = "dict", n = N, keys = {...}, values = {...}}
 *   tuple, list -> {kind = "list", n = N, items = {...}}
 *   tensor      -> an lpnx tensor (float32, contiguous, the view's values)
 *   str, bytes  -> string; int -> integer; float -> number; bool -> boolean
 *   None        -> nil (n keeps the count)
 *   a storage or an allowed global as a value -> {kind = "torch", name = "..."} */
#include <string.h>

#include "../io/torch_ckpt.h"
#include "bind.h"

#define CKPT_MT "lpnx.TorchCheckpoint"
#define MAX_DEPTH 100

typedef struct {
    lpnx_torch_ckpt *c;
} ckpt_holder;

static int ckpt_gc(lua_State *L) {
    ckpt_holder *h = luaL_checkudata(L, 1, CKPT_MT);
    lpnx_torch_close(h->c);
    h->c = NULL;
    return 0;
}

static void push_value(lua_State *L, ckpt_holder *h, const lpnx_pk_value *v, int depth, const char *path);

static void push_items(lua_State *L, ckpt_holder *h, lpnx_pk_value *const *items, size_t n, int depth,
                       const char *path) {
    lua_createtable(L, n > 0x7fffffff ? 0 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_value(L, h, items[i], depth + 1, path);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static void push_value(lua_State *L, ckpt_holder *h, const lpnx_pk_value *v, int depth, const char *path) {
    char err[1024];
    if (depth > MAX_DEPTH)
    {
        lua_pushfstring(L, "lpnx.load_torch: %s: containers nested more than %d deep", path, MAX_DEPTH);
        lua_error(L);
    }
    luaL_checkstack(L, 6, "lpnx.load_torch: nesting");
    switch (v->kind) {
    case LPNX_PK_NONE:
        lua_pushnil(L);
        break;
    case LPNX_PK_BOOL:
        lua_pushboolean(L, v->u.b);
        break;
    case LPNX_PK_INT:
        lua_pushinteger(L, (lua_Integer)v->u.i);
        break;
    case LPNX_PK_FLOAT:
        lua_pushnumber(L, (lua_Number)v->u.f);
        break;
    case LPNX_PK_STR:
    case LPNX_PK_BYTES:
        lua_pushlstring(L, v->u.str.s, v->u.str.len);
        break;
    case LPNX_PK_TUPLE:
    case LPNX_PK_LIST:
        lua_createtable(L, 0, 3);
        lua_pushliteral(L, "list");
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, (lua_Integer)v->u.seq.n);
        lua_setfield(L, -2, "n");
        push_items(L, h, v->u.seq.items, v->u.seq.n, depth, path);
        lua_setfield(L, -2, "items");
        break;
    case LPNX_PK_DICT: {
        size_t n = v->u.seq.n / 2;
        lua_createtable(L, 0, 4);
        lua_pushliteral(L, "dict");
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, (lua_Integer)n);
        lua_setfield(L, -2, "n");
        lua_createtable(L, (int)(n > 0x7fffffff ? 0 : n), 0);
        lua_createtable(L, (int)(n > 0x7fffffff ? 0 : n), 0);
        for (size_t i = 0; i < n; i++) {
            push_value(L, h, v->u.seq.items[2 * i], depth + 1, path);
            lua_rawseti(L, -3, (lua_Integer)i + 1);
            push_value(L, h, v->u.seq.items[2 * i + 1], depth + 1, path);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -3, "values");
        lua_setfield(L, -2, "keys");
        break;
    }
    case LPNX_PK_TENSOR: {
        lpnx_Tensor *t = lpnx_pushnew(L, v->u.tensor.ndim, v->u.tensor.size, 0);
        if (lpnx_tensor_numel(t) > 0 &&
            lpnx_torch_tensor_f32(h->c, v, lpnx_tensor_data(t), err, sizeof err) != 0) {
            lua_pushfstring(L, "lpnx.load_torch: %s", err);
            lua_error(L);
        }
        break;
    }
    case LPNX_PK_STORAGE:
    case LPNX_PK_GLOBAL:
        lua_createtable(L, 0, 2);
        lua_pushliteral(L, "torch");
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, v->kind == LPNX_PK_STORAGE ? "storage" : "global");
        lua_setfield(L, -2, "name");
        break;
    }
}

/* _torch_tree(path) -> the object */
static int l_torch_tree(lua_State *L) {
    char err[1024];
    const char *path = luaL_checkstring(L, 1);
    ckpt_holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->c = NULL;
    luaL_setmetatable(L, CKPT_MT);
    h->c = lpnx_torch_open(path, err, sizeof err);
    if (h->c == NULL) {
        lua_pushfstring(L, "lpnx.load_torch: %s", err);
        return lua_error(L); /* the message names the file; no position of lpnx's own Lua */
    }
    push_value(L, h, lpnx_torch_root(h->c), 0, path);
    lpnx_torch_close(h->c); /* done early; the collector would do it too */
    h->c = NULL;
    return 1;
}

static const luaL_Reg functions[] = {{"_torch_tree", l_torch_tree}, {NULL, NULL}};

void lpnx_open_torch(lua_State *L) {
    lpnx_gcmeta(L, CKPT_MT, ckpt_gc);
    luaL_setfuncs(L, functions, 0);
}
