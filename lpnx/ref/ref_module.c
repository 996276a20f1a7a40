/* lpnx.ref: the slow, obviously correct oracles of lpnx/ref/, a module of
 * its own for specs that hold the fast kernels to them. The bindings (the
 * argument checks, shared with lpnx.kernels) are lpnx.core's; this module
 * gives them the oracles' table and returns them:
 *
 *   local ref = require "lpnx.ref"   -- ref.conv2d_forward(...) etc.
 */
#include <lauxlib.h>
#include <lua.h>

#include "ref_table.h"

int luaopen_lpnx_ref(lua_State *L);

static const lpnx_ref_table oracles = {
    .version = LPNX_REF_TABLE_VERSION,
    .matmul = lpnx_ref_matmul,
    .conv2d_forward = lpnx_ref_conv2d_forward,
    .conv2d_backward = lpnx_ref_conv2d_backward,
    .batchnorm_train_forward = lpnx_ref_batchnorm_train_forward,
    .batchnorm_eval_forward = lpnx_ref_batchnorm_eval_forward,
    .batchnorm_train_backward = lpnx_ref_batchnorm_train_backward,
    .batchnorm_eval_backward = lpnx_ref_batchnorm_eval_backward,
    .batchnorm_sum = lpnx_ref_batchnorm_sum,
    .batchnorm_sqdev = lpnx_ref_batchnorm_sqdev,
    .batchnorm_train_apply = lpnx_ref_batchnorm_train_apply,
    .batchnorm_backward_reduce = lpnx_ref_batchnorm_backward_reduce,
    .batchnorm_backward_input = lpnx_ref_batchnorm_backward_input,
    .relu_backward = lpnx_ref_relu_backward,
    .sigmoid_backward = lpnx_ref_sigmoid_backward,
    .maxpool2d_forward = lpnx_ref_maxpool2d_forward,
    .maxpool2d_backward = lpnx_ref_maxpool2d_backward,
    .upsample_nearest_forward = lpnx_ref_upsample_nearest_forward,
    .upsample_nearest_backward = lpnx_ref_upsample_nearest_backward,
    .upsample_bilinear_forward = lpnx_ref_upsample_bilinear_forward,
    .upsample_bilinear_backward = lpnx_ref_upsample_bilinear_backward,
    .bce_with_logits = lpnx_ref_bce_with_logits,
    .bce_with_logits_backward = lpnx_ref_bce_with_logits_backward,
    .dice_loss = lpnx_ref_dice_loss,
    .dice_loss_backward = lpnx_ref_dice_loss_backward,
    .dice_sums = lpnx_ref_dice_sums,
    .dice_loss_backward_sums = lpnx_ref_dice_loss_backward_sums,
    .focal_loss = lpnx_ref_focal_loss,
    .focal_loss_backward = lpnx_ref_focal_loss_backward,
    .sgd_step = lpnx_ref_sgd_step,
    .adam_step = lpnx_ref_adam_step,
    .sum_squares = lpnx_ref_sum_squares,
    .image_resize = lpnx_ref_image_resize,
    .image_affine = lpnx_ref_image_affine,
    .image_remap = lpnx_ref_image_remap,
    .image_gaussian_blur = lpnx_ref_image_gaussian_blur,
    .image_elastic_field = lpnx_ref_image_elastic_field,
    .image_clahe = lpnx_ref_image_clahe,
    .image_components = lpnx_ref_image_components,
    .image_remove_small = lpnx_ref_image_remove_small,
    .image_overlay = lpnx_ref_image_overlay,
};

int luaopen_lpnx_ref(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lpnx.core");
    lua_call(L, 1, 0);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LPNX_REF_BINDINGS_KEY) != LUA_TTABLE)
        return luaL_error(L, "lpnx.ref: lpnx.core has no bindings for the oracles");
    lua_pushlightuserdata(L, (void *)&oracles);
    lua_setfield(L, LUA_REGISTRYINDEX, LPNX_REF_TABLE_KEY);
    return 1;
}
