-- The training forward rounds like exact arithmetic rounded once per
-- stored value. That is what keeps gradients as close to float64 as
-- PyTorch's float32 ones: which ReLU lets a gradient through and which
-- max-pool input receives it are decided by the forward's values, and a
-- value that lands on the other side of zero moves a batch norm's
-- gradient by percents (spec/unet_spec.lua holds the whole network to
-- PyTorch's own float32 error). These checks hold each layer to it on its
-- own, at the shapes of a U-Net decoder block.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local nn, K, R = lpnx.nn, lpnx.kernels, lpnx.ref

-- A convolution with He-initialised weights on unit inputs, as in the
-- decoder: (N, cin, size, size) -> (N, cout, size, size), 3x3, padding 1.
local function decoder_conv(n, cin, cout, size, seed)
  lpnx.manual_seed(seed)
  local conv = nn.Conv2d(cin, cout, 3, {padding = 1, bias = false})
  conv.weight:normal_(0, math.sqrt(2 / (cin * 9)))
  return conv, lpnx.randn(n, cin, size, size)
end

-- Runs f with the conv algorithm set to name, then restores the setting.
local function with_algorithm(name, f)
  local before = lpnx.get_conv_algorithm()
  lpnx.set_conv_algorithm(name)
  local ok, res = pcall(f)
  lpnx.set_conv_algorithm(before)
  assert(ok, res)
  return res
end

describe("the training forward", function()
  it("Conv2d in training mode is within 1 ulp of the exact sum, at every shape of the model", function()
    for i, c in ipairs {{2, 16, 8, 96}, {3, 8, 8, 96}, {4, 64, 32, 24}, {2, 48, 16, 48}, {1, 256, 128, 6}} do
      local conv, x = decoder_conv(c[1], c[2], c[3], c[4], 400 + i)
      conv:train()
      local y = conv:forward(x)
      h.assert_ulps(y, R.conv2d_forward(x, conv.weight, nil, 1, 1, 1, 1, 1, 1), 1, table.concat(c, "x"))
    end
    -- the 7x7 stride-2 stem and a 1x1 stride-2 downsample
    lpnx.manual_seed(410)
    local stem = nn.Conv2d(3, 8, 7, {stride = 2, padding = 3, bias = false})
    local x = lpnx.randn(2, 3, 64, 64)
    h.assert_ulps(stem:forward(x), R.conv2d_forward(x, stem.weight, nil, 2, 2, 3, 3, 1, 1), 1, "stem")
    local down = nn.Conv2d(16, 32, 1, {stride = 2, bias = false})
    x = lpnx.randn(2, 16, 24, 24)
    h.assert_ulps(down:forward(x), R.conv2d_forward(x, down.weight, nil, 2, 2, 0, 0, 1, 1), 1, "downsample")
  end)

  it("is held to it: Winograd F(4x4) would not be, thousands of ulps off near zero", function()
    local conv, x = decoder_conv(2, 16, 8, 96, 401)
    local want = R.conv2d_forward(x, conv.weight, nil, 1, 1, 1, 1, 1, 1)
    local y = with_algorithm("winograd", function() return conv:forward(x):clone() end)
    assert.has_error(function() h.assert_ulps(y, want, 1) end)
  end)

  it("BatchNorm2d in training mode is within 1 ulp of the double-precision oracle", function()
    for i, c in ipairs {{2, 8, 96}, {3, 16, 48}, {4, 64, 6}} do
      lpnx.manual_seed(420 + i)
      local n, ch, size = c[1], c[2], c[3]
      -- channels with a mean far from zero, as after a convolution: the
      -- output is a difference of nearly equal numbers there
      local x = lpnx.randn(n, ch, size, size) * 0.05 + lpnx.rand(1, ch, 1, 1) * 3
      local w, b = lpnx.rand(ch) + 0.5, lpnx.rand(ch) * 0.2 - 0.1
      local function stats() return lpnx.zeros(ch), lpnx.ones(ch), lpnx.empty(ch), lpnx.empty(ch) end
      local rm, rv, sm, si = stats()
      local y = K.batchnorm_train(x, w, b, rm, rv, 0.1, 1e-5, sm, si)
      local rrm, rrv, rsm, rsi = stats()
      local want = R.batchnorm_train(x, w, b, rrm, rrv, 0.1, 1e-5, rsm, rsi)
      h.assert_ulps(y, want, 1, table.concat(c, "x"))
    end
  end)
end)

describe("lpnx.set_conv_algorithm", function()
  it("names the choices and says what each use gets", function()
    assert.are.equal("auto", (lpnx.get_conv_algorithm()))
    local _, uses = lpnx.get_conv_algorithm()
    assert.are.same({train = "double", eval = "winograd", backward = "winograd"}, uses)
    with_algorithm("direct", function()
      local name, u = lpnx.get_conv_algorithm()
      assert.are.equal("direct", name)
      assert.are.same({train = "direct", eval = "direct", backward = "direct"}, u)
    end)
    local ok, err = pcall(lpnx.set_conv_algorithm, "fastest")
    assert.is_false(ok)
    assert.matches('expected "auto", "winograd", "winograd2", "direct" or "double", got "fastest"', err, 1, true)
    assert.are.equal("auto", (lpnx.get_conv_algorithm()))
  end)

  it("the kernels reject an unknown algorithm by name", function()
    local x, w = lpnx.randn(1, 2, 5, 5), lpnx.randn(3, 2, 3, 3)
    local ok, err = pcall(K.conv2d_forward, x, w, nil, 1, 1, 1, 1, 1, 1, nil, nil, "fft")
    assert.is_false(ok)
    assert.matches("invalid option 'fft'", err, 1, true)
    ok, err = pcall(K.conv2d_workspace_size, x, w, 1, 1, 1, 1, 1, 1, 7)
    assert.is_false(ok)
    assert.matches("bad argument #9", err, 1, true)
  end)

  it("every algorithm computes the same convolution, to its own rounding", function()
    local conv, x = decoder_conv(2, 16, 4, 20, 430)
    local want = R.conv2d_forward(x, conv.weight, nil, 1, 1, 1, 1, 1, 1)
    for _, name in ipairs {"auto", "winograd", "winograd2", "direct", "double"} do
      for _, mode in ipairs {"train", "eval"} do
        local y = with_algorithm(name, function()
          if mode == "train" then conv:train() else conv:eval() end
          return conv:forward(x):clone()
        end)
        h.assert_near(y, want, 1e-5 * want:abs():max())
      end
    end
  end)
end)
