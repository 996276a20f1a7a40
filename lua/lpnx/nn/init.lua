-- lpnx.nn: modules with Torch7's protocol (forward, backward, zero_grad,
-- train/eval, parameters, state_dict), the ResNet blocks and the losses.
local nn = {
  Module = require "lpnx.nn.module",
}
for _, part in ipairs {"lpnx.nn.layers", "lpnx.nn.blocks", "lpnx.nn.loss"} do
  for k, v in pairs(require(part)) do nn[k] = v end
end
return nn
