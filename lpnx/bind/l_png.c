/* lpnx.png: PNG files to and from (C,H,W) float tensors in [0, 1].
 *
 *   lpnx.png.read(path) -> image (C,H,W), info {width, height, bit_depth,
 *       color_type = "gray"|"gray_alpha"|"rgb"|"rgba"|"palette", interlaced}
 *   lpnx.png.write(path, image [, {bit_depth = 8|16}])
 *
 * The file image lives in a Lua-owned holder while it is decoded, so a Lua
 * error halfway (out of memory for the tensor) frees it through the
 * collector. */
#include <stdio.h>
#include <stdlib.h>

#include "../io/file.h"
#include "../io/png.h"
#include "bind.h"

#define SHAPE_LEN 160

static int l_read(lua_State *L) {
    char err[512];
    lpnx_png_info info;
    const char *path = luaL_checkstring(L, 1);
    lpnx_file_bytes *fb = lpnx_pushfile(L, path, "lpnx.png.read");
    if (lpnx_png_read_info(&info, fb->bytes, fb->len, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.png.read: %s: %s", path, err);
    int64_t size[3] = {info.channels, info.height, info.width};
    lpnx_Tensor *t = lpnx_pushnew(L, 3, size, 0);
    if (lpnx_png_decode(lpnx_tensor_data(t), &info, fb->bytes, fb->len, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.png.read: %s: %s", path, err);
    lpnx_freefile(fb); /* done early; the collector would do it too */
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)info.width);
    lua_setfield(L, -2, "width");
    lua_pushinteger(L, (lua_Integer)info.height);
    lua_setfield(L, -2, "height");
    lua_pushinteger(L, info.bit_depth);
    lua_setfield(L, -2, "bit_depth");
    lua_pushstring(L, lpnx_png_color_name(info.color));
    lua_setfield(L, -2, "color_type");
    lua_pushboolean(L, info.interlaced);
    lua_setfield(L, -2, "interlaced");
    return 2;
}

/* The bit_depth option of opts at arg (8 when absent). */
static int opt_bit_depth(lua_State *L, int arg) {
    int depth = 8;
    if (lua_isnoneornil(L, arg)) return depth;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_getfield(L, arg, "bit_depth");
    if (!lua_isnil(L, -1)) {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || (v != 8 && v != 16)) {
            const char *got = lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1);
            return luaL_argerror(L, arg, lua_pushfstring(L, "bit_depth must be 8 or 16, got %s", got));
        }
        depth = (int)v;
    }
    lua_pop(L, 1);
    return depth;
}

static int l_write(lua_State *L) {
    char err[512], s1[SHAPE_LEN];
    const char *path = luaL_checkstring(L, 1);
    lpnx_Tensor *t = lpnx_checktensor(L, 2);
    if (!t->storage) return luaL_argerror(L, 2, "tensor was closed");
    int depth = opt_bit_depth(L, 3);
    int64_t c, h, w;
    if (t->ndim == 2) {
        c = 1;
        h = t->size[0];
        w = t->size[1];
    } else if (t->ndim == 3 && t->size[0] >= 1 && t->size[0] <= 4) {
        c = t->size[0];
        h = t->size[1];
        w = t->size[2];
    } else {
        return luaL_argerror(L, 2,
                             lua_pushfstring(L, "expected an image (C,H,W) with C = 1, 2, 3 or 4, or (H,W), got %s",
                                             lpnx_shape_of(s1, SHAPE_LEN, t)));
    }
    if (h < 1 || w < 1)
        return luaL_argerror(
            L, 2,
            lua_pushfstring(L, "expected an image of at least 1x1 pixels, got %s", lpnx_shape_of(s1, SHAPE_LEN, t)));
    if (h > 0x7fffffff || w > 0x7fffffff)
        return luaL_argerror(L, 2,
                             lua_pushfstring(L, "expected at most 2147483647 rows and columns, got %s",
                                             lpnx_shape_of(s1, SHAPE_LEN, t)));
    lua_settop(L, 3);
    t = lpnx_checkcontiguous(L, 2); /* a copy pushed at 4 when t is a strided view */
    unsigned char *png = NULL;
    size_t len = 0;
    if (lpnx_png_encode(&png, &len, lpnx_tensor_data(t), (int)c, (uint32_t)h, (uint32_t)w, depth, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.png.write: %s: %s", path, err);
    int rc = lpnx_file_write_atomic(path, png, len, err, sizeof err);
    free(png); /* before any error is raised */
    if (rc != 0) return luaL_error(L, "lpnx.png.write: %s", err);
    return 0;
}

static const luaL_Reg functions[] = {{"read", l_read}, {"write", l_write}, {NULL, NULL}};

void lpnx_open_png(lua_State *L) {
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "png");
}
