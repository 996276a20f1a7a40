/* lpnx.mpi: the Lua binding of comm.h, a module of its own (built where
 * MPI is installed) so that lpnx.core never depends on MPI. lpnx.dist
 * (lua/lpnx/dist.lua) is the interface users see.
 *
 *   init()                      rank() -> r (0-based)      size() -> n
 *   local_size() -> n           barrier()                  finalize()
 *   active() -> bool            abort(code)
 *   allreduce(t, op)            op "sum" or "mean", t a contiguous tensor, in place
 *   allreduce_list(list, op, bucket_floats)   tensors bucketed into few calls
 *   allreduce_numbers(tbl, op) -> tbl          a table of numbers, in double
 *   broadcast(t, root)          root's t into every process's t, in place
 *
 * Tensors are lpnx.core's userdata (lpnx.Tensor): checked by metatable and
 * read through tensor.h's struct; nothing here allocates or frees them. */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor.h"
#include "comm.h"

int luaopen_lpnx_mpi(lua_State *L);

/* Raises "lpnx.dist.what: <MPI's text>" unless rc is success (0). */
static void check(lua_State *L, int rc, const char *what) {
    if (rc != 0) luaL_error(L, "lpnx.dist.%s: %s", what, lpnx_comm_error(rc));
}

static void need_active(lua_State *L, const char *what) {
    if (!lpnx_comm_active())
        luaL_error(L, "lpnx.dist.%s: MPI is not initialised (call lpnx.dist.init() first)", what);
}

/* The elements of t when it is contiguous; raises otherwise. */
static float *checkdata(lua_State *L, int arg, size_t *n, const char *what) {
    const lpnx_Tensor *t = luaL_checkudata(L, arg, "lpnx.Tensor");
    if (!t->storage) luaL_argerror(L, arg, "the tensor has been freed");
    size_t count = 1;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != expect)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s works in place: expected a contiguous tensor", what));
        expect *= t->size[d];
        count *= (size_t)t->size[d];
    }
    *n = count;
    return count ? t->storage->data + t->offset : NULL;
}

/* "sum" -> 0, "mean" -> 1. */
static int checkop(lua_State *L, int arg) {
    static const char *const ops[] = {"sum", "mean", NULL};
    return luaL_checkoption(L, arg, "sum", ops);
}

static int l_init(lua_State *L) {
    check(L, lpnx_comm_init(), "init");
    return 0;
}

static int l_active(lua_State *L) {
    lua_pushboolean(L, lpnx_comm_active());
    return 1;
}

static int l_finalize(lua_State *L) {
    check(L, lpnx_comm_finalize(), "finalize");
    return 0;
}

static int l_rank(lua_State *L) {
    int r = 0;
    need_active(L, "rank");
    check(L, lpnx_comm_rank(&r), "rank");
    lua_pushinteger(L, r);
    return 1;
}

static int l_size(lua_State *L) {
    int n = 1;
    need_active(L, "size");
    check(L, lpnx_comm_size(&n), "size");
    lua_pushinteger(L, n);
    return 1;
}

static int l_local_size(lua_State *L) {
    int n = 1;
    need_active(L, "local_size");
    check(L, lpnx_comm_local_size(&n), "local_size");
    lua_pushinteger(L, n);
    return 1;
}

static int l_barrier(lua_State *L) {
    need_active(L, "barrier");
    check(L, lpnx_comm_barrier(), "barrier");
    return 0;
}

static int l_abort(lua_State *L) {
    lua_Integer code = luaL_optinteger(L, 1, 1);
    lpnx_comm_abort((int)code);
    return 0;
}

static int l_allreduce(lua_State *L) {
    size_t n;
    need_active(L, "allreduce");
    float *p = checkdata(L, 1, &n, "allreduce");
    int mean = checkop(L, 2);
    check(L, lpnx_comm_allreduce(p, n, mean), "allreduce");
    lua_settop(L, 1);
    return 1;
}

static int l_allreduce_list(lua_State *L) {
    need_active(L, "allreduce_list");
    luaL_checktype(L, 1, LUA_TTABLE);
    int mean = checkop(L, 2);
    lua_Integer bucket = luaL_optinteger(L, 3, 25 << 18); /* 25 MiB of floats */
    if (bucket < 1) luaL_argerror(L, 3, "the bucket must hold at least 1 float");
    size_t count = lua_rawlen(L, 1);
    /* Lua-owned scratch: freed by the collector even when a check raises */
    float **bufs = lua_newuserdatauv(L, (count ? count : 1) * sizeof *bufs, 0);
    size_t *ns = lua_newuserdatauv(L, (count ? count : 1) * sizeof *ns, 0);
    for (size_t k = 0; k < count; k++) {
        lua_rawgeti(L, 1, (lua_Integer)k + 1);
        if (!luaL_testudata(L, -1, "lpnx.Tensor"))
            luaL_argerror(L, 1, lua_pushfstring(L, "expected a list of tensors, item %I is a %s",
                                                (lua_Integer)k + 1, luaL_typename(L, -1)));
        bufs[k] = checkdata(L, lua_gettop(L), &ns[k], "allreduce_list");
        lua_pop(L, 1);
    }
    check(L, lpnx_comm_allreduce_many(bufs, ns, count, (size_t)bucket, mean), "allreduce_list");
    lua_settop(L, 1);
    return 1;
}

static int l_allreduce_numbers(lua_State *L) {
    need_active(L, "allreduce_numbers");
    luaL_checktype(L, 1, LUA_TTABLE);
    int mean = checkop(L, 2);
    size_t n = lua_rawlen(L, 1);
    double *v = lua_newuserdatauv(L, (n ? n : 1) * sizeof *v, 0);
    for (size_t i = 0; i < n; i++) {
        int isnum;
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        v[i] = lua_tonumberx(L, -1, &isnum);
        if (!isnum)
            luaL_argerror(L, 1, lua_pushfstring(L, "expected a list of numbers, item %I is a %s",
                                                (lua_Integer)i + 1, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    check(L, lpnx_comm_allreduce_double(v, n, mean), "allreduce_numbers");
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushnumber(L, v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int l_broadcast(lua_State *L) {
    size_t n;
    int size = 1;
    need_active(L, "broadcast");
    float *p = checkdata(L, 1, &n, "broadcast");
    lua_Integer root = luaL_optinteger(L, 2, 0);
    check(L, lpnx_comm_size(&size), "broadcast");
    if (root < 0 || root >= size)
        luaL_argerror(L, 2, lua_pushfstring(L, "root must be a rank in [0, %d), got %I", size, root));
    check(L, lpnx_comm_broadcast(p, n, (int)root), "broadcast");
    lua_settop(L, 1);
    return 1;
}

int luaopen_lpnx_mpi(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"init", l_init}, {"active", l_active}, {"finalize", l_finalize}, {"rank", l_rank},
        {"size", l_size}, {"local_size", l_local_size}, {"barrier", l_barrier}, {"abort", l_abort},
        {"allreduce", l_allreduce}, {"allreduce_list", l_allreduce_list},
        {"allreduce_numbers", l_allreduce_numbers}, {"broadcast", l_broadcast}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
