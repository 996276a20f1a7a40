/* lpnx.dicom: DICOM images through the DCMTK shim in io/dicom.cpp, and
 * Segmentation objects and Structured Reports through the ones in
 * io/dicom_seg.cpp and io/dicom_sr.cpp.
 *
 *   read(path [, {frame = n, stored = true}]) -> image (C,H,W) float tensor, meta table
 *   write(path, image (1|3,H,W), meta [, {jpeg = true, quality = 95, bits, photometric, window, dx}])
 *     -> uids table
 *   write_seg(path, mask, source_meta [, opts]) -> uids table (+ warnings = {lines})
 *   read_seg(path [, {segment = n}]) -> mask (F,H,W) float tensor, info table
 *   write_sr(path, source_meta, opts) -> uids table (+ warnings = {lines})
 *   derive_uid(s1 [, s2, ...]) -> "2.25.<decimal>", the same for the same strings (io/uid.h)
 *
 * write_seg makes a binary DICOM Segmentation of a 0/1 mask (H,W) or
 * (1,H,W) derived from the image whose meta table (as read returns it) is
 * source_meta; opts: label, description, category and type ({code =,
 * scheme =, meaning =}), color ({r, g, b} in [0, 1]), algorithm_name,
 * algorithm_version (default lpnx's version), series_description,
 * series_number, instance_number, series_instance_uid, sop_instance_uid
 * (default new ones), content_label, content_description, content_creator,
 * manufacturer, model_name, device_serial_number. read_seg returns the
 * frames of one segment (the first unless opts.segment names another; a
 * segment without frames gives one empty frame) and what the file says:
 * UIDs, patient, the segments with their codes, the referenced images.
 *
 * The decoded file lives in a Lua-owned handle (closed by __gc too), so a
 * Lua error while the output tensor is made cannot leak it; the shim has
 * freed its own buffers before it reports an error, and the binding raises
 * only after that. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../io/dicom.h"
#include "../io/dicom_seg.h"
#include "../io/dicom_sr.h"
#include "../io/uid.h"
#include "bind.h"

#define HANDLE_MT "lpnx.DicomHandle"

/* A decoded image (d) or segmentation (s) held by Lua while it is turned
 * into a tensor and a table; each NULL when not open. */
typedef struct {
    lpnx_dicom *d;
    lpnx_seg *s;
} handle;

/* Closes what the handle holds (safe twice). */
static void closehandle(handle *h) {
    lpnx_dicom_close(h->d);
    h->d = NULL;
    lpnx_dicom_seg_close(h->s);
    h->s = NULL;
}

static int handle_gc(lua_State *L) {
    closehandle(luaL_checkudata(L, 1, HANDLE_MT));
    return 0;
}

/* Pushes an empty handle. */
static handle *pushhandle(lua_State *L) {
    handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->d = NULL;
    h->s = NULL;
    luaL_setmetatable(L, HANDLE_MT);
    return h;
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

/* t[key] = {v[0], v[1]} */
static void setpair(lua_State *L, int t, const char *key, const double *v) {
    lua_createtable(L, 2, 0);
    lua_pushnumber(L, v[0]);
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, v[1]);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, t, key);
}

/* t[key] = s when s is not NULL. */
static void setoptstring(lua_State *L, int t, const char *key, const char *s) {
    if (!s) return;
    lua_pushstring(L, s);
    lua_setfield(L, t, key);
}

/* A LUT as {first = n, bits = n, data = tensor (entries), explanation =,
 * type =}, pushed onto the stack. */
static void pushlut(lua_State *L, const lpnx_dicom_lut *lut) {
    lua_createtable(L, 0, 5);
    int t = lua_gettop(L);
    setinteger(L, t, "first", lut->first_mapped);
    setinteger(L, t, "bits", lut->bits);
    int64_t size[1] = {lut->entries};
    lpnx_Tensor *data = lpnx_pushnew(L, 1, size, 0); /* (entries) */
    float *out = lpnx_tensor_data(data);
    for (int i = 0; i < lut->entries; i++) out[i] = (float)lut->data[i];
    lua_setfield(L, t, "data");
    setoptstring(L, t, "explanation", lut->explanation);
    setoptstring(L, t, "type", lut->type);
}

/* The presentation attributes into meta table t, each only when the file
 * has it: windows = {{center =, width =, explanation =}, ...},
 * voi_lut_function, presentation_lut_shape, modality_lut = lut,
 * voi_luts = {lut, ...}. */
static void pushpresentation(lua_State *L, int t, const lpnx_dicom_info *info) {
    luaL_checkstack(L, 6, "lpnx.dicom.read");
    if (info->window_count > 0) {
        lua_createtable(L, info->window_count, 0);
        for (int k = 0; k < info->window_count; k++) {
            lua_createtable(L, 0, 3);
            int w = lua_gettop(L);
            setnumber(L, w, "center", 1, info->window_centers[k]);
            setnumber(L, w, "width", 1, info->window_widths[k]);
            setoptstring(L, w, "explanation", info->window_explanations[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, t, "windows");
    }
    setoptstring(L, t, "voi_lut_function", info->voi_lut_function);
    setoptstring(L, t, "presentation_lut_shape", info->presentation_lut_shape);
    if (info->has_modality_lut) {
        pushlut(L, &info->modality_lut);
        lua_setfield(L, t, "modality_lut");
    }
    if (info->voi_lut_count > 0) {
        lua_createtable(L, info->voi_lut_count, 0);
        for (int k = 0; k < info->voi_lut_count; k++) {
            pushlut(L, &info->voi_luts[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, t, "voi_luts");
    }
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
        setpair(L, t, "pixel_spacing", info->pixel_spacing);
        if (info->pixel_spacing_is_imager) { /* the detector's spacing: the file has no PixelSpacing */
            lua_pushboolean(L, 1);
            lua_setfield(L, t, "pixel_spacing_from_imager");
        }
    }
    if (info->has_imager_pixel_spacing) setpair(L, t, "imager_pixel_spacing", info->imager_pixel_spacing);
    for (int i = 0; i < LPNX_DICOM_NSTRINGS; i++) {
        if (!info->strings[i].value) continue;
        lua_pushstring(L, info->strings[i].value);
        lua_setfield(L, t, info->strings[i].key);
    }
    setnumber(L, t, "magnification_factor", info->has_magnification_factor, info->magnification_factor);
    pushpresentation(L, t, info);
}

/* read(path [, {frame = n}]) -> image (C,H,W), meta */
static int l_read(lua_State *L) {
    char err[1024];
    const char *path = luaL_checkstring(L, 1);
    long long frame = 1;
    int stored = 0;
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
        int type = lua_getfield(L, 2, "stored");
        if (type != LUA_TNIL && type != LUA_TBOOLEAN)
            return luaL_argerror(L, 2, lua_pushfstring(L, "stored must be a boolean, got %s", luaL_typename(L, -1)));
        stored = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    handle *h = pushhandle(L);
    if (lpnx_dicom_open(&h->d, path, frame, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.read: %s: %s", path, err);
    const lpnx_dicom_info *info = lpnx_dicom_info_of(h->d);
    int64_t size[3] = {info->channels, info->rows, info->columns};
    lpnx_Tensor *t = lpnx_pushnew(L, 3, size, 0); /* (C, H, W) */
    if (stored)
        lpnx_dicom_stored_pixels(h->d, lpnx_tensor_data(t));
    else
        lpnx_dicom_pixels(h->d, lpnx_tensor_data(t));
    pushmeta(L, info);
    if (stored) { /* tells lpnx.dicom.present what it is given */
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "stored_values");
    }
    closehandle(h); /* done early; the collector would do it too */
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

static const char *tablestring(lua_State *L, int t, int arg, const char *what, const char *key);

/* write(path, image, meta [, {jpeg = true, quality = 95, bits = 8, photometric = "MONOCHROME2",
 *                             window = {center =, width =}, dx = false}]) -> {sop_instance_uid = ..., ...}
 * image: (1,H,W) or (H,W) gray, (3,H,W) RGB, values 0..255 (rounded,
 * clamped); with bits 9..16 a gray image of values 0..2^bits-1 written as
 * 16-bit words (uncompressed: jpeg must be false). photometric
 * "MONOCHROME1" marks low values white; window adds a VOI window; dx
 * writes a Digital X-Ray (For Presentation) object instead of Secondary
 * Capture. meta: what lpnx.dicom.read returns (unknown keys are ignored,
 * so a read meta table can be passed on), and for a result derived from a
 * source: series_number, instance_number, derivation_description,
 * burned_in_annotation ("YES" | "NO"), source = {sop_class_uid =,
 * sop_instance_uid =}. */
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
    int jpeg = 1, monochrome1 = 0, dx = 0, has_window = 0;
    lua_Integer quality = 95, bits = 8;
    double window[2] = {0, 0}; /* center, width */
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        if (lua_getfield(L, 4, "bits") != LUA_TNIL) {
            int isint = 0;
            bits = lua_tointegerx(L, -1, &isint);
            if (!isint || bits < 8 || bits > 16)
                return luaL_argerror(L, 4, lua_pushfstring(L, "bits must be an integer in 8..16, got %s",
                                                           luaL_tolstring(L, -1, NULL)));
        }
        if (lua_getfield(L, 4, "photometric") != LUA_TNIL) {
            const char *ph = lua_tostring(L, -1);
            if (!ph || (strcmp(ph, "MONOCHROME1") != 0 && strcmp(ph, "MONOCHROME2") != 0))
                return luaL_argerror(L, 4, lua_pushfstring(L, "photometric must be \"MONOCHROME1\" or "
                                                              "\"MONOCHROME2\", got %s", luaL_tolstring(L, -1, NULL)));
            monochrome1 = strcmp(ph, "MONOCHROME1") == 0;
        }
        if (lua_getfield(L, 4, "dx") != LUA_TNIL) {
            if (!lua_isboolean(L, -1))
                return luaL_argerror(L, 4, lua_pushfstring(L, "dx must be a boolean, got %s", luaL_typename(L, -1)));
            dx = lua_toboolean(L, -1);
        }
        if (lua_getfield(L, 4, "window") != LUA_TNIL) {
            static const char *const keys[] = {"center", "width"};
            if (!lua_istable(L, -1))
                return luaL_argerror(L, 4, lua_pushfstring(L, "window must be {center =, width =}, got %s",
                                                           luaL_typename(L, -1)));
            for (int k = 0; k < 2; k++) {
                lua_getfield(L, -1, keys[k]);
                int isnum = 0;
                window[k] = lua_tonumberx(L, -1, &isnum);
                if (!isnum || !isfinite(window[k]) || (k == 1 && window[k] < 1))
                    return luaL_argerror(L, 4, lua_pushfstring(L, "window.%s must be a finite number%s, got %s", keys[k],
                                                               k == 1 ? " >= 1" : "", luaL_tolstring(L, -1, NULL)));
                lua_pop(L, 1);
            }
            has_window = 1;
        }
        lua_pop(L, 4);
        if (bits > 8 && lua_getfield(L, 4, "jpeg") != LUA_TBOOLEAN)
            return luaL_argerror(L, 4, lua_pushfstring(L, "%d-bit pixels are written uncompressed: pass jpeg = false",
                                                       (int)bits));
        lua_pop(L, bits > 8 ? 1 : 0);
    }
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

    /* image: (1,H,W) or (H,W) gray, (3,H,W) RGB */
    int ok = (t->ndim == 2) || (t->ndim == 3 && (t->size[0] == 1 || t->size[0] == 3));
    int64_t rows = ok ? t->size[t->ndim - 2] : 0, columns = ok ? t->size[t->ndim - 1] : 0;
    int channels = t->ndim == 3 ? (int)t->size[0] : 1;
    if (!ok || rows < 1 || columns < 1 || rows > 65535 || columns > 65535) {
        lpnx_shape_str(shape, sizeof shape, t->ndim, t->size);
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected an image (1,H,W) or (H,W), or an RGB image (3,H,W), "
                                                      "with H and W in 1..65535, got (%s)", shape));
    }
    if ((bits > 8 || monochrome1 || dx) && channels != 1)
        return luaL_argerror(L, 2, "16-bit, MONOCHROME1 and DX images are gray (1,H,W) or (H,W)");
    t = lpnx_checkcontiguous(L, 2); /* may push a copy (slot 5) */
    const float *src = lpnx_tensor_data(t);
    size_t n = (size_t)rows * (size_t)columns;
    /* (rows, columns, channels): the planes interleaved, Lua-owned; bytes,
     * or uint16 words when bits > 8 */
    void *pixels = lua_newuserdatauv(L, n * (size_t)channels * (bits > 8 ? 2 : 1), 0);
    float top = (float)((1 << bits) - 1);
    for (int ch = 0; ch < channels; ch++) {
        for (size_t i = 0; i < n; i++) {
            float v = src[(size_t)ch * n + i];
            if (!isfinite(v))
                return luaL_argerror(L, 2, lua_pushfstring(L, "image holds a non-finite value (%s) at %srow %d, "
                                                              "column %d", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf",
                                                           channels == 1 ? "" : lua_pushfstring(L, "channel %d, ",
                                                                                                ch + 1),
                                                           (int)(i / (size_t)columns) + 1,
                                                           (int)(i % (size_t)columns) + 1));
            v = floorf(v + 0.5f);
            v = v < 0 ? 0 : v > top ? top : v;
            if (bits > 8)
                ((uint16_t *)pixels)[i] = (uint16_t)v;
            else
                ((unsigned char *)pixels)[i * (size_t)channels + (size_t)ch] = (unsigned char)v;
        }
    }

    lpnx_dicom_write_meta m;
    memset(&m, 0, sizeof m);
    luaL_checkstack(L, 40, "lpnx.dicom.write");
    m.patient_id = optfield(L, meta, "patient_id");
    m.patient_name = optfield(L, meta, "patient_name");
    m.patient_sex = optfield(L, meta, "patient_sex");
    m.patient_age = optfield(L, meta, "patient_age");
    m.view_position = optfield(L, meta, "view_position");
    m.body_part_examined = optfield(L, meta, "body_part_examined");
    m.modality = optfield(L, meta, "modality");
    m.series_description = optfield(L, meta, "series_description");
    m.study_date = optfield(L, meta, "study_date");
    m.study_time = optfield(L, meta, "study_time");
    m.study_id = optfield(L, meta, "study_id");
    m.study_instance_uid = optfield(L, meta, "study_instance_uid");
    m.series_instance_uid = optfield(L, meta, "series_instance_uid");
    m.sop_instance_uid = optfield(L, meta, "sop_instance_uid");
    m.frame_of_reference_uid = optfield(L, meta, "frame_of_reference_uid");
    m.has_pixel_spacing = optspacing(L, meta, m.pixel_spacing);
    m.samples_per_pixel = channels;
    m.series_number = optfield(L, meta, "series_number");
    m.instance_number = optfield(L, meta, "instance_number");
    m.derivation_description = optfield(L, meta, "derivation_description");
    m.burned_in_annotation = optfield(L, meta, "burned_in_annotation");
    if (meta && lua_getfield(L, meta, "source") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 3, lua_pushfstring(L, "meta.source: expected {sop_class_uid =, sop_instance_uid "
                                                          "=} of the source image, got %s", luaL_typename(L, -1)));
        int source = lua_gettop(L);
        m.source_sop_class_uid = tablestring(L, source, 3, "meta.source", "sop_class_uid");
        m.source_sop_instance_uid = tablestring(L, source, 3, "meta.source", "sop_instance_uid");
        if (!m.source_sop_class_uid || !m.source_sop_instance_uid)
            return luaL_argerror(L, 3, lua_pushfstring(L, "meta.source.%s is missing", m.source_sop_class_uid
                                                                                            ? "sop_instance_uid"
                                                                                            : "sop_class_uid"));
    }

    m.bits_stored = (int)bits;
    m.monochrome1 = monochrome1;
    m.dx = dx;
    m.has_window = has_window;
    m.window_center = window[0];
    m.window_width = window[1];

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

/* ---- Segmentation objects ------------------------------------------- */

/* t[key] as a string or NULL when absent; what names the table in errors
 * ("source_meta"). Numbers are converted. The value stays on the stack so
 * the string outlives the call (the caller has made room). */
static const char *tablestring(lua_State *L, int t, int arg, const char *what, const char *key) {
    if (t == 0) return NULL;
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) return NULL;
    if (type != LUA_TSTRING && type != LUA_TNUMBER)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s: expected a string, got %s", what, key, luaL_typename(L, -1)));
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len) luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s: contains a zero byte", what, key));
    return s;
}

/* t[key] as an integer in 1..65535, or 0 when absent. */
static int tablesize(lua_State *L, int t, int arg, const char *what, const char *key) {
    int type = lua_getfield(L, t, key);
    int isint = 0;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (type != LUA_TNIL && (type != LUA_TNUMBER || !isint || n < 1 || n > 65535))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s: expected an integer in 1..65535, got %s", what, key,
                                              luaL_tolstring(L, -1, NULL)));
    lua_pop(L, 1);
    return type == LUA_TNIL ? 0 : (int)n;
}

/* t[key] = {row, column} of positive numbers -> spacing; 0 when absent. */
static int tablepair(lua_State *L, int t, int arg, const char *what, const char *key, double *v) {
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s: expected {row, column}, got %s", what, key,
                                              luaL_typename(L, -1)));
    for (int k = 0; k < 2; k++) {
        lua_rawgeti(L, -1, k + 1);
        int isnum = 0;
        double x = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !isfinite(x) || x <= 0)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s.%s[%d]: expected a positive number, got %s", what, key, k + 1,
                                                  isnum ? lua_tostring(L, -1) : luaL_typename(L, -1)));
        v[k] = x;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 1;
}

/* opts[key] = {code = , scheme = , meaning = } into *code (strings stay on
 * the stack). */
static void tablecode(lua_State *L, int t, int arg, const char *key, lpnx_seg_code *code) {
    if (t == 0) return;
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "opts.%s: expected {code = , scheme = , meaning = }, got %s", key,
                                              luaL_typename(L, -1)));
    int c = lua_gettop(L);
    const char *what = lua_pushfstring(L, "opts.%s", key);
    const char *value = tablestring(L, c, arg, what, "code");
    const char *scheme = tablestring(L, c, arg, what, "scheme");
    const char *meaning = tablestring(L, c, arg, what, "meaning");
    if (!value || !scheme || !meaning)
        luaL_argerror(L, arg, lua_pushfstring(L, "opts.%s: needs code, scheme and meaning (e.g. {code = \"36118008\", "
                                                 "scheme = \"SCT\", meaning = \"Pneumothorax\"})", key));
    code->value = value;
    code->scheme = scheme;
    code->meaning = meaning;
}

/* package.loaded["lpnx.core"].version, pushed (or "unknown"). */
static const char *lpnx_version(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    const char *v = NULL;
    if (lua_getfield(L, -1, "lpnx.core") == LUA_TTABLE && lua_getfield(L, -1, "version") == LUA_TSTRING)
        v = lua_tostring(L, -1);
    else
        v = lua_pushliteral(L, "unknown");
    return v;
}

static const char *const SEG_OPTION_KEYS[] = {
    "label", "description", "category", "type", "algorithm_name", "algorithm_version", "color",
    "series_description", "series_number", "instance_number", "series_instance_uid", "sop_instance_uid",
    "content_label", "content_description", "content_creator", "manufacturer", "model_name",
    "device_serial_number", NULL};

static void setstring(lua_State *L, int t, const char *key, const char *v) {
    if (!v || !*v) return;
    lua_pushstring(L, v);
    lua_setfield(L, t, key);
}

/* The uids table of a written derived object, pushed: its UIDs (empty
 * ones left out) and warnings = {lines}, what the source had that could
 * not be copied as it was. */
static void pushuids(lua_State *L, const lpnx_dicom_uids *uids, const char *warnings) {
    lua_createtable(L, 0, 6);
    int r = lua_gettop(L);
    setstring(L, r, "sop_class_uid", uids->sop_class_uid);
    setstring(L, r, "sop_instance_uid", uids->sop_instance_uid);
    setstring(L, r, "study_instance_uid", uids->study_instance_uid);
    setstring(L, r, "series_instance_uid", uids->series_instance_uid);
    setstring(L, r, "frame_of_reference_uid", uids->frame_of_reference_uid);
    lua_createtable(L, 0, 0);
    int nwarn = 0;
    for (const char *line = warnings; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        lua_pushlstring(L, line, len);
        lua_rawseti(L, -2, ++nwarn);
        line += len + (end ? 1 : 0);
    }
    lua_setfield(L, r, "warnings");
}

/* The source image's meta table at arg (as lpnx.dicom.read returns it)
 * into *s: the UIDs a derived object (object, "a segmentation") needs,
 * the patient, study, frame of reference, orientation and lossy history
 * it copies, the pixel spacing. Strings stay on the stack (the caller has
 * made room); a missing UID or a value of the wrong type raises. */
static void tosource(lua_State *L, int arg, lpnx_seg_source *s, const char *object) {
    memset(s, 0, sizeof *s);
    const char *what = "source_meta";
    s->sop_class_uid = tablestring(L, arg, arg, what, "sop_class_uid");
    s->sop_instance_uid = tablestring(L, arg, arg, what, "sop_instance_uid");
    s->study_instance_uid = tablestring(L, arg, arg, what, "study_instance_uid");
    s->series_instance_uid = tablestring(L, arg, arg, what, "series_instance_uid");
    static const char *const required[] = {"sop_class_uid", "sop_instance_uid", "study_instance_uid",
                                           "series_instance_uid"};
    const char *given[] = {s->sop_class_uid, s->sop_instance_uid, s->study_instance_uid, s->series_instance_uid};
    for (int k = 0; k < 4; k++)
        if (!given[k] || !*given[k])
            luaL_argerror(L, arg, lua_pushfstring(L, "source_meta.%s is missing: %s references its source image "
                                                     "by SOP class, SOP instance, study and series UID "
                                                     "(lpnx.dicom.read returns them)", required[k], object));
    s->frame_of_reference_uid = tablestring(L, arg, arg, what, "frame_of_reference_uid");
    s->patient_name = tablestring(L, arg, arg, what, "patient_name");
    s->patient_id = tablestring(L, arg, arg, what, "patient_id");
    s->patient_birth_date = tablestring(L, arg, arg, what, "patient_birth_date");
    s->patient_sex = tablestring(L, arg, arg, what, "patient_sex");
    s->patient_age = tablestring(L, arg, arg, what, "patient_age");
    s->study_date = tablestring(L, arg, arg, what, "study_date");
    s->study_time = tablestring(L, arg, arg, what, "study_time");
    s->study_id = tablestring(L, arg, arg, what, "study_id");
    s->accession_number = tablestring(L, arg, arg, what, "accession_number");
    s->referring_physician_name = tablestring(L, arg, arg, what, "referring_physician_name");
    s->study_description = tablestring(L, arg, arg, what, "study_description");
    s->specific_character_set = tablestring(L, arg, arg, what, "specific_character_set");
    s->patient_orientation = tablestring(L, arg, arg, what, "patient_orientation");
    s->lossy_image_compression = tablestring(L, arg, arg, what, "lossy_image_compression");
    s->lossy_image_compression_ratio = tablestring(L, arg, arg, what, "lossy_image_compression_ratio");
    s->lossy_image_compression_method = tablestring(L, arg, arg, what, "lossy_image_compression_method");
    if (!s->lossy_image_compression) {
        /* a file stored with a lossy transfer syntax but without the attribute */
        static const char *const lossy[][2] = {{"1.2.840.10008.1.2.4.50", "ISO_10918_1"},
                                               {"1.2.840.10008.1.2.4.51", "ISO_10918_1"},
                                               {"1.2.840.10008.1.2.4.81", "ISO_14495_1"},
                                               {"1.2.840.10008.1.2.4.91", "ISO_15444_1"}};
        const char *ts = tablestring(L, arg, arg, what, "transfer_syntax");
        for (size_t k = 0; ts && k < sizeof lossy / sizeof *lossy; k++) {
            if (strcmp(ts, lossy[k][0]) == 0) {
                s->lossy_image_compression = "01";
                if (!s->lossy_image_compression_method) s->lossy_image_compression_method = lossy[k][1];
            }
        }
    }
    /* Pixel Measures only from a true PixelSpacing, not a detector's */
    lua_getfield(L, arg, "pixel_spacing_from_imager");
    int from_imager = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!from_imager) s->has_pixel_spacing = tablepair(L, arg, arg, what, "pixel_spacing", s->pixel_spacing);
}

/* write_seg(path, mask (H,W) | (1,H,W) of 0/1, source_meta [, opts]) -> uids */
static int l_write_seg(lua_State *L) {
    char err[1024], shape[160];
    const char *path = luaL_checkstring(L, 1);
    lpnx_Tensor *t = lpnx_checktensor(L, 2);
    if (!t->storage) return luaL_argerror(L, 2, "tensor was closed");
    if (!lua_istable(L, 3))
        return luaL_argerror(L, 3, lua_pushfstring(L, "expected the source image's meta table (as lpnx.dicom.read "
                                                      "returns it), got %s", luaL_typename(L, 3)));
    int opts = 0;
    if (!lua_isnoneornil(L, 4)) {
        if (!lua_istable(L, 4))
            return luaL_argerror(L, 4, lua_pushfstring(L, "expected a table of options, got %s", luaL_typename(L, 4)));
        opts = 4;
        lpnx_checkkeys(L, 4, SEG_OPTION_KEYS);
    }
    lua_settop(L, 4);

    /* the mask: (H,W) or (1,H,W), every value 0 or 1 */
    int ok = (t->ndim == 2) || (t->ndim == 3 && t->size[0] == 1);
    int64_t rows = ok ? t->size[t->ndim - 2] : 0, columns = ok ? t->size[t->ndim - 1] : 0;
    if (!ok || rows < 1 || columns < 1 || rows > 65535 || columns > 65535) {
        lpnx_shape_str(shape, sizeof shape, t->ndim, t->size);
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected a mask (H,W) or (1,H,W) with H and W in 1..65535, "
                                                      "got (%s)", shape));
    }
    int src_rows = tablesize(L, 3, 3, "source_meta", "rows");
    int src_columns = tablesize(L, 3, 3, "source_meta", "columns");
    if ((src_rows && src_rows != rows) || (src_columns && src_columns != columns))
        return luaL_argerror(L, 2, lua_pushfstring(L, "mask is %dx%d but the source image is %dx%d (rows x columns)",
                                                   (int)rows, (int)columns, src_rows ? src_rows : (int)rows,
                                                   src_columns ? src_columns : (int)columns));
    t = lpnx_checkcontiguous(L, 2); /* may push a copy (slot 5) */
    const float *src = lpnx_tensor_data(t);
    size_t n = (size_t)rows * (size_t)columns;
    unsigned char *mask = lua_newuserdatauv(L, n, 0); /* (rows, columns), Lua-owned */
    for (size_t i = 0; i < n; i++) {
        float v = src[i];
        if (v != 0.0f && v != 1.0f)
            return luaL_argerror(L, 2, lua_pushfstring(L, "mask holds %s at row %d, column %d; expected 0 or 1 "
                                                          "(threshold probabilities first)",
                                                       isnan(v) ? "nan" : lua_pushfstring(L, "%f", (double)v),
                                                       (int)(i / (size_t)columns) + 1, (int)(i % (size_t)columns) + 1));
        mask[i] = v == 1.0f;
    }

    luaL_checkstack(L, 80, "lpnx.dicom.write_seg");
    lpnx_seg_source s;
    tosource(L, 3, &s, "a segmentation");
    s.rows = (int)rows;
    s.columns = (int)columns;

    lpnx_seg_options o;
    lpnx_dicom_seg_defaults(&o);
    o.algorithm_version = o.software_versions = lpnx_version(L);
    if (opts) {
        const char *v;
        const char *what = "opts";
#define OPT(field, key) \
    if ((v = tablestring(L, opts, 4, what, key)) != NULL) o.field = v
        OPT(segment_label, "label");
        OPT(segment_description, "description");
        OPT(algorithm_name, "algorithm_name");
        OPT(algorithm_version, "algorithm_version");
        OPT(series_description, "series_description");
        OPT(series_number, "series_number");
        OPT(instance_number, "instance_number");
        OPT(series_instance_uid, "series_instance_uid");
        OPT(sop_instance_uid, "sop_instance_uid");
        OPT(content_label, "content_label");
        OPT(content_description, "content_description");
        OPT(content_creator, "content_creator");
        OPT(manufacturer, "manufacturer");
        OPT(model_name, "model_name");
        OPT(device_serial_number, "device_serial_number");
#undef OPT
        tablecode(L, opts, 4, "category", &o.category);
        tablecode(L, opts, 4, "type", &o.type);
        if (lua_getfield(L, opts, "color") != LUA_TNIL) {
            if (!lua_istable(L, -1))
                return luaL_argerror(L, 4, lua_pushfstring(L, "opts.color: expected {r, g, b} in [0, 1], got %s",
                                                           luaL_typename(L, -1)));
            for (int k = 0; k < 3; k++) {
                lua_rawgeti(L, -1, k + 1);
                int isnum = 0;
                double c = lua_tonumberx(L, -1, &isnum);
                if (!isnum || !(c >= 0 && c <= 1))
                    return luaL_argerror(L, 4, lua_pushfstring(L, "opts.color[%d]: expected a number in [0, 1], "
                                                                  "got %s", k + 1,
                                                               isnum ? lua_tostring(L, -1) : luaL_typename(L, -1)));
                o.color[k] = c;
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }

    lpnx_seg_uids uids;
    char warnings[2048];
    if (lpnx_dicom_seg_write(path, mask, (int)rows, (int)columns, &s, &o, &uids, warnings, sizeof warnings, err,
                             sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.write_seg: %s: %s", path, err);
    pushuids(L, &uids, warnings);
    return 1;
}

/* {code = , scheme = , meaning = } or nothing when the code is empty */
static void setcode(lua_State *L, int t, const char *key, const lpnx_seg_code *c) {
    if (!c->value && !c->scheme && !c->meaning) return;
    lua_createtable(L, 0, 3);
    setstring(L, lua_gettop(L), "code", c->value);
    setstring(L, lua_gettop(L), "scheme", c->scheme);
    setstring(L, lua_gettop(L), "meaning", c->meaning);
    lua_setfield(L, t, key);
}

/* The info table of a read segmentation, pushed. */
static void pushseginfo(lua_State *L, const lpnx_seg_info *info, const lpnx_seg_segment *chosen, int frames) {
    lua_createtable(L, 0, 32);
    int t = lua_gettop(L);
    setinteger(L, t, "rows", info->rows);
    setinteger(L, t, "columns", info->columns);
    setinteger(L, t, "number_of_frames", info->number_of_frames);
    setinteger(L, t, "max_fractional_value", info->max_fractional_value);
    for (int i = 0; i < LPNX_SEG_NSTRINGS; i++) setstring(L, t, info->strings[i].key, info->strings[i].value);
    if (info->has_pixel_spacing) setpair(L, t, "pixel_spacing", info->pixel_spacing);
    lua_createtable(L, info->nsegments, 0);
    for (int i = 0; i < info->nsegments; i++) {
        const lpnx_seg_segment *g = &info->segments[i];
        lua_createtable(L, 0, 10);
        int e = lua_gettop(L);
        setinteger(L, e, "number", g->number);
        setinteger(L, e, "frames", g->frames);
        setstring(L, e, "label", g->label);
        setstring(L, e, "description", g->description);
        setstring(L, e, "algorithm_type", g->algorithm_type);
        setstring(L, e, "algorithm_name", g->algorithm_name);
        setcode(L, e, "category", &g->category);
        setcode(L, e, "type", &g->type);
        if (g->has_color) {
            lua_createtable(L, 3, 0);
            for (int k = 0; k < 3; k++) {
                lua_pushnumber(L, g->color[k]);
                lua_rawseti(L, -2, k + 1);
            }
            lua_setfield(L, e, "color");
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, t, "segments");
    lua_createtable(L, info->nreferences, 0);
    for (int i = 0; i < info->nreferences; i++) {
        const lpnx_seg_reference *r = &info->references[i];
        lua_createtable(L, 0, 3);
        setstring(L, lua_gettop(L), "sop_class_uid", r->sop_class_uid);
        setstring(L, lua_gettop(L), "sop_instance_uid", r->sop_instance_uid);
        setstring(L, lua_gettop(L), "series_instance_uid", r->series_instance_uid);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, t, "references");
    setinteger(L, t, "segment", chosen->number);
    setinteger(L, t, "frames", frames);
    setstring(L, t, "segment_label", chosen->label);
}

/* read_seg(path [, {segment = n}]) -> mask (F,H,W), info */
static int l_read_seg(lua_State *L) {
    char err[1024];
    const char *path = luaL_checkstring(L, 1);
    lua_Integer number = 0; /* 0: the first segment */
    if (!lua_isnoneornil(L, 2)) {
        if (!lua_istable(L, 2))
            return luaL_argerror(L, 2, lua_pushfstring(L, "expected a table of options, got %s", luaL_typename(L, 2)));
        static const char *const keys[] = {"segment", NULL};
        lpnx_checkkeys(L, 2, keys);
        if (lua_getfield(L, 2, "segment") != LUA_TNIL) {
            int isint = 0;
            number = lua_tointegerx(L, -1, &isint);
            if (!isint || number < 1 || number > 65535)
                return luaL_argerror(L, 2, lua_pushfstring(L, "segment must be an integer in 1..65535, got %s",
                                                           luaL_tolstring(L, -1, NULL)));
        }
        lua_pop(L, 1);
    }
    handle *h = pushhandle(L);
    if (lpnx_dicom_seg_open(&h->s, path, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.read_seg: %s: %s", path, err);
    const lpnx_seg_info *info = lpnx_dicom_seg_info_of(h->s);
    const lpnx_seg_segment *chosen = number == 0 ? &info->segments[0] : NULL;
    for (int i = 0; i < info->nsegments && !chosen; i++)
        if (info->segments[i].number == number) chosen = &info->segments[i];
    if (!chosen) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0; i < info->nsegments; i++) {
            if (i) luaL_addstring(&b, ", ");
            lua_pushinteger(L, info->segments[i].number);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        return luaL_error(L, "lpnx.dicom.read_seg: %s: no segment %d (the file has segment%s %s)", path, (int)number,
                          info->nsegments == 1 ? "" : "s", lua_tostring(L, -1));
    }
    int frames = lpnx_dicom_seg_frames(h->s, chosen->number);
    int64_t size[3] = {frames > 0 ? frames : 1, info->rows, info->columns};
    lpnx_Tensor *t = lpnx_pushnew(L, 3, size, 1); /* (F, H, W); zeros for a segment without frames */
    lpnx_dicom_seg_mask(h->s, chosen->number, lpnx_tensor_data(t));
    pushseginfo(L, info, chosen, frames);
    closehandle(h); /* done early; the collector would do it too */
    return 2;
}

/* ---- Structured reports -------------------------------------------- */

static const char *const SR_OPTION_KEYS[] = {
    "finding", "probability", "area_cm2", "area_source", "algorithm_name", "algorithm_version", "seg",
    "sop_instance_uid", "series_instance_uid", "series_number", "instance_number", "series_description",
    "manufacturer", NULL};

/* opts[key] as a number; required or NULL-able through has. */
static double tablenumber(lua_State *L, int t, const char *key, int required, int *has) {
    int type = lua_getfield(L, t, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (type == LUA_TNIL && !required) {
        if (has) *has = 0;
        return 0;
    }
    if (type != LUA_TNUMBER)
        luaL_argerror(L, 3, lua_pushfstring(L, "opts.%s: expected a number, got %s", key, lua_typename(L, type)));
    if (has) *has = 1;
    return v;
}

/* write_sr(path, source_meta, opts) -> uids (+ warnings = {lines}) */
static int l_write_sr(lua_State *L) {
    char err[1024];
    const char *path = luaL_checkstring(L, 1);
    if (!lua_istable(L, 2))
        return luaL_argerror(L, 2, lua_pushfstring(L, "expected the source image's meta table (as lpnx.dicom.read "
                                                      "returns it), got %s", luaL_typename(L, 2)));
    if (!lua_istable(L, 3))
        return luaL_argerror(L, 3, lua_pushfstring(L, "expected a table of options (finding, probability, "
                                                      "algorithm_name, algorithm_version, ...), got %s",
                                                   luaL_typename(L, 3)));
    lpnx_checkkeys(L, 3, SR_OPTION_KEYS);
    lua_settop(L, 3);
    luaL_checkstack(L, 80, "lpnx.dicom.write_sr");
    lpnx_seg_source s;
    tosource(L, 2, &s, "a report");

    lpnx_sr_options o;
    memset(&o, 0, sizeof o);
    int type = lua_getfield(L, 3, "finding");
    if (type != LUA_TBOOLEAN)
        return luaL_argerror(L, 3, lua_pushfstring(L, "opts.finding: expected true (pneumothorax present) or false "
                                                      "(absent), got %s", lua_typename(L, type)));
    o.finding = lua_toboolean(L, -1);
    lua_pop(L, 1);
    o.probability = tablenumber(L, 3, "probability", 1, NULL);
    if (!(o.probability >= 0 && o.probability <= 1))
        return luaL_argerror(L, 3, lua_pushfstring(L, "opts.probability: expected a number in [0, 1], got %f",
                                                   o.probability));
    o.area_cm2 = tablenumber(L, 3, "area_cm2", 0, &o.has_area);
    if (o.has_area && !(isfinite(o.area_cm2) && o.area_cm2 >= 0))
        return luaL_argerror(L, 3, lua_pushfstring(L, "opts.area_cm2: expected a finite number >= 0, got %f",
                                                   o.area_cm2));
    const char *what = "opts";
    o.algorithm_name = tablestring(L, 3, 3, what, "algorithm_name");
    o.algorithm_version = tablestring(L, 3, 3, what, "algorithm_version");
    if (!o.algorithm_name || !o.algorithm_version)
        return luaL_argerror(L, 3, lua_pushfstring(L, "opts.%s is missing: the report names the algorithm that "
                                                      "made it", o.algorithm_name ? "algorithm_version"
                                                                                  : "algorithm_name"));
    o.area_source = tablestring(L, 3, 3, what, "area_source");
    o.sop_instance_uid = tablestring(L, 3, 3, what, "sop_instance_uid");
    o.series_instance_uid = tablestring(L, 3, 3, what, "series_instance_uid");
    o.series_number = tablestring(L, 3, 3, what, "series_number");
    o.instance_number = tablestring(L, 3, 3, what, "instance_number");
    o.series_description = tablestring(L, 3, 3, what, "series_description");
    o.manufacturer = tablestring(L, 3, 3, what, "manufacturer");
    if (lua_getfield(L, 3, "seg") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            return luaL_argerror(L, 3, lua_pushfstring(L, "opts.seg: expected {sop_class_uid =, sop_instance_uid =, "
                                                          "series_instance_uid =} (write_seg returns it), got %s",
                                                       luaL_typename(L, -1)));
        int seg = lua_gettop(L);
        static const char *const keys[] = {"sop_class_uid", "sop_instance_uid", "series_instance_uid"};
        const char **out[] = {&o.seg_sop_class_uid, &o.seg_sop_instance_uid, &o.seg_series_instance_uid};
        for (int k = 0; k < 3; k++) {
            *out[k] = tablestring(L, seg, 3, "opts.seg", keys[k]);
            if (!*out[k])
                return luaL_argerror(L, 3, lua_pushfstring(L, "opts.seg.%s is missing: the report references the "
                                                              "segmentation by SOP class, SOP instance and series "
                                                              "UID (write_seg returns them)", keys[k]));
        }
    }

    lpnx_dicom_uids uids;
    char warnings[2048];
    if (lpnx_dicom_sr_write(path, &s, &o, &uids, warnings, sizeof warnings, err, sizeof err) != 0)
        return luaL_error(L, "lpnx.dicom.write_sr: %s: %s", path, err);
    pushuids(L, &uids, warnings);
    return 1;
}

/* derive_uid(s1 [, s2, ...]) -> UID: one or more strings, each named by
 * its position when it is missing or not a string (numbers are refused:
 * their text would depend on how they were written). */
static int l_derive_uid(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0) return luaL_argerror(L, 1, "expected one or more strings, got none");
    const char **parts = lua_newuserdatauv(L, (size_t)n * sizeof *parts, 0); /* (n), Lua-owned */
    size_t *lens = lua_newuserdatauv(L, (size_t)n * sizeof *lens, 0);        /* (n) */
    for (int i = 1; i <= n; i++) {
        if (lua_type(L, i) != LUA_TSTRING)
            return luaL_argerror(L, i, lua_pushfstring(L, "expected a string, got %s", luaL_typename(L, i)));
        parts[i - 1] = lua_tolstring(L, i, &lens[i - 1]);
    }
    char uid[LPNX_UID_MAX];
    lpnx_derive_uid(uid, parts, lens, (size_t)n);
    lua_pushstring(L, uid);
    return 1;
}

static const luaL_Reg functions[] = {{"read", l_read},         {"write", l_write},
                                     {"write_seg", l_write_seg}, {"read_seg", l_read_seg},
                                     {"write_sr", l_write_sr},     {"derive_uid", l_derive_uid},
                                     {NULL, NULL}};

void lpnx_open_dicom(lua_State *L) {
    lpnx_gcmeta(L, HANDLE_MT, handle_gc);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "dicom");
}
