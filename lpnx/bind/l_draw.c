/* lpnx.draw: the anti-aliased drawing primitives the synthetic
 * radiographs are made of. Images are contiguous (H,W) tensors drawn on in
 * place; points are flat Lua arrays {x1, y1, x2, y2, ...} in pixels. */
#include <stdlib.h>
#include <string.h>

#include "../image/draw.h"
#include "bind.h"

static lpnx_Tensor *checkimage(lua_State *L, int i) {
    char s[160];
    lpnx_Tensor *t = lpnx_checkcontiguous_inplace(L, i);
    if (t->ndim != 2 || t->size[0] < 1 || t->size[1] < 1 || t->size[0] > 65536 || t->size[1] > 65536) {
        lpnx_shape_str(s, sizeof s, t->ndim, t->size);
        luaL_argerror(L, i, lua_pushfstring(L, "expected an (H,W) image, got %s", s));
    }
    return t;
}

/* Reads {x1, y1, ...} into two Lua-owned double arrays; returns the count. */
static int checkpoints(lua_State *L, int i, int min, double **xs, double **ys) {
    luaL_checktype(L, i, LUA_TTABLE);
    lua_Integer n = luaL_len(L, i);
    if (n % 2 != 0) luaL_argerror(L, i, "points must be a flat list {x1, y1, x2, y2, ...}");
    if (n / 2 < min) luaL_argerror(L, i, lua_pushfstring(L, "expected at least %d points, got %d", min, (int)(n / 2)));
    if (n / 2 > 1000000) luaL_argerror(L, i, "too many points");
    *xs = lua_newuserdatauv(L, (size_t)(n / 2) * 2 * sizeof(double), 0);
    *ys = *xs + n / 2;
    for (lua_Integer k = 0; k < n; k++) {
        lua_geti(L, i, k + 1);
        int ok;
        double v = lua_tonumberx(L, -1, &ok);
        if (!ok || v != v || v > 1e9 || v < -1e9)
            luaL_argerror(L, i, lua_pushfstring(L, "point coordinate %d is not a finite number", (int)k + 1));
        (k % 2 ? *ys : *xs)[k / 2] = v;
        lua_pop(L, 1);
    }
    return (int)(n / 2);
}

static lpnx_draw_mode checkmode(lua_State *L, int opts) {
    static const char *const names[] = {"set", "add", "max", "mul", NULL};
    lua_getfield(L, opts, "mode");
    int m = luaL_checkoption(L, -1, "add", names);
    lua_pop(L, 1);
    return (lpnx_draw_mode)m;
}

static float optnum(lua_State *L, int opts, const char *key, float def) {
    lua_getfield(L, opts, key);
    float v = (float)luaL_optnumber(L, -1, def);
    lua_pop(L, 1);
    return v;
}

/* A scratch plane of the image's size: opts.scratch when it fits, else a temporary. */
static float *scratch_for(lua_State *L, int opts, const lpnx_Tensor *img) {
    lua_getfield(L, opts, "scratch");
    lpnx_Tensor *s = lpnx_testtensor(L, -1);
    if (s && s->storage && lpnx_tensor_is_contiguous(s) && lpnx_tensor_numel(s) >= lpnx_tensor_numel(img) &&
        s->storage != img->storage)
        return lpnx_tensor_data(s); /* stays on the stack, so it stays alive */
    lua_pop(L, 1);
    return lpnx_tensor_data(lpnx_pushnew(L, 2, img->size, 0));
}

/* polygon(img, points, value [, {feather = 1.5, mode = "add"}]) */
static int l_polygon(lua_State *L) {
    lpnx_Tensor *img = checkimage(L, 1);
    double *xs, *ys;
    float value = (float)luaL_checknumber(L, 3);
    if (lua_isnoneornil(L, 4)) { lua_settop(L, 3); lua_newtable(L); }
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_settop(L, 4);
    int n = checkpoints(L, 2, 3, &xs, &ys);
    float feather = optnum(L, 4, "feather", 1.5f);
    lpnx_draw_mode mode = checkmode(L, 4);
    float *scratch = scratch_for(L, 4, img);
    lpnx_draw_polygon(lpnx_tensor_data(img), scratch, (int)img->size[0], (int)img->size[1], xs, ys, n,
                      value, feather, mode);
    lua_settop(L, 1);
    return 1;
}

/* stroke(img, points, width, value [, {feather = 1, mode = "add",
 * profile = "flat"|"tube"|"shell", inner = 0.7}]) */
static int l_stroke(lua_State *L) {
    static const char *const profiles[] = {"flat", "tube", "shell", NULL};
    lpnx_Tensor *img = checkimage(L, 1);
    double *xs, *ys;
    float width = (float)luaL_checknumber(L, 3), value = (float)luaL_checknumber(L, 4);
    if (!(width > 0 && width < 1e6)) return luaL_argerror(L, 3, "width must be a positive number");
    if (lua_isnoneornil(L, 5)) { lua_settop(L, 4); lua_newtable(L); }
    luaL_checktype(L, 5, LUA_TTABLE);
    lua_settop(L, 5);
    int n = checkpoints(L, 2, 2, &xs, &ys);
    float feather = optnum(L, 5, "feather", 1.0f);
    lpnx_draw_mode mode = checkmode(L, 5);
    lua_getfield(L, 5, "profile");
    int profile = luaL_checkoption(L, -1, "flat", profiles);
    lua_pop(L, 1);
    float inner = optnum(L, 5, "inner", 0.7f);
    if (!(inner >= 0 && inner < 1)) return luaL_argerror(L, 5, "inner must be in [0, 1)");
    float *scratch = scratch_for(L, 5, img);
    lpnx_draw_stroke(lpnx_tensor_data(img), scratch, (int)img->size[0], (int)img->size[1], xs, ys, n, width,
                     value, feather, (lpnx_draw_profile)profile, inner, mode);
    lua_settop(L, 1);
    return 1;
}

/* noise(h, w [, {scale = 64, octaves = 4, persistence = 0.5}] [, generator]) -> (H,W) in about [-1,1] */
static int l_noise(lua_State *L) {
    lua_Integer h = luaL_checkinteger(L, 1), w = luaL_checkinteger(L, 2);
    if (h < 1 || w < 1 || h > 65536 || w > 65536) return luaL_error(L, "noise: size %dx%d out of range", (int)h, (int)w);
    if (lua_isnoneornil(L, 3)) { lua_settop(L, 2); lua_newtable(L); }
    luaL_checktype(L, 3, LUA_TTABLE);
    lpnx_rng *g = lpnx_optgenerator(L, 4);
    lua_settop(L, 3);
    float scale = optnum(L, 3, "scale", 64), persistence = optnum(L, 3, "persistence", 0.5f);
    lua_getfield(L, 3, "octaves");
    lua_Integer octaves = luaL_optinteger(L, -1, 4);
    lua_pop(L, 1);
    if (octaves < 1 || octaves > 16) return luaL_argerror(L, 3, "octaves must be in 1..16");
    if (!(scale >= 1 && scale <= 1e6)) return luaL_argerror(L, 3, "scale must be at least 1 pixel");
    int64_t size[2] = {h, w};
    lpnx_Tensor *t = lpnx_pushnew(L, 2, size, 0);
    lpnx_draw_noise(lpnx_tensor_data(t), (int)h, (int)w, scale, (int)octaves, persistence, g);
    return 1;
}

static const luaL_Reg functions[] = {
    {"polygon", l_polygon}, {"stroke", l_stroke}, {"noise", l_noise}, {NULL, NULL}};

void lpnx_open_draw(lua_State *L) {
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "draw");
}
