/* luaopen_lpnx_core: the one entry point of the extension. Each part
 * registers its own metatable and functions into the module table. */
#include "bind.h"

int luaopen_lpnx_core(lua_State *L);

int luaopen_lpnx_core(lua_State *L) {
    lua_newtable(L);
    lpnx_open_tensor(L);
    lpnx_open_random(L);
    lpnx_open_io(L);
    lpnx_open_ref(L);
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
