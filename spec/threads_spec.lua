-- One thread or two give the same bits: lpnx cuts every computation into
-- pieces fixed by the sizes (convolution tiles, gemm blocks, chunks of a
-- sum), keeps OpenBLAS on one thread inside them, and adds the pieces'
-- results in a fixed order, whichever BLAS kernel the machine selects.
local lpnx = require "lpnx"

-- Three Adam steps of a U-Net on `threads` threads; every tensor of the
-- model's and the optimizer's state afterwards, by name, and the losses.
local function train(threads, algorithm)
  local before_threads, before_algo = lpnx.get_num_threads(), lpnx.get_conv_algorithm()
  lpnx.set_num_threads(threads)
  lpnx.set_conv_algorithm(algorithm)
  local ok, res = pcall(function()
    lpnx.manual_seed(21)
    local m = lpnx.models.unet{encoder = "resnet34", encoder_width = 8, decoder_channels = {32, 16, 16, 8, 8}}
    local x = lpnx.randn(4, 3, 96, 96)
    local target = lpnx.rand(4, 1, 96, 96):gt(0.8)
    local loss = lpnx.nn.ComboLoss{bce = 1, dice = 1, focal = 1}
    local params, grads = m:parameters()
    local opt = lpnx.optim.Adam(params, grads, {lr = 1e-3})
    local losses = {}
    for step = 1, 3 do
      opt:zero_grad()
      local y = m:forward(x)
      losses[step] = loss:forward(y, target)
      m:backward(x, loss:backward(y, target))
      lpnx.optim.clip_grad_norm(grads, 1.0)
      opt:step()
    end
    local state = {}
    for k, v in pairs(m:state_dict()) do state["model." .. k] = v:clone() end
    for k, v in pairs(opt:state_dict("adam.")) do state[k] = v:clone() end
    return {state = state, losses = losses}
  end)
  lpnx.set_num_threads(before_threads)
  lpnx.set_conv_algorithm(before_algo)
  assert(ok, res)
  return res
end

describe("a U-Net training step", function()
  for _, algorithm in ipairs {"auto", "winograd"} do
    it(("gives the same bits on one thread and on two (%s convolutions)"):format(algorithm), function()
      local one, two = train(1, algorithm), train(2, algorithm)
      assert.are.same(one.losses, two.losses)
      local n, differ = 0, {}
      for k, v in pairs(one.state) do
        n = n + 1
        assert.is_truthy(two.state[k], k)
        if not v:equal(two.state[k]) then differ[#differ + 1] = k end
      end
      table.sort(differ)
      assert.are.same({}, differ)
      assert.is_true(n > 200, "compared only " .. n .. " tensors")
    end)
  end
end)
