/* Random generators: lpnx.Generator(seed) objects and the default one
 * that manual_seed resets. The default lives in the registry, so each Lua
 * state has its own. Its state is 32 bytes, saved and restored as a string
 * (checkpoints keep it to resume a run exactly). */
#include <string.h>

#include "bind.h"

#define DEFAULT_SEED 67280421310721ULL /* PyTorch's default, for familiarity */

static lpnx_rng *checkgen(lua_State *L, int i) { return luaL_checkudata(L, i, LPNX_GENERATOR_MT); }

static lpnx_rng *pushgen(lua_State *L, uint64_t seed) {
    lpnx_rng *g = lua_newuserdatauv(L, sizeof *g, 0);
    lpnx_rng_seed(g, seed);
    luaL_setmetatable(L, LPNX_GENERATOR_MT);
    return g;
}

static uint64_t checkseed(lua_State *L, int i) {
    int ok;
    lua_Integer s = lua_tointegerx(L, i, &ok);
    if (!ok) luaL_argerror(L, i, "seed must be an integer");
    return (uint64_t)s;
}

static int l_generator(lua_State *L) {
    pushgen(L, lua_isnoneornil(L, 1) ? DEFAULT_SEED : checkseed(L, 1));
    return 1;
}

static int l_manual_seed(lua_State *L) {
    lpnx_rng_seed(lpnx_default_generator(L), checkseed(L, 1));
    return 0;
}

static int l_default_generator(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, LPNX_DEFAULT_GENERATOR);
    return 1;
}

static int push_state(lua_State *L, const lpnx_rng *g) {
    unsigned char b[32];
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++) b[i * 8 + k] = (unsigned char)(g->s[i] >> (8 * k));
    lua_pushlstring(L, (const char *)b, sizeof b);
    return 1;
}

static void set_state(lua_State *L, lpnx_rng *g, int arg) {
    size_t len;
    const unsigned char *b = (const unsigned char *)luaL_checklstring(L, arg, &len);
    if (len != 32) luaL_argerror(L, arg, lua_pushfstring(L, "expected a 32-byte generator state, got %d bytes", (int)len));
    lpnx_rng tmp;
    for (int i = 0; i < 4; i++) {
        tmp.s[i] = 0;
        for (int k = 0; k < 8; k++) tmp.s[i] |= (uint64_t)b[i * 8 + k] << (8 * k);
    }
    if (!(tmp.s[0] | tmp.s[1] | tmp.s[2] | tmp.s[3])) luaL_argerror(L, arg, "an all-zero generator state is invalid");
    *g = tmp;
}

static int l_get_rng_state(lua_State *L) { return push_state(L, lpnx_optgenerator(L, 1)); }
static int l_set_rng_state(lua_State *L) {
    set_state(L, lpnx_optgenerator(L, 2), 1);
    return 0;
}

/* Unbiased integer in [0, n), n > 0: reject the top sliver of the 64-bit
 * range that does not divide evenly. */
static uint64_t below(lpnx_rng *g, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (;;) {
        uint64_t x = lpnx_rng_next(g);
        if (x < limit) return x % n;
    }
}

/* randperm(n [, g]): 1..n shuffled (Fisher-Yates), as a tensor. */
static int l_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0) return luaL_argerror(L, 1, "n must be non-negative");
    lpnx_rng *g = lpnx_optgenerator(L, 2);
    if (n > (1 << 24)) return luaL_argerror(L, 1, "n above 2^24 is not exact in float32");
    int64_t size = n;
    lpnx_Tensor *t = lpnx_pushnew(L, 1, &size, 0);
    float *p = lpnx_tensor_data(t);
    for (lua_Integer i = 0; i < n; i++) p[i] = (float)(i + 1);
    for (lua_Integer i = n - 1; i > 0; i--) {
        uint64_t j = below(g, (uint64_t)i + 1);
        float tmp = p[i];
        p[i] = p[j];
        p[j] = tmp;
    }
    return 1;
}

/* Generator methods: g:uniform([a, b]) number, g:normal([m, s]),
 * g:random(m [, n]) integer like math.random, g:state(), g:set_state(s),
 * g:manual_seed(n). */
static int g_uniform(lua_State *L) {
    lpnx_rng *g = checkgen(L, 1);
    double a = luaL_optnumber(L, 2, 0), b = luaL_optnumber(L, 3, 1);
    lua_pushnumber(L, a + (b - a) * (double)(lpnx_rng_next(g) >> 11) * 0x1.0p-53);
    return 1;
}

static int g_normal(lua_State *L) {
    lpnx_rng *g = checkgen(L, 1);
    float v;
    lpnx_rng_fill_normal(g, &v, 1, (float)luaL_optnumber(L, 2, 0), (float)luaL_optnumber(L, 3, 1));
    lua_pushnumber(L, v);
    return 1;
}

static int g_random(lua_State *L) {
    lpnx_rng *g = checkgen(L, 1);
    lua_Integer lo = 1, hi;
    if (lua_isnoneornil(L, 3)) hi = luaL_checkinteger(L, 2);
    else {
        lo = luaL_checkinteger(L, 2);
        hi = luaL_checkinteger(L, 3);
    }
    if (lo > hi) return luaL_error(L, "random: empty interval [%d, %d]", (int)lo, (int)hi);
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;
    lua_pushinteger(L, (lua_Integer)((uint64_t)lo + (span ? below(g, span) : lpnx_rng_next(g))));
    return 1;
}

static int g_state(lua_State *L) { return push_state(L, checkgen(L, 1)); }
static int g_set_state(lua_State *L) {
    set_state(L, checkgen(L, 1), 2);
    lua_settop(L, 1);
    return 1;
}
static int g_manual_seed(lua_State *L) {
    lpnx_rng_seed(checkgen(L, 1), checkseed(L, 2));
    lua_settop(L, 1);
    return 1;
}
static int g_tostring(lua_State *L) {
    lua_pushfstring(L, "lpnx.Generator (%p)", lua_topointer(L, 1));
    return 1;
}

static const luaL_Reg gen_methods[] = {
    {"uniform", g_uniform}, {"normal", g_normal}, {"random", g_random}, {"state", g_state},
    {"set_state", g_set_state}, {"manual_seed", g_manual_seed}, {NULL, NULL}};

static const luaL_Reg functions[] = {
    {"Generator", l_generator}, {"manual_seed", l_manual_seed},
    {"default_generator", l_default_generator}, {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state}, {"randperm", l_randperm}, {NULL, NULL}};

void lpnx_open_random(lua_State *L) {
    luaL_newmetatable(L, LPNX_GENERATOR_MT);
    luaL_newlib(L, gen_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, g_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    pushgen(L, DEFAULT_SEED);
    lua_setfield(L, LUA_REGISTRYINDEX, LPNX_DEFAULT_GENERATOR);
    luaL_setfuncs(L, functions, 0);
}
