/* lpnx.dicom: DICOM images through the DCMTK shim in io/dicom.cpp.
 *
 *   read(path [, {frame = n}]) -> image (C,H,W) float tensor, meta table
 *   write(path, image, meta [, {jpeg = true, quality = 95}]) -> uids table
 *
 * The decoded file lives in a Lua-owned handle (closed by __gc too), so a
 * Lua error while the output tensor is made cannot leak it; the shim has
 * freed its own buffers before it reports an error, and the binding raises
 * only after that. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../io/dicom.h"
#include "bind.h"

#define HANDLE_MT "lpnx.DicomHandle"

typedef struct {
    lpnx_dicom *d; /* NULL when closed */
} handle;

static int handle_gc(lua_State *L) {
    handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    lpnx_dicom_close(h->d);
    h->d = NULL;
    return 0;
}

static void setnumber(lua_State *L, int t, const char *key, int has, double v) {
    if (!has) return;
    lua_pushnumber(L, v);
    lua_setfield(L, t, key);
}

static void setinteger(lua_State *L, int t, const char *key, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, t, key);
}

/* The meta table of an opened file, pushed onto the stack. */
static void pushmeta(lua_State *L, const lpnx_dicom_info *info) {
    lua_createtable(L, 0, 40);
    int t = lua_gettop(L);
    setinteger(L, t, "rows", info->rows);
    setinteger(L, t, "columns", info->columns);
    setinteger(L, t, "number_of_frames", info->number_of_frames);
    setinteger(L, t, "frame", info->frame);
    setinteger(L, t, "samples_per_pixel", info->samples_per_pixel);
    setinteger(L, t, "bits_allocated", info->bits_allocated);
    setinteger(L, t, "bits_stored", info->bits_stored);
    setinteger(L, t, "high_bit", info->high_bit);
    setinteger(L, t, "pixel_representation", info->pixel_representation);
    lua_pushstring(L, info->photometric);
    lua_setfield(L, t, "photometric");
    lua_pushstring(L, info->transfer_syntax);
    lua_setfield(L, t, "transfer_syntax");
    lua_pushstring(L, info->transfer_syntax_name);
    lua_setfield(L, t, "transfer_syntax_name");
    setnumber(L, t, "rescale_slope", info->has_rescale_slope, info->rescale_slope);
    setnumber(L, t, "rescale_intercept", info->has_rescale_intercept, info->rescale_intercept);
    setnumber(L, t, "window_center", info->has_window_center, info->window_center);
    setnumber(L, t, "window_width", info->has_window_width, info->window_width);
    if (info->has_pixel_spacing) {
        lua_createtable(L, 2, 0);
        lua_pushnumber(L, info->pixel_spacing[0]);
        lua_rawseti(L, -2, 1);
        lua_pushnumber(L, info->pixel_spacing[1]);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, t, "pixel_spacing");
    }
    for (int i = 0; i < LPNX_DICOM_NSTRINGS; i++) {
        if (!info->strings[i].value) continue;
        lua_pushstring(L, info->strings[i].value);
        lua_setfield(L, t, info->strings[i].key);
    }
}

/* read(path [, {frame = n}]) -> image (C,H,W), meta */
static int l_read(lua_State *L) {
    char err[1024];
    const char *path = luaL_checkstring(L, 1);
    long long frame = 1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "frame") != LUA_TNIL) {
            int isint = 0;
            lua_Integer n = lua_tointegerx(L, -1, &isint);
            if (!isint)
                return luaL_argerror(L, 2, lua_pushfstring(L, "frame must be an integer, got %s", luaL_typename(L, -1)));
            frame = (long long)n;
        }
        lua_pop(L, 1);
    }
    handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->d = NULL;
    luaL_setmetatable(L, HANDLE_MT);
    if (lpnx_dicom_open(&h->d, path, frame, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.read: %s: %s", path, err);
    const lpnx_dicom_info *info = lpnx_dicom_info_of(h->d);
    int64_t size[3] = {info->channels, info->rows, info->columns};
    lpnx_Tensor *t = lpnx_pushnew(L, 3, size, 0); /* (C, H, W) */
    lpnx_dicom_pixels(h->d, lpnx_tensor_data(t));
    pushmeta(L, info);
    lpnx_dicom_close(h->d); /* done early; the collector would do it too */
    h->d = NULL;
    return 2;
}

/* meta[key] as a string (numbers are converted) or NULL when absent. The
 * value stays on the stack so the string outlives the call. */
static const char *optfield(lua_State *L, int meta, const char *key) {
    if (meta == 0) return NULL;
    int type = lua_getfield(L, meta, key);
    if (type == LUA_TNIL) return NULL;
    if (type != LUA_TSTRING && type != LUA_TNUMBER) {
        luaL_argerror(L, 3, lua_pushfstring(L, "meta.%s: expected a string, got %s", key, luaL_typename(L, -1)));
        return NULL;
    }
    const char *s = lua_tostring(L, -1);
    size_t len = strlen(s);
    if (len != lua_rawlen(L, -1)) luaL_argerror(L, 3, lua_pushfstring(L, "meta.%s: contains a zero byte", key));
    return s;
}

/* meta.pixel_spacing = {row, column}, both positive numbers. */
static int optspacing(lua_State *L, int meta, double *spacing) {
    if (meta == 0 || lua_getfield(L, meta, "pixel_spacing") == LUA_TNIL) return 0;
    if (!lua_istable(L, -1))
        luaL_argerror(L, 3, lua_pushfstring(L, "meta.pixel_spacing: expected {row, column}, got %s", luaL_typename(L, -1)));
    for (int k = 0; k < 2; k++) {
        lua_rawgeti(L, -1, k + 1);
        int isnum = 0;
        double v = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !isfinite(v) || v <= 0)
            luaL_argerror(L, 3, lua_pushfstring(L, "meta.pixel_spacing[%d]: expected a positive number, got %s", k + 1,
                                                isnum ? lua_tostring(L, -1) : luaL_typename(L, -1)));
        spacing[k] = v;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 1;
}

/* write(path, image, meta [, {jpeg = true, quality = 95}]) -> {sop_instance_uid = ..., ...} */
static int l_write(lua_State *L) {
    char err[1024], shape[160];
    const char *path = luaL_checkstring(L, 1);
    lpnx_Tensor *t = lpnx_checktensor(L, 2);
    if (!t->storage) return luaL_argerror(L, 2, "tensor was closed");
    int meta = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        meta = 3;
    }
    int jpeg = 1;
    lua_Integer quality = 95;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        int type = lua_getfield(L, 4, "jpeg");
        if (type != LUA_TNIL) {
            if (type != LUA_TBOOLEAN)
                return luaL_argerror(L, 4, lua_pushfstring(L, "jpeg must be a boolean, got %s", luaL_typename(L, -1)));
            jpeg = lua_toboolean(L, -1);
        }
        if (lua_getfield(L, 4, "quality") != LUA_TNIL) {
            int isint = 0;
            quality = lua_tointegerx(L, -1, &isint);
            if (!isint || quality < 1 || quality > 100)
                return luaL_argerror(L, 4, lua_pushfstring(L, "quality must be an integer in 1..100, got %s",
                                                           luaL_tolstring(L, -1, NULL)));
        }
        lua_pop(L, 2);
    }
    lua_settop(L, 4);

    /* image: (1,H,W) or (H,W) */
    int ok = (t->ndim == 2) || (t->ndim == 3 && t->size[0] == 1);
    int64_t rows = ok ? t->size[t->ndim - 2] : 0, columns = ok ? t->size[t->ndim - 1] : 0;
    if (!ok || rows < 1 || columns < 1 || rows > 65535 || columns > 65535) {
        lpnx_shape_str(shape, sizeof shape, t->ndim, t->size);
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected an image (1,H,W) or (H,W) with H and W in 1..65535, got (%s)", shape));
    }
    t = lpnx_checkcontiguous(L, 2); /* may push a copy (slot 5) */
    const float *src = lpnx_tensor_data(t);
    size_t n = (size_t)rows * (size_t)columns;
    unsigned char *pixels = lua_newuserdatauv(L, n, 0); /* (rows, columns), Lua-owned */
    for (size_t i = 0; i < n; i++) {
        float v = src[i];
        if (!isfinite(v))
            return luaL_argerror(L, 2, lua_pushfstring(L, "image holds a non-finite value (%s) at row %d, column %d",
                                                       isnan(v) ? "nan" : v > 0 ? "inf" : "-inf",
                                                       (int)(i / (size_t)columns) + 1, (int)(i % (size_t)columns) + 1));
        v = floorf(v + 0.5f);
        pixels[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }

    lpnx_dicom_write_meta m;
    memset(&m, 0, sizeof m);
    luaL_checkstack(L, 20, "lpnx.dicom.write");
    m.patient_id = optfield(L, meta, "patient_id");
    m.patient_name = optfield(L, meta, "patient_name");
    m.patient_sex = optfield(L, meta, "patient_sex");
    m.patient_age = optfield(L, meta, "patient_age");
    m.view_position = optfield(L, meta, "view_position");
    m.body_part_examined = optfield(L, meta, "body_part_examined");
    m.modality = optfield(L, meta, "modality");
    m.series_description = optfield(L, meta, "series_description");
    m.study_date = optfield(L, meta, "study_date");
    m.study_instance_uid = optfield(L, meta, "study_instance_uid");
    m.series_instance_uid = optfield(L, meta, "series_instance_uid");
    m.sop_instance_uid = optfield(L, meta, "sop_instance_uid");
    m.frame_of_reference_uid = optfield(L, meta, "frame_of_reference_uid");
    m.has_pixel_spacing = optspacing(L, meta, m.pixel_spacing);

    lpnx_dicom_uids uids;
    if (lpnx_dicom_write(path, pixels, (int)rows, (int)columns, &m, jpeg, (int)quality, &uids, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.write: %s: %s", path, err);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, uids.sop_class_uid);
    lua_setfield(L, -2, "sop_class_uid");
    lua_pushstring(L, uids.sop_instance_uid);
    lua_setfield(L, -2, "sop_instance_uid");
    lua_pushstring(L, uids.study_instance_uid);
    lua_setfield(L, -2, "study_instance_uid");
    lua_pushstring(L, uids.series_instance_uid);
    lua_setfield(L, -2, "series_instance_uid");
    lua_pushstring(L, uids.frame_of_reference_uid);
    lua_setfield(L, -2, "frame_of_reference_uid");
    return 1;
}

static const luaL_Reg functions[] = {{"read", l_read}, {"write", l_write}, {NULL, NULL}};

void lpnx_open_dicom(lua_State *L) {
    luaL_newmetatable(L, HANDLE_MT);
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "dicom");
}
