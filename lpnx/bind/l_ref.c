/* lpnx.ref.matmul: the binding of the matrix product's oracle (the other
 * oracles are bound beside their kernels). */
#include "../ref/ref_table.h"
#include "bind.h"

static int l_ref_matmul(lua_State *L) {
    char s1[160], s2[160];
    lpnx_Tensor *a = lpnx_checkcontiguous(L, 1);
    int ia = lua_gettop(L);
    lpnx_Tensor *b = lpnx_checkcontiguous(L, 2);
    if (a->ndim != 2 || b->ndim != 2 || a->size[1] != b->size[0]) {
        lpnx_shape_str(s1, sizeof s1, a->ndim, a->size);
        lpnx_shape_str(s2, sizeof s2, b->ndim, b->size);
        return luaL_error(L, "ref.matmul: expected (m,k) and (k,n), got %s and %s", s1, s2);
    }
    (void)ia;
    int64_t size[2] = {a->size[0], b->size[1]};
    lpnx_Tensor *c = lpnx_pushnew(L, 2, size, 0);
    lpnx_oracles(L)->matmul(lpnx_tensor_data(c), lpnx_tensor_data(a), lpnx_tensor_data(b),
                    (int)a->size[0], (int)b->size[1], (int)a->size[1]);
    return 1;
}

void lpnx_open_ref(lua_State *L, int ridx) {
    static const luaL_Reg ref[] = {{"matmul", l_ref_matmul}, {NULL, NULL}};
    lpnx_setfuncs(L, ridx, ref);
}
