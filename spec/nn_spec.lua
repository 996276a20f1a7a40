local lpnx = require "lpnx"
local gc = require "spec.support.gradcheck"

local nn = lpnx.nn

-- Checks a module's input gradient and every parameter gradient by finite
-- differences on L = sum(forward(x) * gy).
local function check_module(m, x, opts)
  lpnx.manual_seed(99)
  local y = m:forward(x)
  local gy = lpnx.randn(y:size())
  local function loss() return gc.dot(m:forward(x), gy) end
  opts = opts or {}
  opts.eps, opts.kink = opts.eps or 1e-3, opts.kink or 0.02
  m:zero_grad()
  m:forward(x)
  local gx = m:backward(x, gy)
  gc.check(loss, x, gx, opts)
  local params = m:named_parameters()
  local stride = opts and opts.param_stride or 1 -- check every stride-th parameter
  for i = 1, #params, stride do
    gc.check(loss, params[i].value, params[i].grad:clone(), opts)
  end
end

describe("nn modules", function()
  it("Sequential chains forward and backward and names children 0, 1, ...", function()
    lpnx.manual_seed(1)
    local m = nn.Sequential(nn.Conv2d(2, 3, 3, {padding = 1}), nn.BatchNorm2d(3), nn.ReLU(),
                            nn.Conv2d(3, 2, 1))
    local keys = {}
    for _, p in ipairs(m:named_parameters()) do keys[#keys + 1] = p.name end
    assert.are.same({"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}, keys)
    local _, order = m:state_dict()
    assert.are.same({"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                     "1.num_batches_tracked", "3.weight", "3.bias"}, order)
    check_module(m, lpnx.randn(2, 2, 5, 4))
  end)

  it("parameters and grads come in matching order; zero_grad clears them", function()
    local m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    local params, grads = m:parameters()
    assert.are.equal(4, #params)
    for i = 1, 4 do assert.are.same(params[i]:size(), grads[i]:size()) end
    local x = lpnx.randn(2, 1, 4, 4)
    m:forward(x)
    m:backward(x, lpnx.ones(2, 2, 2, 2))
    assert.is_true(grads[2]:abs():sum() > 0)
    m:zero_grad()
    for i = 1, 4 do assert.are.equal(0, grads[i]:abs():sum()) end
  end)

  it("backward accumulates parameter gradients across calls", function()
    local conv = nn.Conv2d(2, 2, 3, {padding = 1})
    local x, gy = lpnx.randn(1, 2, 4, 4), lpnx.randn(1, 2, 4, 4)
    conv:forward(x)
    conv:backward(x, gy)
    local once = conv.grad_weight:clone()
    conv:backward(x, gy)
    assert.is_true(conv.grad_weight:allclose(once * 2, 1e-5, 1e-6))
  end)

  it("train and eval switch BatchNorm between batch and running statistics", function()
    local bn = nn.BatchNorm2d(2)
    local x = lpnx.randn(4, 2, 3, 3) * 3 + 1
    local m = nn.Sequential(bn)
    m:train()
    local y = m:forward(x):clone() -- the next forward writes over the module's output
    assert.is_true(math.abs(y:mean()) < 1e-5)
    assert.are.equal(1, bn.num_batches_tracked:item())
    assert.is_true(math.abs(bn.running_mean:mean() - 0.1 * x:mean()) < 1e-4)
    m:eval()
    assert.is_false(bn.training)
    local ye = m:forward(x)
    assert.are.equal(1, bn.num_batches_tracked:item())
    assert.is_false(ye:allclose(y, 1e-3, 1e-3))
  end)

  it("BasicBlock gradients, with and without a downsample shortcut", function()
    lpnx.manual_seed(2)
    check_module(nn.BasicBlock(3, 3, 1), lpnx.randn(2, 3, 5, 5))
    check_module(nn.BasicBlock(2, 4, 2), lpnx.randn(2, 2, 6, 6))
  end)

  it("Bottleneck gradients", function()
    lpnx.manual_seed(3)
    check_module(nn.Bottleneck(4, 2, 2), lpnx.randn(2, 4, 6, 6))
  end)

  it("MaxPool2d and Upsample as modules", function()
    lpnx.manual_seed(4)
    check_module(nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Upsample{scale = 2}), lpnx.randn(1, 2, 6, 6))
    check_module(nn.Upsample{size = {5, 7}, mode = "bilinear"}, lpnx.randn(2, 1, 3, 4))
  end)

  it("a tiny U-Net passes a finite-difference check end to end", function()
    lpnx.manual_seed(5)
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 2, decoder_channels = {4, 4, 2, 2, 2}}
    m:eval() -- fixed statistics keep the check sharp
    check_module(m, lpnx.randn(1, 3, 32, 32), {samples = 8, param_stride = 17})
  end)

  it("prints its structure", function()
    local s = tostring(nn.Sequential(nn.Conv2d(3, 8, 3, {padding = 1, bias = false}), nn.ReLU()))
    assert.matches("(0): nn.Conv2d(3, 8, kernel=3x3, padding=1x1, bias=false)", s, 1, true)
    assert.matches("(1): nn.ReLU", s, 1, true)
  end)
end)
