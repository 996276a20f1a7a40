/* Helpers the file-format bindings share: a whole file read into a
 * Lua-owned holder, so that a Lua error raised while it is decoded (out of
 * memory for a tensor, a bad value) frees it through the collector. */
#include <stdlib.h>

#include "../io/file.h"
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
    if (luaL_newmetatable(L, FILE_BYTES_MT)) {
        lua_pushcfunction(L, file_bytes_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (lpnx_file_read(path, &fb->bytes, &fb->len, err, sizeof err) != 0)
        luaL_error(L, "%s: %s", where, err);
    return fb;
}

void lpnx_freefile(lpnx_file_bytes *fb) {
    free(fb->bytes);
    fb->bytes = NULL;
}
