-- Buffers and the storage allocator: kernels write into output buffers the
-- caller gives them, modules keep their outputs and gradients and write
-- over them on the next call (Torch7's rule), and freed storages are kept
-- for reuse, so a steady-state training step asks the system for nothing.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local K, R = lpnx.kernels, lpnx.ref
local IMPLS = {{"kernels", K}, {"ref", R}}
local nn = lpnx.nn

-- The message of the error f raises.
local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function assert_message(text, f)
  local m = message(f)
  assert(m:find(text, 1, true), ("expected an error containing %q, got %q"):format(text, m))
end

-- A buffer of the given sizes full of NaN: whatever the kernel does not
-- write (or does not zero before accumulating) shows.
local function nan_buffer(...)
  return lpnx.full({...}, 0 / 0)
end

-- Frees t's storage now, as leaving a `<close>` variable's scope does.
local function close(t)
  do local closing <close> = t end -- luacheck: ignore closing
end

local function same_values(a, b)
  assert.are.same(b:size(), a:size())
  assert.is_true(a:equal(b), ("max difference %g"):format(h.max_diff(a, b)))
end

describe("kernel output buffers", function()
  for _, impl in ipairs(IMPLS) do
    local name, f = impl[1], impl[2]

    it(name .. ".conv2d_forward and conv2d_backward write y and gx into given tensors", function()
      lpnx.manual_seed(1)
      local x, w, b = lpnx.randn(2, 3, 6, 5), lpnx.randn(4, 3, 3, 3), lpnx.randn(4)
      local gy = lpnx.randn(2, 4, 6, 5)
      local y = nan_buffer(2, 4, 6, 5)
      assert.are.equal(y, f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, nil, y))
      same_values(y, f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1))
      local ws = lpnx.empty(K.conv2d_workspace_size(x, w, 1, 1, 1, 1, 1, 1) + 7)
      y:fill_(0 / 0)
      assert.are.equal(y, f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, ws, y))
      same_values(y, f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1))
      local gw1, gb1, gw2, gb2 = lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4), lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4)
      local gx = nan_buffer(2, 3, 6, 5) -- the kernels accumulate: it must be zeroed first
      assert.are.equal(gx, f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw1, gb1, true, ws, gx))
      same_values(gx, f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw2, gb2, true))
      same_values(gw1, gw2)
      same_values(gb1, gb2)
    end)

    it(name .. ".batchnorm_* write y and gx into given tensors, gx also over gy itself", function()
      lpnx.manual_seed(2)
      local x, gy = lpnx.randn(3, 2, 4, 5) * 2 + 1, lpnx.randn(3, 2, 4, 5)
      local w, b = lpnx.randn(2), lpnx.randn(2)
      local function state() return lpnx.zeros(2), lpnx.ones(2), lpnx.zeros(2), lpnx.zeros(2) end
      local rm1, rv1, sm1, si1 = state()
      local rm2, rv2, sm2, si2 = state()
      local y = nan_buffer(3, 2, 4, 5)
      assert.are.equal(y, f.batchnorm_train(x, w, b, rm1, rv1, 0.1, 1e-5, sm1, si1, y))
      same_values(y, f.batchnorm_train(x, w, b, rm2, rv2, 0.1, 1e-5, sm2, si2))
      same_values(rm1, rm2)
      same_values(si1, si2)
      y:fill_(0 / 0)
      assert.are.equal(y, f.batchnorm_eval(x, w, b, rm1, rv1, 1e-5, y))
      same_values(y, f.batchnorm_eval(x, w, b, rm1, rv1, 1e-5))

      local gw1, gb1, gw2, gb2 = lpnx.zeros(2), lpnx.zeros(2), lpnx.zeros(2), lpnx.zeros(2)
      local want = f.batchnorm_backward(x, gy, w, sm1, si1, gw2, gb2)
      local gx = nan_buffer(3, 2, 4, 5)
      assert.are.equal(gx, f.batchnorm_backward(x, gy, w, sm1, si1, gw1, gb1, gx))
      same_values(gx, want)
      local g = gy:clone()
      assert.are.equal(g, f.batchnorm_backward(x, g, w, sm1, si1, gw1, gb1, g))
      same_values(g, want)

      want = f.batchnorm_backward_eval(x, gy, w, rm1, rv1, 1e-5, gw2, gb2)
      gx:fill_(0 / 0)
      assert.are.equal(gx, f.batchnorm_backward_eval(x, gy, w, rm1, rv1, 1e-5, gw1, gb1, gx))
      same_values(gx, want)
      g = gy:clone()
      assert.are.equal(g, f.batchnorm_backward_eval(x, g, w, rm1, rv1, 1e-5, gw1, gb1, g))
      same_values(g, want)
      same_values(gw1, gw2 * 2) -- two backward calls of each kind on each side
      same_values(gb1, gb2 * 2)
    end)

    it(name .. ".relu_backward and sigmoid_backward write gx into a given tensor or over gy", function()
      lpnx.manual_seed(3)
      local y, gy = lpnx.randn(2, 3, 4, 3), lpnx.randn(2, 3, 4, 3)
      for _, k in ipairs {"relu_backward", "sigmoid_backward"} do
        local yk = k == "relu_backward" and y or y:sigmoid()
        local want = f[k](yk, gy)
        local gx = nan_buffer(2, 3, 4, 3)
        assert.are.equal(gx, f[k](yk, gy, gx))
        same_values(gx, want)
        local g = gy:clone()
        assert.are.equal(g, f[k](yk, g, g))
        same_values(g, want)
      end
    end)

    it(name .. ".maxpool2d_* write y, indices and gx into given tensors", function()
      lpnx.manual_seed(4)
      local x = lpnx.randn(2, 3, 7, 6)
      local y, idx = nan_buffer(2, 3, 4, 3), nan_buffer(2, 3, 4, 3)
      local ry, ridx = f.maxpool2d_forward(x, 3, 3, 2, 2, 1, 1, y, idx)
      assert.are.equal(y, ry)
      assert.are.equal(idx, ridx)
      local wy, widx = f.maxpool2d_forward(x, 3, 3, 2, 2, 1, 1)
      same_values(y, wy)
      same_values(idx, widx)
      local gy = lpnx.randn(2, 3, 4, 3)
      local gx = nan_buffer(2, 3, 7, 6) -- accumulated into: zeroed first
      assert.are.equal(gx, f.maxpool2d_backward(gy, idx, 7, 6, gx))
      same_values(gx, f.maxpool2d_backward(gy, idx, 7, 6))
    end)

    it(name .. ".upsample_* write y and gx into given tensors", function()
      lpnx.manual_seed(5)
      local x, gy = lpnx.randn(2, 3, 3, 4), lpnx.randn(2, 3, 5, 7)
      for _, mode in ipairs {"nearest", "bilinear"} do
        local fwd, bwd = f["upsample_" .. mode], f["upsample_" .. mode .. "_backward"]
        local y = nan_buffer(2, 3, 5, 7)
        assert.are.equal(y, fwd(x, 5, 7, y))
        same_values(y, fwd(x, 5, 7))
        local gx = nan_buffer(2, 3, 3, 4)
        assert.are.equal(gx, bwd(gy, 3, 4, gx))
        same_values(gx, bwd(gy, 3, 4))
      end
    end)
  end

  it("lpnx.cat writes into a given tensor, a strided view too", function()
    local a, b = lpnx.randn(2, 3, 4), lpnx.randn(2, 1, 4)
    local out = nan_buffer(2, 4, 4)
    assert.are.equal(out, lpnx.cat({a, b}, 2, out))
    same_values(out, lpnx.cat({a, b}, 2))
    local big = lpnx.zeros(2, 6, 4)
    local view = big:narrow(2, 2, 4)
    assert.are.equal(view, lpnx.cat({a, b}, 2, view))
    same_values(view, out)
    assert.are.equal(0, big:narrow(2, 1, 1):abs():sum() + big:narrow(2, 6, 1):abs():sum())
  end)

  it("conv2d_workspace_size is what the fast kernels want: for a pointwise convolution, each image "
     .. "group's weight and bias gradient", function()
    local x = lpnx.zeros(2, 3, 6, 5)
    -- the 2 images make 2 groups (even and odd places): 2 x 4 x (3 + 1) floats
    assert.are.equal(2 * 4 * (3 + 1), K.conv2d_workspace_size(x, lpnx.zeros(4, 3, 1, 1), 1, 1, 0, 0, 1, 1))
    assert.is_true(K.conv2d_workspace_size(x, lpnx.zeros(4, 3, 3, 3), 1, 1, 1, 1, 1, 1) > 0)
    assert_message("expected weight (4,3,3,3) to match input channels 3, got (4,2,3,3)",
                   function() K.conv2d_workspace_size(x, lpnx.zeros(4, 2, 3, 3), 1, 1, 1, 1, 1, 1) end)
  end)
end)

describe("kernel output buffers are rejected when wrong", function()
  local x, w, b = lpnx.randn(2, 3, 6, 5), lpnx.randn(4, 3, 3, 3), lpnx.randn(4)
  local gy = lpnx.randn(2, 4, 6, 5)

  for _, impl in ipairs(IMPLS) do
    local name, f = impl[1], impl[2]
    it(name .. ".conv2d_*: shape, layout, shared memory, closed, gx without need_gx", function()
      assert_message("expected y (2,4,6,5) to hold the output, got (2,4,6,6)",
                     function() f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, nil, lpnx.empty(2, 4, 6, 6)) end)
      assert_message("expected y to be contiguous: it is written in place", function()
        f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, nil, lpnx.empty(2, 4, 5, 6):transpose(3, 4))
      end)
      local big = lpnx.zeros(2, 4, 6, 5)
      assert_message("y must not share memory with x, w, b or the workspace", function()
        f.conv2d_forward(big:narrow(2, 1, 3), w, b, 1, 1, 1, 1, 1, 1, nil, big)
      end)
      local ws = lpnx.zeros(1000)
      assert_message("y must not share memory with x, w, b or the workspace", function()
        f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, ws, ws:narrow(1, 1, 240):view(2, 4, 6, 5))
      end)
      local closed = lpnx.empty(2, 4, 6, 5)
      close(closed)
      assert_message("tensor was closed", function() f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1, nil, closed) end)
      local gw = lpnx.zeros(4, 3, 3, 3)
      assert_message("expected gx (2,3,6,5) to hold the input gradient, got (2,4,6,5)", function()
        f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, nil, true, nil, lpnx.empty(2, 4, 6, 5))
      end)
      assert_message("gx must not share memory with x, w, gy, gw, gb or the workspace", function()
        f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, nil, true, nil, x)
      end)
      assert_message("gx is given but need_gx is false", function()
        f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, nil, false, nil, lpnx.empty(2, 3, 6, 5))
      end)
    end)

    it(name .. " layer kernels: shape, layout, shared memory; gx over gy only exactly", function()
      local xs = lpnx.randn(2, 3, 4, 4)
      local c = {lpnx.ones(3), lpnx.zeros(3), lpnx.zeros(3), lpnx.ones(3), lpnx.zeros(3), lpnx.ones(3)}
      assert_message("expected y (2,3,4,4) to hold the output, got (2,3,4,5)", function()
        f.batchnorm_train(xs, c[1], c[2], c[3], c[4], 0.1, 1e-5, c[5], c[6], lpnx.empty(2, 3, 4, 5))
      end)
      assert_message("y must not share memory with x, the per-channel tensors or the saved statistics",
                     function() f.batchnorm_train(xs, c[1], c[2], c[3], c[4], 0.1, 1e-5, c[5], c[6], xs) end)
      assert_message("y must not share memory with x or the per-channel tensors",
                     function() f.batchnorm_eval(xs, c[1], c[2], c[3], c[4], 1e-5, xs) end)
      -- gx may be gy exactly, not a view that overlaps it elsewhere
      local flat = lpnx.randn(2 * 3 * 4 * 4 + 1)
      local g = flat:narrow(1, 1, 96):view(2, 3, 4, 4)
      local shifted = flat:narrow(1, 2, 96):view(2, 3, 4, 4)
      assert_message("gx must not share memory with x, the per-channel tensors or, partly, gy", function()
        f.batchnorm_backward(xs, g, c[1], c[3], c[4], lpnx.zeros(3), lpnx.zeros(3), shifted)
      end)
      assert_message("gx must not share memory with x, the per-channel tensors or, partly, gy", function()
        f.batchnorm_backward_eval(xs, g, c[1], c[3], c[4], 1e-5, lpnx.zeros(3), lpnx.zeros(3), xs)
      end)
      assert_message("gx must not share memory with y or, partly, gy", function() f.relu_backward(xs, g, xs) end)
      assert_message("gx must not share memory with y or, partly, gy",
                     function() f.sigmoid_backward(xs, g, shifted) end)
      assert_message("expected gx to be contiguous: it is written in place",
                     function() f.relu_backward(xs, g, lpnx.empty(2, 3, 4, 4):transpose(3, 4)) end)
      local y, idx = lpnx.empty(2, 3, 2, 2), lpnx.empty(2, 3, 2, 2)
      assert_message("expected y and indices buffers together, or neither",
                     function() f.maxpool2d_forward(xs, 2, 2, 2, 2, 0, 0, y) end)
      assert_message("expected y and indices buffers together, or neither",
                     function() f.maxpool2d_forward(xs, 2, 2, 2, 2, 0, 0, nil, idx) end)
      assert_message("indices must not share memory with x or y",
                     function() f.maxpool2d_forward(xs, 2, 2, 2, 2, 0, 0, y, y) end)
      assert_message("expected indices (2,3,2,2) to hold the argmax positions, got (2,3,2,3)",
                     function() f.maxpool2d_forward(xs, 2, 2, 2, 2, 0, 0, y, lpnx.empty(2, 3, 2, 3)) end)
      local store = lpnx.zeros(96)
      assert_message("gx must not share memory with gy or indices", function()
        f.maxpool2d_backward(lpnx.zeros(2, 3, 2, 2), store:narrow(1, 1, 24):view(2, 3, 2, 2), 4, 4,
                             store:view(2, 3, 4, 4))
      end)
      assert_message("expected y (2,3,8,8) to hold the output, got (2,3,8,7)",
                     function() f.upsample_nearest(xs, 8, 8, lpnx.empty(2, 3, 8, 7)) end)
      local big = lpnx.zeros(2 * 3 * 4 * 8)
      assert_message("y must not share memory with x", function()
        f.upsample_bilinear(big:narrow(1, 1, 96):view(2, 3, 4, 4), 4, 8, big:view(2, 3, 4, 8))
      end)
      assert_message("expected gx (2,3,4,4) to hold the input gradient, got (2,3,4,4,1)", function()
        f.upsample_nearest_backward(lpnx.randn(2, 3, 8, 8), 4, 4, lpnx.empty(2, 3, 4, 4, 1))
      end)
    end)
  end

  it("lpnx.cat: shape, shared memory, expanded tensors", function()
    local a, c = lpnx.randn(2, 3), lpnx.randn(2, 2)
    assert_message("expected out 2x5 to hold the joined tensors, got 2x4",
                   function() lpnx.cat({a, c}, 2, lpnx.empty(2, 4)) end)
    local big = lpnx.zeros(2, 8)
    assert_message("out must not share memory with tensor 1 of the list",
                   function() lpnx.cat({big:narrow(2, 4, 3), c}, 2, big:narrow(2, 1, 5)) end)
    assert_message("out is an expanded tensor: several elements share memory",
                   function() lpnx.cat({a, c}, 2, lpnx.zeros(1, 5):expand(2, 5)) end)
  end)
end)

describe("modules reuse their buffers (Torch7's rule)", function()
  -- Forward and backward twice with inputs of one shape, then once with
  -- another: the buffers are the same tensors while the shape holds, and
  -- the values are always those of a fresh call.
  local function check(m, shape1, shape2, opts)
    opts = opts or {}
    lpnx.manual_seed(11)
    local x1, x2, x3 = lpnx.randn(shape1), lpnx.randn(shape1), lpnx.randn(shape2)
    local y1 = m:forward(x1)
    local gy1 = lpnx.randn(y1:size())
    local gx1 = m:backward(x1, opts.inplace and gy1:clone() or gy1)
    local y2 = m:forward(x2)
    assert.are.equal(y1, y2)
    local want_y = opts.fresh(x2)
    same_values(y2, want_y)
    local gy2 = lpnx.randn(y2:size())
    local gx2 = m:backward(x2, opts.inplace and gy2:clone() or gy2)
    if not opts.inplace then assert.are.equal(gx1, gx2) end
    local fresh_m = opts.fresh_module()
    fresh_m:forward(x2)
    same_values(gx2, fresh_m:backward(x2, gy2:clone()))
    local y3 = m:forward(x3)
    assert.are_not.equal(y2, y3)
    same_values(y3, opts.fresh(x3))
  end

  it("Conv2d, BatchNorm2d, ReLU, Sigmoid, MaxPool2d and Upsample", function()
    lpnx.manual_seed(10)
    local conv = nn.Conv2d(3, 4, 3, {padding = 1, stride = 2})
    local function conv_like()
      local c = nn.Conv2d(3, 4, 3, {padding = 1, stride = 2})
      c.weight:copy_(conv.weight)
      c.bias:copy_(conv.bias)
      return c
    end
    check(conv, {2, 3, 7, 6}, {1, 3, 5, 5},
          {fresh = function(x)
             return K.conv2d_forward(x, conv.weight, conv.bias, 2, 2, 1, 1, 1, 1, nil, nil,
                                     lpnx.conv_algorithm_for("train"))
           end,
           fresh_module = conv_like})
    local bn = nn.BatchNorm2d(3):eval()
    bn.running_mean:copy_(lpnx.randn(3))
    check(bn, {2, 3, 4, 4}, {2, 3, 5, 4},
          {fresh = function(x)
             return K.batchnorm_eval(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, 1e-5)
           end,
           fresh_module = function()
             local b = nn.BatchNorm2d(3):eval()
             b.running_mean:copy_(bn.running_mean)
             return b
           end})
    check(nn.ReLU(), {2, 3, 4, 4}, {1, 2, 3, 3}, {fresh = function(x) return x:relu() end, fresh_module = nn.ReLU})
    check(nn.Sigmoid(), {2, 3, 4, 4}, {1, 2, 3, 3},
          {fresh = function(x) return x:sigmoid() end, fresh_module = nn.Sigmoid})
    check(nn.MaxPool2d(3, 2, 1), {2, 3, 7, 7}, {2, 3, 6, 6},
          {fresh = function(x) return (K.maxpool2d_forward(x, 3, 3, 2, 2, 1, 1)) end,
           fresh_module = function() return nn.MaxPool2d(3, 2, 1) end})
    check(nn.Upsample{scale = 2, mode = "bilinear"}, {2, 3, 3, 4}, {1, 3, 2, 2},
          {fresh = function(x) return K.upsample_bilinear(x, 2 * x:size(3), 2 * x:size(4)) end,
           fresh_module = function() return nn.Upsample{scale = 2, mode = "bilinear"} end})
  end)

  it("ReLU(true) rectifies its input and, in backward, gy in place", function()
    local m = nn.ReLU(true)
    local x = lpnx.randn(2, 3, 4, 4)
    local want = x:relu()
    local y = m:forward(x)
    assert.are.equal(x, y)
    same_values(y, want)
    local gy = lpnx.randn(2, 3, 4, 4)
    local want_gx = K.relu_backward(want, gy)
    assert.are.equal(gy, m:backward(x, gy))
    same_values(gy, want_gx)
    assert.matches("nn.ReLU(inplace)", tostring(nn.Sequential(m)), 1, true)
  end)

  it("BatchNorm2d with inplace_backward writes the input gradient over gy", function()
    lpnx.manual_seed(12)
    local a, b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    b.inplace_backward = true
    local x, gy = lpnx.randn(2, 3, 4, 4), lpnx.randn(2, 3, 4, 4)
    a:forward(x)
    b:forward(x)
    local want = a:backward(x, gy)
    local g = gy:clone()
    assert.are.equal(g, b:backward(x, g))
    same_values(g, want)
    same_values(b.grad_weight, a.grad_weight)
  end)

  -- A U-Net run twice gives the numbers of a fresh copy run once.
  local function tiny_unet()
    return lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 4, 4, 4}}
  end

  it("a U-Net keeps its buffers across steps and gives the values of a fresh model", function()
    lpnx.manual_seed(13)
    local m = tiny_unet()
    local sd = {}
    for k, v in pairs(m:state_dict()) do sd[k] = v:clone() end
    local x1, x2 = lpnx.randn(2, 3, 64, 64), lpnx.randn(2, 3, 64, 64)
    local gy1, gy2 = lpnx.randn(2, 1, 64, 64), lpnx.randn(2, 1, 64, 64)
    local gy2_copy = gy2:clone()
    local y1 = m:forward(x1)
    local gx1 = m:backward(x1, gy1)
    m:zero_grad()
    local y2 = m:forward(x2)
    local gx2 = m:backward(x2, gy2)
    assert.are.equal(y1, y2)
    assert.are.equal(gx1, gx2)
    local fresh = tiny_unet()
    fresh:load_state_dict(sd)
    same_values(y2, fresh:forward(x2))
    same_values(gx2, fresh:backward(x2, gy2))
    local _, grads = m:parameters()
    local _, fresh_grads = fresh:parameters()
    for i = 1, #grads do same_values(grads[i], fresh_grads[i]) end
    same_values(gy2, gy2_copy) -- the caller's gy is left alone
  end)

  it("a steady-state U-Net forward and backward makes no storage at all", function()
    lpnx.manual_seed(14)
    local m = tiny_unet()
    local x, gy = lpnx.randn(2, 3, 64, 64), lpnx.randn(2, 1, 64, 64)
    for _ = 1, 2 do
      m:forward(x)
      m:backward(x, gy)
    end
    m:eval()
    m:forward(x)
    m:train()
    local before = lpnx.memory_stats()
    m:forward(x)
    m:backward(x, gy)
    m:eval()
    m:forward(x)
    local after = lpnx.memory_stats()
    assert.are.equal(before.allocations, after.allocations)
    assert.are.equal(before.reuses, after.reuses)
  end)

  it("a steady-state training step (loss and Adam too) takes all its memory from the cache", function()
    lpnx.manual_seed(15)
    local m = tiny_unet()
    local params, grads = m:parameters()
    local opt = lpnx.optim.Adam(params, grads, {lr = 1e-3})
    local criterion = nn.ComboLoss{bce = 1, dice = 1}
    -- (2,1,128,128) losses' gradients are 128 KiB: large enough to be cached
    local x, t = lpnx.randn(2, 3, 128, 128), lpnx.rand(2, 1, 128, 128):gt(0.8)
    local function step()
      opt:zero_grad()
      local logits = m:forward(x)
      local loss = criterion:forward(logits, t)
      m:backward(x, criterion:backward(logits, t))
      opt:step()
      return loss
    end
    local first = step()
    step()
    collectgarbage() -- the last step's dead tensors go back to the cache
    local before = lpnx.memory_stats()
    local last = step()
    local after = lpnx.memory_stats()
    assert.are.equal(before.allocations, after.allocations)
    assert.is_true(last < first, ("the loss went from %g to %g"):format(first, last))
  end)
end)

describe("memory_stats and the cache of freed storages", function()
  local MiB = 1 << 20
  -- No dead tensors left for the collector to free during a spec (making a
  -- large tensor runs a collection step).
  before_each(function()
    collectgarbage()
    lpnx.empty_cache()
  end)

  it("reports the allocator's counters", function()
    local s = lpnx.memory_stats()
    for _, k in ipairs {"allocated_bytes", "cached_bytes", "peak_bytes", "cache_limit", "allocations", "reuses"} do
      assert.are.equal("integer", math.type(s[k]), k)
      assert.is_true(s[k] >= 0, k)
    end
    assert.is_true(s.peak_bytes >= s.allocated_bytes)
    local t = lpnx.empty(MiB // 4) -- 1 MiB
    local s2 = lpnx.memory_stats()
    assert.are.equal(s.allocated_bytes + MiB, s2.allocated_bytes)
    assert.is_true(s2.peak_bytes >= s2.allocated_bytes)
    close(t)
    assert.are.equal(s.allocated_bytes, lpnx.memory_stats().allocated_bytes)
  end)

  it("gives a freed block to the next storage of its size class", function()
    local t = lpnx.empty(MiB // 4)
    close(t)
    local s = lpnx.memory_stats()
    assert.are.equal(MiB, s.cached_bytes)
    local u = lpnx.zeros(MiB // 4 - 1000) -- the same class: a block of 1 MiB
    local s2 = lpnx.memory_stats()
    assert.are.equal(s.allocations, s2.allocations)
    assert.are.equal(s.reuses + 1, s2.reuses)
    assert.are.equal(0, s2.cached_bytes)
    assert.is_true(u:max() == 0 and u:min() == 0) -- zeros are zeros on a reused block too
    close(u)
    -- a class holds sizes up to a quarter apart: 1 MiB + 64 bytes is in
    -- the next one, whose blocks are 1.25 MiB
    local s3 = lpnx.memory_stats()
    local v = lpnx.empty(MiB // 4 + 16)
    assert.are.equal(s3.allocations + 1, lpnx.memory_stats().allocations)
    close(v)
    assert.are.equal(MiB + MiB + MiB // 4, lpnx.memory_stats().cached_bytes)
    assert.are.equal(MiB + MiB + MiB // 4, lpnx.empty_cache())
    assert.are.equal(0, lpnx.memory_stats().cached_bytes)
  end)

  it("leaves small blocks to malloc and keeps at most cache_limit bytes", function()
    local small = lpnx.empty(1000)
    close(small)
    assert.are.equal(0, lpnx.memory_stats().cached_bytes)
    local limit = lpnx.memory_stats().cache_limit
    lpnx.set_cache_limit(3 * MiB)
    local list = {}
    for i = 1, 5 do list[i] = lpnx.empty(MiB // 4) end
    for i = 1, 5 do close(list[i]) end
    assert.are.equal(3 * MiB, lpnx.memory_stats().cached_bytes)
    lpnx.set_cache_limit(MiB)
    assert.are.equal(MiB, lpnx.memory_stats().cached_bytes)
    lpnx.set_cache_limit(limit)
    assert.are.equal(limit, lpnx.memory_stats().cache_limit)
    lpnx.empty_cache()
    assert_message("cache limit must be >= 0 bytes, got -1", function() lpnx.set_cache_limit(-1) end)
  end)
end)
