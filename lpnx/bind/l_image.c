/* lpnx.image: image operations for preprocessing, augmentation and review.
 * An image is a float tensor (C,H,W), (H,W) or, where noted, (N,C,H,W);
 * every function returns new tensors of the input's rank and never
 * changes its inputs. Random functions take an optional lpnx.Generator
 * (the default one otherwise), so results depend only on its state.
 *
 *   resize(t, h, w [, mode = "bilinear"])     nearest | bilinear | area; (N,C,H,W) too
 *   hflip(t)  vflip(t)                         (N,C,H,W) too
 *   affine(t [, {angle, scale, shift = {dx, dy}, center = {cx, cy}, mode, border, value}])
 *   remap(t, field [, {mode, border, value}])  field (2,H,W): dx, dy in pixels
 *   elastic_field(h, w, alpha, sigma [, generator]) -> (2,H,W)
 *   elastic(t, alpha, sigma [, generator] [, {mode, border, value}])
 *   gaussian_blur(t, sigma)
 *   brightness_contrast(t, brightness, contrast)   gamma(t, g)
 *   gaussian_noise(t, std [, generator])
 *   clahe(t [, {clip = 2, tiles = {8, 8}, bins = 256}])   (H,W) or (1,H,W) in [0, 1]
 *   components(mask [, {connectivity = 8}]) -> labels, areas
 *   remove_small(mask, min_area [, {connectivity = 8}]) -> mask
 *   overlay(image, mask [, {color, alpha, contour, contour_color, contour_width}]) -> (3,H,W)
 *   normalize(t, mean, std)   to_rgb(t)
 *   present(t, {slope, intercept, modality_lut, voi, center, width, low, high, voi_lut, invert})
 *   quantiles(t, {q, ...} [, {exclude_extremes = false}]) -> {v, ...}, m
 *
 * mode is "bilinear" (default) or "nearest"; border is "constant"
 * (default, reading value, default 0), "replicate" or "reflect"
 * (OpenCV's BORDER_REFLECT_101). Positions follow OpenCV: pixel (row i,
 * column j), 0-based, has its centre at x = j, y = i.
 *
 * lpnx.image.ref holds the oracles of lpnx/ref/image_ref.c under the same
 * names and signatures: resize, affine, remap, elastic_field, elastic,
 * gaussian_blur, clahe, components, remove_small, overlay. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../image/image.h"
#include "../image/present.h"
#include "../ops/layers.h"
#include "../ref/ref_table.h"
#include "bind.h"

/* Bound for sizes given as numbers. */
#define MAX_SIZE INT64_C(2147483647)
/* Largest plane for components: labels stay exact in float32. */
#define MAX_PLANE (INT64_C(1) << 24)
/* Largest blur sigma: the kernel has 8 sigma + 1 taps. */
#define MAX_SIGMA 1000.0
/* Largest CLAHE table, tiles_x * tiles_y * bins entries. */
#define MAX_CLAHE_TABLE (INT64_C(1) << 26)

/* ---- argument helpers ------------------------------------------------ */

/* A number as Lua users write it ("2", "0.5", "inf"), pushed on the stack. */
static const char *num(lua_State *L, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.14g", v);
    return lua_pushstring(L, buf);
}

/* a * b for sizes >= 0, saturating: an empty tensor may have other sizes
 * whose product does not fit. */
static int64_t mul(int64_t a, int64_t b) {
    return a != 0 && b > INT64_MAX / a ? INT64_MAX : a * b;
}

/* An image argument, contiguous, seen as planes of (H,W). */
typedef struct {
    lpnx_Tensor *t;
    int64_t planes, H, W;
} image_arg;

static const char *ranks_text(int maxdim) {
    return maxdim == 4 ? "(H,W), (C,H,W) or (N,C,H,W)" : "(H,W) or (C,H,W)";
}

/* The tensor at arg with 2..maxdim dims; a contiguous copy may be pushed. */
static image_arg checkimage(lua_State *L, int arg, int maxdim) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, arg);
    if (t->ndim < 2 || t->ndim > maxdim)
        luaL_argerror(
            L, arg,
            lua_pushfstring(L, "expected an image %s, got %s", ranks_text(maxdim), lpnx_shape_of(s, sizeof s, t)));
    t = lpnx_checkcontiguous(L, arg);
    image_arg a = {t, 1, t->size[t->ndim - 2], t->size[t->ndim - 1]};
    for (int d = 0; d < t->ndim - 2; d++) a.planes = mul(a.planes, t->size[d]);
    return a;
}

static int is_empty(const image_arg *a) { return a->planes == 0 || a->H == 0 || a->W == 0; }

static void checknonempty(lua_State *L, int arg, const image_arg *a) {
    char s[160];
    if (a->H < 1 || a->W < 1)
        luaL_argerror(
            L, arg,
            lua_pushfstring(L, "expected an image of at least 1x1 pixels, got %s", lpnx_shape_of(s, sizeof s, a->t)));
}

/* A single-channel image (H,W) or (1,H,W) at arg, contiguous. */
static image_arg checkplane(lua_State *L, int arg, const char *name) {
    char s[160];
    lpnx_Tensor *t = lpnx_checklive(L, arg);
    if (!(t->ndim == 2 || (t->ndim == 3 && t->size[0] == 1)))
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected %s (H,W) or (1,H,W), got %s", name, lpnx_shape_of(s, sizeof s, t)));
    t = lpnx_checkcontiguous(L, arg);
    image_arg a = {t, 1, t->size[t->ndim - 2], t->size[t->ndim - 1]};
    return a;
}

/* An integer in [lo, hi] at arg; what names it in the message. */
static int64_t checkint(lua_State *L, int arg, const char *what, int64_t lo, int64_t hi) {
    int ok;
    lua_Integer v = lua_tointegerx(L, arg, &ok);
    if (!ok) {
        const char *got = lua_type(L, arg) == LUA_TNUMBER ? lua_tostring(L, arg) : luaL_typename(L, arg);
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", what, got));
    }
    if (v < lo || v > hi)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be in [%I, %I], got %I", what, (lua_Integer)lo,
                                              (lua_Integer)hi, v));
    return (int64_t)v;
}

static double checkfinite(lua_State *L, int arg, const char *what) {
    if (lua_type(L, arg) != LUA_TNUMBER)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a number, got %s", what, luaL_typename(L, arg)));
    double v = lua_tonumber(L, arg);
    if (!isfinite(v)) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a finite number, got %s", what, num(L, v)));
    return v;
}

static double checksigma(lua_State *L, int arg) {
    double sigma = checkfinite(L, arg, "sigma");
    if (sigma < 0 || sigma > MAX_SIGMA)
        luaL_argerror(L, arg, lua_pushfstring(L, "sigma must be in [0, %s], got %s", num(L, MAX_SIGMA), num(L, sigma)));
    return sigma;
}

static float *data(const lpnx_Tensor *t) { return lpnx_tensor_data(t); }

/* Lua-owned scratch memory of n elements of size bytes (at least one
 * byte), left on the stack. */
static void *pushscratch(lua_State *L, int64_t n, size_t size) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / size) luaL_error(L, "not enough memory for %I scratch values", (lua_Integer)n);
    return lua_newuserdatauv(L, n ? (size_t)n * size : 1, 0);
}

static void check_status(lua_State *L, lpnx_status st, const char *what) {
    if (st == LPNX_ENOMEM) luaL_error(L, "%s: not enough memory", what);
    if (st != LPNX_OK) luaL_error(L, "%s: %s", what, lpnx_strerror(st));
}

/* ---- option tables --------------------------------------------------- */

/* Raises unless arg is absent, nil or a table whose keys are all in keys. */
static void checkopts(lua_State *L, int arg, const char *const *keys) {
    if (lua_isnoneornil(L, arg)) return;
    if (!lua_istable(L, arg))
        luaL_argerror(L, arg, lua_pushfstring(L, "expected a table of options, got %s", luaL_typename(L, arg)));
    lpnx_checkkeys(L, arg, keys);
}

/* Pushes opts[key], or nil when there is no options table. */
static int getoption(lua_State *L, int arg, const char *key) {
    if (lua_isnoneornil(L, arg)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, arg, key);
}

static double optnumber(lua_State *L, int arg, const char *key, double def, int finite) {
    double v = def;
    int type = getoption(L, arg, key);
    if (type != LUA_TNIL) {
        if (type != LUA_TNUMBER)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a number, got %s", key, luaL_typename(L, -1)));
        v = lua_tonumber(L, -1);
        if (finite && !isfinite(v))
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a finite number, got %s", key, num(L, v)));
    }
    lua_pop(L, 1);
    return v;
}

static int64_t optint(lua_State *L, int arg, const char *key, int64_t def, int64_t lo, int64_t hi) {
    int64_t v = def;
    int type = getoption(L, arg, key), ok = 0;
    if (type != LUA_TNIL) {
        lua_Integer i = lua_tointegerx(L, -1, &ok);
        if (!ok || type != LUA_TNUMBER) {
            const char *got = type == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1);
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer, got %s", key, got));
        }
        if (i < lo || i > hi)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be in [%I, %I], got %I", key,
                                                  (lua_Integer)lo, (lua_Integer)hi, i));
        v = (int64_t)i;
    }
    lua_pop(L, 1);
    return v;
}

static int optboolean(lua_State *L, int arg, const char *key, int def) {
    int v = def, type = getoption(L, arg, key);
    if (type != LUA_TNIL) {
        if (type != LUA_TBOOLEAN)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a boolean, got %s", key, luaL_typename(L, -1)));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* opts[key] as a table of n finite numbers into v; returns 0 when absent.
 * what describes the expected value in the message. */
static int optnumbers(lua_State *L, int arg, const char *key, int n, double *v, const char *what) {
    int type = getoption(L, arg, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    int ok = type == LUA_TTABLE && luaL_len(L, -1) == n;
    for (int i = 0; ok && i < n; i++) {
        ok = lua_geti(L, -1, i + 1) == LUA_TNUMBER;
        if (ok) {
            v[i] = lua_tonumber(L, -1);
            ok = isfinite(v[i]);
        }
        lua_pop(L, 1);
    }
    if (!ok) luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be %s", key, what));
    lua_pop(L, 1);
    return 1;
}

/* opts[key] as one of names (index returned), def when absent. */
static int optchoice(lua_State *L, int arg, const char *key, const char *const *names, int def,
                     const char *expected) {
    int v = def, type = getoption(L, arg, key);
    if (type != LUA_TNIL) {
        v = -1;
        if (type == LUA_TSTRING)
            for (int i = 0; names[i] && v < 0; i++)
                if (strcmp(names[i], lua_tostring(L, -1)) == 0) v = i;
        if (v < 0) {
            const char *got = type == LUA_TSTRING ? lua_pushfstring(L, "\"%s\"", lua_tostring(L, -1))
                                                  : luaL_typename(L, -1);
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be %s, got %s", key, expected, got));
        }
    }
    lua_pop(L, 1);
    return v;
}

static const char *const SAMPLE_MODES[] = {"bilinear", "nearest", NULL};
static const char *const BORDERS[] = {"constant", "replicate", "reflect", NULL};

/* mode, border and value from the options table at arg. */
static lpnx_sampling optsampling(lua_State *L, int arg) {
    lpnx_sampling s;
    s.mode = optchoice(L, arg, "mode", SAMPLE_MODES, 0, "\"bilinear\" or \"nearest\"") == 1
                 ? LPNX_SAMPLE_NEAREST : LPNX_SAMPLE_BILINEAR;
    const int border = optchoice(L, arg, "border", BORDERS, 0, "\"constant\", \"replicate\" or \"reflect\"");
    s.border = border == 2 ? LPNX_BORDER_REFLECT : border == 1 ? LPNX_BORDER_REPLICATE : LPNX_BORDER_CONSTANT;
    s.value = (float)optnumber(L, arg, "value", 0, 0);
    return s;
}

/* ---- resize and flips ------------------------------------------------ */

static int image_resize(lua_State *L, int ref) {
    static const char *const modes[] = {"nearest", "bilinear", "area", NULL};
    image_arg a = checkimage(L, 1, 4);
    const int64_t Ho = checkint(L, 2, "output height", 1, MAX_SIZE);
    const int64_t Wo = checkint(L, 3, "output width", 1, MAX_SIZE);
    int mode = LPNX_RESIZE_BILINEAR;
    if (!lua_isnoneornil(L, 4)) {
        mode = -1;
        if (lua_type(L, 4) == LUA_TSTRING)
            for (int i = 0; modes[i] && mode < 0; i++)
                if (strcmp(modes[i], lua_tostring(L, 4)) == 0) mode = i;
        if (mode < 0) {
            const char *got = lua_type(L, 4) == LUA_TSTRING ? lua_pushfstring(L, "\"%s\"", lua_tostring(L, 4))
                                                            : luaL_typename(L, 4);
            luaL_argerror(L, 4, lua_pushfstring(L, "mode must be \"nearest\", \"bilinear\" or \"area\", got %s", got));
        }
    }
    checknonempty(L, 1, &a);
    int64_t size[LPNX_MAXDIM];
    memcpy(size, a.t->size, sizeof size);
    size[a.t->ndim - 2] = Ho;
    size[a.t->ndim - 1] = Wo;
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, size, 0);
    if (a.planes == 0) return 1;
    if (ref) {
        lpnx_oracles(L)->image_resize(data(out), data(a.t), a.planes, a.H, a.W, Ho, Wo, (lpnx_resize_mode)mode);
        return 1;
    }
    lpnx_status st = LPNX_OK;
    if (mode == LPNX_RESIZE_NEAREST)
        st = lpnx_upsample_nearest_forward(data(out), data(a.t), a.planes, a.H, a.W, Ho, Wo);
    else if (mode == LPNX_RESIZE_BILINEAR)
        st = lpnx_upsample_bilinear_forward(data(out), data(a.t), a.planes, a.H, a.W, Ho, Wo);
    else
        lpnx_image_resize_area(data(out), data(a.t), a.planes, a.H, a.W, Ho, Wo);
    check_status(L, st, "resize");
    return 1;
}

static int flip(lua_State *L, int vertical) {
    image_arg a = checkimage(L, 1, 4);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    if (is_empty(&a)) return 1;
    (vertical ? lpnx_image_vflip : lpnx_image_hflip)(data(out), data(a.t), a.planes, a.H, a.W);
    return 1;
}

static int l_hflip(lua_State *L) { return flip(L, 0); }
static int l_vflip(lua_State *L) { return flip(L, 1); }

/* ---- geometry -------------------------------------------------------- */

static int image_affine(lua_State *L, int ref) {
    static const char *const keys[] = {"angle", "scale", "shift", "center", "mode", "border", "value", NULL};
    image_arg a = checkimage(L, 1, 4);
    checkopts(L, 2, keys);
    const double angle = optnumber(L, 2, "angle", 0, 1);
    const double scale = optnumber(L, 2, "scale", 1, 1);
    if (!(scale > 0)) luaL_argerror(L, 2, lua_pushfstring(L, "option 'scale' must be positive, got %s", num(L, scale)));
    double shift[2] = {0, 0}, center[2] = {((double)a.W - 1) / 2, ((double)a.H - 1) / 2};
    optnumbers(L, 2, "shift", 2, shift, "a table of 2 finite numbers {dx, dy} (fractions of width and height)");
    optnumbers(L, 2, "center", 2, center, "a table of 2 finite numbers {cx, cy} (pixels)");
    const lpnx_sampling s = optsampling(L, 2);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    if (is_empty(&a)) return 1;
    if (ref) {
        lpnx_oracles(L)->image_affine(data(out), data(a.t), a.planes, a.H, a.W, angle, scale, shift[0], shift[1],
                                      center[0], center[1], s);
        return 1;
    }
    double m[6];
    lpnx_image_affine_matrix(m, angle, scale, shift[0], shift[1], center[0], center[1], a.H, a.W);
    lpnx_image_affine(data(out), data(a.t), a.planes, a.H, a.W, m, s);
    return 1;
}

static const char *const SAMPLING_KEYS[] = {"mode", "border", "value", NULL};

/* The (2,H,W) displacement field at arg for an image a, contiguous. */
static lpnx_Tensor *checkfield(lua_State *L, int arg, const image_arg *a) {
    char s1[160], s2[160], s3[160];
    lpnx_Tensor *f = lpnx_checklive(L, arg);
    if (f->ndim != 3 || f->size[0] != 2 || f->size[1] != a->H || f->size[2] != a->W) {
        const lpnx_Tensor want = {.ndim = 3, .size = {2, a->H, a->W}};
        luaL_argerror(L, arg,
                      lua_pushfstring(L, "expected field %s (dx, dy) to match the image %s, got %s",
                                      lpnx_shape_of(s1, sizeof s1, &want), lpnx_shape_of(s2, sizeof s2, a->t),
                                      lpnx_shape_of(s3, sizeof s3, f)));
    }
    return lpnx_checkcontiguous(L, arg);
}

static void remap_into(lua_State *L, lpnx_Tensor *out, const image_arg *a, const lpnx_Tensor *field, lpnx_sampling s, int ref) {
    if (is_empty(a)) return;
    (ref ? lpnx_oracles(L)->image_remap : lpnx_image_remap)(data(out), data(a->t), data(field), a->planes, a->H, a->W,
                                                            s);
}

static int image_remap(lua_State *L, int ref) {
    image_arg a = checkimage(L, 1, 4);
    lpnx_Tensor *field = checkfield(L, 2, &a);
    checkopts(L, 3, SAMPLING_KEYS);
    const lpnx_sampling s = optsampling(L, 3);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    remap_into(L, out, &a, field, s, ref);
    return 1;
}

/* Pushes a fresh elastic field (2,H,W) drawn from g. */
static lpnx_Tensor *push_field(lua_State *L, lpnx_rng *g, int64_t H, int64_t W, double alpha, double sigma,
                               int ref) {
    const int64_t size[3] = {2, H, W};
    lpnx_Tensor *field = lpnx_pushnew(L, 3, size, 0);
    if (H == 0 || W == 0) return field;
    lpnx_status st;
    if (ref) {
        st = lpnx_oracles(L)->image_elastic_field(data(field), g, H, W, alpha, sigma);
    } else {
        lpnx_Tensor *tmp = lpnx_pushnew(L, 3, size, 0);
        st = lpnx_image_elastic_field(data(field), data(tmp), g, H, W, alpha, sigma);
        lua_pop(L, 1);
    }
    check_status(L, st, "elastic_field");
    return field;
}

static int image_elastic_field(lua_State *L, int ref) {
    const int64_t H = checkint(L, 1, "height", 1, MAX_SIZE);
    const int64_t W = checkint(L, 2, "width", 1, MAX_SIZE);
    const double alpha = checkfinite(L, 3, "alpha");
    const double sigma = checksigma(L, 4);
    lpnx_rng *g = lpnx_optgenerator(L, 5);
    push_field(L, g, H, W, alpha, sigma, ref);
    return 1;
}

static int image_elastic(lua_State *L, int ref) {
    image_arg a = checkimage(L, 1, 4);
    const double alpha = checkfinite(L, 2, "alpha");
    const double sigma = checksigma(L, 3);
    int opts = 5;
    lpnx_rng *g;
    if (lua_istable(L, 4)) {
        opts = 4;
        g = lpnx_optgenerator(L, 5);
    } else {
        g = lpnx_optgenerator(L, 4);
    }
    checkopts(L, opts, SAMPLING_KEYS);
    const lpnx_sampling s = optsampling(L, opts);
    lpnx_Tensor *field = push_field(L, g, a.H, a.W, alpha, sigma, ref);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    remap_into(L, out, &a, field, s, ref);
    return 1;
}

/* ---- filters and intensity ------------------------------------------- */

static int image_gaussian_blur(lua_State *L, int ref) {
    image_arg a = checkimage(L, 1, 4);
    const double sigma = checksigma(L, 2);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    if (is_empty(&a)) return 1;
    if (ref) {
        check_status(L, lpnx_oracles(L)->image_gaussian_blur(data(out), data(a.t), a.planes, a.H, a.W, sigma),
                     "gaussian_blur");
        return 1;
    }
    lpnx_Tensor *tmp = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    check_status(L, lpnx_image_gaussian_blur(data(out), data(tmp), data(a.t), a.planes, a.H, a.W, sigma),
                 "gaussian_blur");
    lua_pop(L, 1);
    return 1;
}

static int l_brightness_contrast(lua_State *L) {
    image_arg a = checkimage(L, 1, 4);
    const double brightness = checkfinite(L, 2, "brightness");
    const double contrast = checkfinite(L, 3, "contrast");
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    lpnx_image_brightness_contrast(data(out), data(a.t), lpnx_tensor_numel(out), (float)brightness, (float)contrast);
    return 1;
}

static int l_gamma(lua_State *L) {
    image_arg a = checkimage(L, 1, 4);
    const double g = checkfinite(L, 2, "gamma");
    if (!(g > 0)) luaL_argerror(L, 2, lua_pushfstring(L, "gamma must be positive, got %s", num(L, g)));
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    lpnx_image_gamma(data(out), data(a.t), lpnx_tensor_numel(out), (float)g);
    return 1;
}

static int l_gaussian_noise(lua_State *L) {
    image_arg a = checkimage(L, 1, 4);
    const double std = checkfinite(L, 2, "std");
    if (std < 0) luaL_argerror(L, 2, lua_pushfstring(L, "std must be non-negative, got %s", num(L, std)));
    lpnx_rng *g = lpnx_optgenerator(L, 3);
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    lpnx_image_gaussian_noise(data(out), data(a.t), lpnx_tensor_numel(out), (float)std, g);
    return 1;
}

/* Per-channel values at arg: one number for every channel or an array of
 * C numbers, into v (C). */
static void checkchannels(lua_State *L, int arg, const char *what, int64_t C, float *v) {
    if (lua_type(L, arg) == LUA_TNUMBER) {
        const double x = checkfinite(L, arg, what);
        for (int64_t c = 0; c < C; c++) v[c] = (float)x;
        return;
    }
    if (!lua_istable(L, arg))
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s as a number or an array of %I numbers, got %s", what,
                                              (lua_Integer)C, luaL_typename(L, arg)));
    const lua_Integer n = luaL_len(L, arg);
    if (n != C)
        luaL_argerror(L, arg, lua_pushfstring(L, "expected %s to have %I values (one per channel), got %I", what,
                                              (lua_Integer)C, n));
    for (int64_t c = 0; c < C; c++) {
        const int type = lua_geti(L, arg, c + 1);
        const double x = lua_tonumber(L, -1);
        if (type != LUA_TNUMBER || !isfinite(x))
            luaL_argerror(L, arg, lua_pushfstring(L, "expected %s[%I] to be a finite number, got %s", what,
                                                  (lua_Integer)(c + 1),
                                                  type == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1)));
        v[c] = (float)x;
        lua_pop(L, 1);
    }
}

static int l_normalize(lua_State *L) {
    image_arg a = checkimage(L, 1, 4);
    const int64_t C = a.t->ndim == 2 ? 1 : a.t->size[a.t->ndim - 3];
    const int64_t N = a.t->ndim == 4 ? a.t->size[0] : 1;
    float *mean = pushscratch(L, 2 * C, sizeof(float)); /* (C) means, then (C) stds */
    float *std = mean + C;
    checkchannels(L, 2, "mean", C, mean);
    checkchannels(L, 3, "std", C, std);
    for (int64_t c = 0; c < C; c++)
        if (std[c] == 0)
            luaL_argerror(L, 3, lua_pushfstring(L, "std must be non-zero, got 0 for channel %I", (lua_Integer)(c + 1)));
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    if (!is_empty(&a)) lpnx_image_normalize(data(out), data(a.t), N, C, a.H * a.W, mean, std);
    return 1;
}

static int l_to_rgb(lua_State *L) {
    char s[160];
    image_arg a = checkimage(L, 1, 4);
    const int nd = a.t->ndim;
    const int64_t C = nd == 2 ? 1 : a.t->size[nd - 3];
    if (C != 1 && C != 3)
        luaL_argerror(L, 1,
                      lua_pushfstring(L, "expected 1 channel (or 3, returned as a copy), got %s",
                                      lpnx_shape_of(s, sizeof s, a.t)));
    int64_t size[LPNX_MAXDIM];
    int ndim = nd == 2 ? 3 : nd;
    if (nd == 2) {
        size[0] = 3;
        size[1] = a.H;
        size[2] = a.W;
    } else {
        memcpy(size, a.t->size, sizeof size);
        size[nd - 3] = 3;
    }
    lpnx_Tensor *out = lpnx_pushnew(L, ndim, size, 0);
    if (is_empty(&a)) return 1;
    if (C == 3) memcpy(data(out), data(a.t), lpnx_tensor_numel(out) * sizeof(float));
    else lpnx_image_to_rgb(data(out), data(a.t), a.planes, a.H * a.W);
    return 1;
}

/* ---- CLAHE ----------------------------------------------------------- */

static int image_clahe(lua_State *L, int ref) {
    static const char *const keys[] = {"clip", "tiles", "bins", NULL};
    image_arg a = checkplane(L, 1, "a single-channel image");
    checkopts(L, 2, keys);
    lpnx_clahe_opts o;
    o.clip = optnumber(L, 2, "clip", 2.0, 0);
    if (isnan(o.clip)) luaL_argerror(L, 2, "option 'clip' must be a number, got nan");
    double tiles[2] = {8, 8};
    optnumbers(L, 2, "tiles", 2, tiles, "a table of 2 integers {tiles_x, tiles_y} in [1, 1024]");
    for (int i = 0; i < 2; i++)
        if (tiles[i] != floor(tiles[i]) || tiles[i] < 1 || tiles[i] > 1024)
            luaL_argerror(L, 2, lua_pushfstring(L, "option 'tiles' must be a table of 2 integers {tiles_x, tiles_y} "
                                                   "in [1, 1024], got %s", num(L, tiles[i])));
    o.tiles_x = (int64_t)tiles[0];
    o.tiles_y = (int64_t)tiles[1];
    o.bins = optint(L, 2, "bins", 256, 2, 65536);
    const int64_t entries = o.tiles_x * o.tiles_y * o.bins;
    if (entries > MAX_CLAHE_TABLE)
        luaL_argerror(L, 2, lua_pushfstring(L, "expected tiles_x * tiles_y * bins of at most %I, got %I",
                                            (lua_Integer)MAX_CLAHE_TABLE, (lua_Integer)entries));
    checknonempty(L, 1, &a);
    if (mul(a.H + o.tiles_y, a.W + o.tiles_x) > INT32_MAX)
        luaL_argerror(L, 1, lua_pushfstring(L, "expected an image of fewer than 2^31 pixels, got %Ix%I",
                                            (lua_Integer)a.H, (lua_Integer)a.W));
    lpnx_Tensor *out = lpnx_pushnew(L, a.t->ndim, a.t->size, 0);
    if (ref) {
        check_status(L, lpnx_oracles(L)->image_clahe(data(out), data(a.t), a.H, a.W, o), "clahe");
        return 1;
    }
    float *lut = pushscratch(L, entries, sizeof(float));      /* (tiles_y*tiles_x, bins) */
    int32_t *hist = pushscratch(L, entries, sizeof(int32_t)); /* (tiles_y*tiles_x, bins) */
    lpnx_image_clahe(data(out), lut, hist, data(a.t), a.H, a.W, o);
    lua_pop(L, 2);
    return 1;
}

/* ---- components ------------------------------------------------------ */

static int optconnectivity(lua_State *L, int arg) {
    static const char *const keys[] = {"connectivity", NULL};
    checkopts(L, arg, keys);
    const int64_t c = optint(L, arg, "connectivity", 8, 0, 8);
    if (c != 4 && c != 8)
        luaL_argerror(L, arg, lua_pushfstring(L, "option 'connectivity' must be 4 or 8, got %I", (lua_Integer)c));
    return (int)c;
}

static image_arg checkmask(lua_State *L, int arg) {
    image_arg m = checkplane(L, arg, "mask");
    if (mul(m.H, m.W) > MAX_PLANE)
        luaL_argerror(L, arg, lua_pushfstring(L, "expected a mask of at most %I pixels, got %Ix%I",
                                              (lua_Integer)MAX_PLANE, (lua_Integer)m.H, (lua_Integer)m.W));
    return m;
}

static int image_components(lua_State *L, int ref) {
    image_arg m = checkmask(L, 1);
    const int connectivity = optconnectivity(L, 2);
    lpnx_Tensor *labels = lpnx_pushnew(L, m.t->ndim, m.t->size, 0);
    const int at = lua_gettop(L);
    int32_t *scratch = pushscratch(L, m.H * m.W, sizeof(int32_t)); /* (H*W) */
    int64_t K = ref ? lpnx_oracles(L)->image_components(data(labels), scratch, data(m.t), m.H, m.W, connectivity)
                    : lpnx_image_components(data(labels), scratch, data(m.t), m.H, m.W, connectivity);
    if (K < 0)
        return luaL_error(L, "components: not enough memory");
    lua_createtable(L, (int)K, 0);
    for (int64_t k = 0; k < K; k++) {
        lua_pushinteger(L, scratch[k]);
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushvalue(L, at);
    lua_insert(L, -2);
    return 2;
}

static int image_remove_small(lua_State *L, int ref) {
    image_arg m = checkmask(L, 1);
    const int64_t min_area = checkint(L, 2, "min_area", 0, INT64_MAX);
    const int connectivity = optconnectivity(L, 3);
    lpnx_Tensor *out = lpnx_pushnew(L, m.t->ndim, m.t->size, 0);
    if (ref) {
        check_status(L, lpnx_oracles(L)->image_remove_small(data(out), data(m.t), m.H, m.W, connectivity, min_area),
                     "remove_small");
        return 1;
    }
    int32_t *scratch = pushscratch(L, m.H * m.W, sizeof(int32_t)); /* (H*W) */
    lpnx_image_remove_small(data(out), scratch, data(m.t), m.H, m.W, connectivity, min_area);
    lua_pop(L, 1);
    return 1;
}

/* ---- overlay --------------------------------------------------------- */

static void optcolor(lua_State *L, int arg, const char *key, float *color) {
    double c[3];
    if (!optnumbers(L, arg, key, 3, c, "a table of 3 numbers {r, g, b} in [0, 1]")) return;
    for (int i = 0; i < 3; i++) {
        if (c[i] < 0 || c[i] > 1)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a table of 3 numbers {r, g, b} in [0, 1], "
                                                     "got %s", key, num(L, c[i])));
        color[i] = (float)c[i];
    }
}

static int image_overlay(lua_State *L, int ref) {
    static const char *const keys[] = {"color", "alpha", "contour", "contour_color", "contour_width", NULL};
    char s1[160], s2[160];
    lpnx_Tensor *img = lpnx_checklive(L, 1);
    if (!(img->ndim == 2 || (img->ndim == 3 && (img->size[0] == 1 || img->size[0] == 3))))
        luaL_argerror(
            L, 1,
            lua_pushfstring(L, "expected image (H,W), (1,H,W) or (3,H,W), got %s", lpnx_shape_of(s1, sizeof s1, img)));
    img = lpnx_checkcontiguous(L, 1);
    const int64_t channels = img->ndim == 3 ? img->size[0] : 1;
    const int64_t H = img->size[img->ndim - 2], W = img->size[img->ndim - 1];
    lpnx_Tensor *mask = lpnx_checklive(L, 2);
    const int mask_ok = (mask->ndim == 2 || (mask->ndim == 3 && mask->size[0] == 1)) &&
                        mask->size[mask->ndim - 2] == H && mask->size[mask->ndim - 1] == W;
    if (!mask_ok)
        luaL_argerror(L, 2,
                      lua_pushfstring(L, "expected mask (%I,%I) or (1,%I,%I) to match image %s, got %s", (lua_Integer)H,
                                      (lua_Integer)W, (lua_Integer)H, (lua_Integer)W, lpnx_shape_of(s1, sizeof s1, img),
                                      lpnx_shape_of(s2, sizeof s2, mask)));
    mask = lpnx_checkcontiguous(L, 2);
    checkopts(L, 3, keys);
    lpnx_overlay_opts o = {{1, 0, 0}, 0.4f, 1, {1, 0, 0}, 1};
    optcolor(L, 3, "color", o.color);
    memcpy(o.contour_color, o.color, sizeof o.color);
    optcolor(L, 3, "contour_color", o.contour_color);
    const double alpha = optnumber(L, 3, "alpha", 0.4, 1);
    if (alpha < 0 || alpha > 1)
        luaL_argerror(L, 3, lua_pushfstring(L, "option 'alpha' must be in [0, 1], got %s", num(L, alpha)));
    o.alpha = (float)alpha;
    o.contour = optboolean(L, 3, "contour", 1);
    o.contour_width = optint(L, 3, "contour_width", 1, 1, MAX_SIZE);
    const int64_t size[3] = {3, H, W};
    lpnx_Tensor *out = lpnx_pushnew(L, 3, size, 0);
    if (H == 0 || W == 0) return 1;
    if (ref) {
        lpnx_oracles(L)->image_overlay(data(out), data(img), channels, data(mask), H, W, &o);
        return 1;
    }
    int32_t *dist = pushscratch(L, mul(H, W), sizeof(int32_t)); /* (H,W) */
    lpnx_image_overlay(data(out), dist, data(img), channels, data(mask), H, W, &o);
    lua_pop(L, 1);
    return 1;
}

/* ---- registration ---------------------------------------------------- */

#define PAIR(name)                                                   \
    static int l_##name(lua_State *L) { return image_##name(L, 0); } \
    static int r_##name(lua_State *L) { return image_##name(L, 1); }
PAIR(resize)
PAIR(affine)
PAIR(remap)
PAIR(elastic_field)
PAIR(elastic)
PAIR(gaussian_blur)
PAIR(clahe)
PAIR(components)
PAIR(remove_small)
PAIR(overlay)
#undef PAIR

/* ---- presentation (DICOM PS3.3 C.11) ---------------------------------- */

/* opts[key] = {data = 1-D tensor (entries), first = number [, bits =
 * integer in 1..16]} into lut (and 2^bits - 1 into *max when max is not
 * NULL, bits then required); 0 when absent. A contiguous copy of data may
 * be left on the stack. */
static int optlut(lua_State *L, int arg, const char *key, lpnx_lut *lut, double *max) {
    char s[160];
    if (getoption(L, arg, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1))
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be a table {data = tensor, first = number%s}, got %s",
                                              key, max ? ", bits = integer" : "", luaL_typename(L, -1)));
    int t = lua_gettop(L);
    lua_getfield(L, t, "data");
    lpnx_Tensor *d = lpnx_testtensor(L, -1);
    if (!d || !d->storage || d->ndim != 1 || d->size[0] < 1 || d->size[0] > 65536)
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s': data must be a 1-D tensor of 1..65536 entries, got %s",
                                              key, d && d->storage ? lpnx_shape_of(s, sizeof s, d) : luaL_typename(L, -1)));
    d = lpnx_checkcontiguous(L, lua_gettop(L)); /* the copy, if any, stays on the stack */
    lua_getfield(L, t, "first");
    int isnum = 0;
    double first = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !isfinite(first))
        luaL_argerror(L, arg, lua_pushfstring(L, "option '%s': first must be a finite number, got %s", key,
                                              isnum ? num(L, first) : luaL_typename(L, -1)));
    lua_pop(L, 1);
    if (max) {
        lua_getfield(L, t, "bits");
        int isint = 0;
        lua_Integer bits = lua_tointegerx(L, -1, &isint);
        if (!isint || bits < 1 || bits > 16)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s': bits must be an integer in 1..16, got %s", key,
                                                  luaL_tolstring(L, -1, NULL)));
        lua_pop(L, 1);
        *max = ldexp(1.0, (int)bits) - 1.0;
    }
    lut->data = data(d);
    lut->entries = d->size[0];
    lut->first = first;
    return 1;
}

/* present(t, {slope = 1, intercept = 0, modality_lut = lut, voi = "none",
 *             center =, width =, low =, high =, voi_lut = lut, invert = false})
 * -> the presentation chain of image/present.h on every value of t (any
 * shape), a new tensor of t's shape. lut = {data = 1-D tensor, first =
 * number, bits = integer} (bits for voi_lut only), as lpnx.dicom.read's
 * meta holds them. voi: "none" (modality values), "range" (low, high),
 * "linear" (center, width >= 1), "linear_exact" and "sigmoid" (center,
 * width > 0), "table" (voi_lut). */
static int l_present(lua_State *L) {
    static const char *const keys[] = {"slope", "intercept", "modality_lut", "voi", "center", "width",
                                       "low",   "high",      "voi_lut",      "invert", NULL};
    static const char *const vois[] = {"none", "range", "linear", "linear_exact", "sigmoid", "table", NULL};
    static const lpnx_voi_kind kinds[] = {LPNX_VOI_NONE,         LPNX_VOI_RANGE,   LPNX_VOI_LINEAR,
                                          LPNX_VOI_LINEAR_EXACT, LPNX_VOI_SIGMOID, LPNX_VOI_TABLE};
    lpnx_checklive(L, 1);
    lpnx_Tensor *t = lpnx_checkcontiguous(L, 1);
    checkopts(L, 2, keys);
    lpnx_present_opts o;
    memset(&o, 0, sizeof o);
    o.slope = optnumber(L, 2, "slope", 1.0, 1);
    o.intercept = optnumber(L, 2, "intercept", 0.0, 1);
    optlut(L, 2, "modality_lut", &o.modality, NULL);
    int kind = optchoice(L, 2, "voi", vois, 0, "one of none, range, linear, linear_exact, sigmoid, table");
    o.voi = kinds[kind];
    o.invert = optboolean(L, 2, "invert", 0);
    if (o.voi == LPNX_VOI_NONE && o.invert)
        luaL_argerror(L, 2, "option 'invert' needs a VOI step (voi other than none)");
    if (o.voi == LPNX_VOI_RANGE) {
        o.low = optnumber(L, 2, "low", NAN, 1);
        o.high = optnumber(L, 2, "high", NAN, 1);
        if (!(o.low < o.high))
            luaL_argerror(L, 2, lua_pushfstring(L, "voi 'range' needs numbers low < high, got %s and %s",
                                                num(L, o.low), num(L, o.high)));
    } else if (o.voi == LPNX_VOI_LINEAR || o.voi == LPNX_VOI_LINEAR_EXACT || o.voi == LPNX_VOI_SIGMOID) {
        o.center = optnumber(L, 2, "center", NAN, 1);
        o.width = optnumber(L, 2, "width", NAN, 1);
        if (isnan(o.center)) luaL_argerror(L, 2, lua_pushfstring(L, "voi '%s' needs a center", vois[kind]));
        double least = o.voi == LPNX_VOI_LINEAR ? 1.0 : 0.0;
        if (isnan(o.width) || o.width < least || (least == 0.0 && o.width == 0.0))
            luaL_argerror(L, 2, lua_pushfstring(L, "voi '%s' needs a width %s, got %s", vois[kind],
                                                least == 1.0 ? ">= 1" : "> 0", num(L, o.width)));
    } else if (o.voi == LPNX_VOI_TABLE) {
        if (!optlut(L, 2, "voi_lut", &o.voi_lut, &o.voi_max))
            luaL_argerror(L, 2, "voi 'table' needs a voi_lut");
    }
    lpnx_Tensor *out = lpnx_pushnew(L, t->ndim, t->size, 0);
    lpnx_image_present(data(out), data(t), lpnx_tensor_numel(out), &o);
    return 1;
}

/* quantiles(t, {q1, q2, ...} [, {exclude_extremes = false}]) -> {v1, v2, ...}, m
 * The nearest-rank quantiles of t's values (NaN left out; with
 * exclude_extremes, the values equal to t's smallest or largest too,
 * unless none would be left), and m, how many values were ranked. */
static int l_quantiles(lua_State *L) {
    static const char *const keys[] = {"exclude_extremes", NULL};
    lpnx_checklive(L, 1);
    lpnx_Tensor *t = lpnx_checkcontiguous(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    checkopts(L, 3, keys);
    int exclude = optboolean(L, 3, "exclude_extremes", 0);
    lua_Integer nq = luaL_len(L, 2);
    if (nq < 1 || nq > 1024)
        luaL_argerror(L, 2, lua_pushfstring(L, "expected 1..1024 quantiles, got %I", nq));
    double *q = pushscratch(L, nq, sizeof(double));  /* (nq) */
    double *v = pushscratch(L, nq, sizeof(double));  /* (nq) */
    for (lua_Integer k = 0; k < nq; k++) {
        int isnum = 0;
        lua_geti(L, 2, k + 1);
        q[k] = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(q[k] >= 0 && q[k] <= 1))
            luaL_argerror(L, 2, lua_pushfstring(L, "quantile %I must be a number in [0, 1], got %s", k + 1,
                                                luaL_tolstring(L, -1, NULL)));
        lua_pop(L, 1);
    }
    int64_t n = lpnx_tensor_numel(t);
    float *scratch = pushscratch(L, n, sizeof(float)); /* (n) */
    int64_t m = lpnx_image_quantiles(v, scratch, data(t), n, q, (int)nq, exclude);
    if (m == 0) luaL_argerror(L, 1, "no values to rank (empty, or all NaN)");
    lua_createtable(L, (int)nq, 0);
    for (lua_Integer k = 0; k < nq; k++) {
        lua_pushnumber(L, v[k]);
        lua_rawseti(L, -2, k + 1);
    }
    lua_pushinteger(L, (lua_Integer)m);
    return 2;
}

static const luaL_Reg functions[] = {
    {"resize", l_resize}, {"hflip", l_hflip}, {"vflip", l_vflip}, {"affine", l_affine},
    {"remap", l_remap}, {"elastic_field", l_elastic_field}, {"elastic", l_elastic},
    {"gaussian_blur", l_gaussian_blur}, {"brightness_contrast", l_brightness_contrast},
    {"gamma", l_gamma}, {"gaussian_noise", l_gaussian_noise}, {"clahe", l_clahe},
    {"components", l_components}, {"remove_small", l_remove_small}, {"overlay", l_overlay},
    {"normalize", l_normalize}, {"to_rgb", l_to_rgb}, {"present", l_present}, {"quantiles", l_quantiles},
    {NULL, NULL}};

static const luaL_Reg ref_functions[] = {
    {"resize", r_resize}, {"affine", r_affine}, {"remap", r_remap},
    {"elastic_field", r_elastic_field}, {"elastic", r_elastic}, {"gaussian_blur", r_gaussian_blur},
    {"clahe", r_clahe}, {"components", r_components}, {"remove_small", r_remove_small},
    {"overlay", r_overlay}, {NULL, NULL}};

void lpnx_open_image(lua_State *L, int ridx) {
    luaL_newlib(L, ref_functions);
    lua_setfield(L, ridx, "image");
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "image");
}
