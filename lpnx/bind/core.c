/* luaopen_lpnx_core: the one entry point of the extension. Each part
 * registers its own metatable and functions into the module table. */
#include "../ops/ops.h"
#include "../ref/ref_table.h"
#include "bind.h"

int luaopen_lpnx_core(lua_State *L);

int luaopen_lpnx_core(lua_State *L) {
    lpnx_set_num_threads(lpnx_get_num_threads()); /* OpenBLAS on one thread from the start */
    lua_newtable(L);
    lpnx_open_tensor(L);
    lpnx_open_random(L);
    lpnx_open_io(L);
    lpnx_open_torch(L);
    lpnx_open_onnx(L);
    lpnx_open_dicom(L);
    lpnx_open_png(L);
    lpnx_open_rle(L);
    lpnx_open_draw(L);
    lpnx_open_sys(L);
    lpnx_open_net(L);
    lua_newtable(L); /* kernels */
    lua_newtable(L); /* the oracles' bindings, for the lpnx.ref module */
    int module = lua_gettop(L) - 2, kernels = module + 1, ref = module + 2;
    lua_pushvalue(L, module);
    lpnx_open_image(L, ref);
    lua_pop(L, 1);
    lpnx_open_ref(L, ref);
    lpnx_open_conv(L, kernels, ref);
    lpnx_open_layers(L, kernels, ref);
    lpnx_open_loss(L, kernels, ref);
    lpnx_open_optim(L, kernels, ref);
    lua_setfield(L, LUA_REGISTRYINDEX, LPNX_REF_BINDINGS_KEY);
    lua_setfield(L, module, "kernels");
    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, -2, "version");
    return 1;
}
