-- Batch normalisation, max pooling, upsampling and the activation backward
-- passes: lpnx.kernels against the lpnx.ref oracles, finite differences,
-- and values computed with PyTorch 1.13 on the CPU (torch.nn.BatchNorm2d,
-- F.max_pool2d(..., return_indices=True), F.interpolate(..., mode="nearest"
-- / "bilinear", align_corners=False) and .backward()) printed with 9
-- significant digits, which round-trips float32 exactly.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local gradcheck = require "spec.support.gradcheck"

local K, R = lpnx.kernels, lpnx.ref
local IMPLS = {{"kernels", K}, {"ref", R}}

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

local function isnan(v) return v ~= v end

-- Fresh per-channel state for a train step: running_mean, running_var,
-- save_mean, save_invstd.
local function bn_state(c, rm, rv)
  return rm and rm:clone() or lpnx.zeros(c), rv and rv:clone() or lpnx.ones(c), lpnx.zeros(c), lpnx.zeros(c)
end

describe("batchnorm", function()
  -- Values from torch.nn.BatchNorm2d(2, eps=1e-5, momentum=0.1) with the
  -- weight, bias and running statistics below, one forward in train mode,
  -- then one in eval mode from the updated running statistics.
  local x = lpnx.tensor{{{{1.0, 2.0}, {3.0, 5.0}}, {{-1.0, 0.5}, {0.25, 4.0}}},
                        {{{0.0, -2.0}, {1.5, 2.5}}, {{3.0, -0.75}, {1.0, 2.0}}}}
  local weight, bias = lpnx.tensor{1.5, -0.5}, lpnx.tensor{0.1, 0.2}
  local rm0, rv0 = lpnx.tensor{0.5, -1.0}, lpnx.tensor{2.0, 0.5}
  local torch_y = {{{{-0.381124616, 0.388674736}, {1.15847409, 2.69807291}},
                    {{0.844382167, 0.389524162}, {0.465333819, -0.671811163}}},
                   {{{-1.15092397, -2.69052267}, {0.00377506018, 0.773574412}},
                    {{-0.368572503, 0.76857245}, {0.237904817, -0.0653338432}}}}
  local torch_eval_y = {{{{0.488890529, 1.49247897}, {2.49606752, 4.5032444}},
                         {{0.321819097, -0.538080215}, {-0.394763649, -2.54451203}}},
                        {{{-0.514697909, -2.5218749}, {0.990684748, 1.99427319}},
                         {{-1.97124577, 0.178502545}, {-0.824713349, -1.3979795}}}}

  for _, impl in ipairs(IMPLS) do
    local name, f = impl[1], impl[2]

    it(name .. ".batchnorm_train gives PyTorch's output, running and saved statistics", function()
      local rm, rv, sm, si = bn_state(2, rm0, rv0)
      local y = f.batchnorm_train(x, weight, bias, rm, rv, 0.1, 1e-5, sm, si)
      h.assert_near(y, torch_y, 2e-6)
      h.assert_near(rm, {0.612500012, -0.787499964}, 1e-6)
      h.assert_near(rv, {2.23392844, 0.760714293}, 1e-6)
      h.assert_near(sm, {1.625, 1.125}, 1e-7)
      h.assert_near(si, {0.513199568, 0.60647732}, 1e-7)
    end)

    it(name .. ".batchnorm_eval gives PyTorch's output from the running statistics", function()
      local y = f.batchnorm_eval(x, weight, bias, lpnx.tensor{0.612500012, -0.787499964},
                                 lpnx.tensor{2.23392844, 0.760714293}, 1e-5)
      h.assert_near(y, torch_eval_y, 2e-6)
    end)
  end

  it("running statistics after one train step match a hand computation", function()
    lpnx.manual_seed(11)
    local xs = lpnx.randn(3, 4, 5, 6) * 2 + 1
    local rm, rv, sm, si = bn_state(4, lpnx.randn(4), lpnx.rand(4) + 0.5)
    local rm_before, rv_before = rm:totable(), rv:totable()
    K.batchnorm_train(xs, lpnx.ones(4), lpnx.zeros(4), rm, rv, 0.25, 1e-3, sm, si)
    local t = xs:totable()
    for c = 1, 4 do
      local sum, n = 0, 0
      for b = 1, 3 do for i = 1, 5 do for j = 1, 6 do sum = sum + t[b][c][i][j]; n = n + 1 end end end
      local mean = sum / n
      local ss = 0
      for b = 1, 3 do for i = 1, 5 do for j = 1, 6 do ss = ss + (t[b][c][i][j] - mean) ^ 2 end end end
      assert.is_true(math.abs(rm:get(c) - (0.75 * rm_before[c] + 0.25 * mean)) < 1e-6)
      assert.is_true(math.abs(rv:get(c) - (0.75 * rv_before[c] + 0.25 * ss / (n - 1))) < 1e-5)
      assert.is_true(math.abs(sm:get(c) - mean) < 1e-6)
      assert.is_true(math.abs(si:get(c) - 1 / math.sqrt(ss / n + 1e-3)) < 1e-5)
    end
  end)

  -- Shapes with odd sizes, batch 1 and > 1, one plane of 1x2, and one large
  -- enough for the threaded loops.
  local shapes = {{1, 3, 4, 5}, {2, 5, 7, 3}, {3, 2, 1, 2}, {4, 16, 8, 8}, {2, 16, 32, 32}}

  it("kernels agree with the oracles in train mode, forward and backward", function()
    lpnx.manual_seed(12)
    for _, s in ipairs(shapes) do
      local c = s[2]
      local xs = lpnx.randn(s) * 3 + 0.5
      local w, b = lpnx.randn(c), lpnx.randn(c)
      local rm, rv = lpnx.randn(c), lpnx.rand(c) + 0.1
      local s1 = {bn_state(c, rm, rv)}
      local s2 = {bn_state(c, rm, rv)}
      local y1 = K.batchnorm_train(xs, w, b, s1[1], s1[2], 0.1, 1e-5, s1[3], s1[4])
      local y2 = R.batchnorm_train(xs, w, b, s2[1], s2[2], 0.1, 1e-5, s2[3], s2[4])
      h.assert_near(y1, y2, 1e-5)
      for k = 1, 4 do h.assert_near(s1[k], s2[k], 1e-5) end
      local gy = lpnx.randn(s)
      local gw1, gb1 = lpnx.randn(c), lpnx.randn(c)
      local gw2, gb2 = gw1:clone(), gb1:clone()
      local gx1 = K.batchnorm_backward(xs, gy, w, s1[3], s1[4], gw1, gb1)
      local gx2 = R.batchnorm_backward(xs, gy, w, s2[3], s2[4], gw2, gb2)
      h.assert_near(gx1, gx2, 2e-5)
      h.assert_near(gw1, gw2, 2e-3)
      h.assert_near(gb1, gb2, 2e-3)
    end
  end)

  it("kernels agree with the oracles in eval mode, forward and backward", function()
    lpnx.manual_seed(13)
    for _, s in ipairs(shapes) do
      local c = s[2]
      local xs = lpnx.randn(s)
      local w, b, rm, rv = lpnx.randn(c), lpnx.randn(c), lpnx.randn(c), lpnx.rand(c) + 0.1
      h.assert_near(K.batchnorm_eval(xs, w, b, rm, rv, 1e-5), R.batchnorm_eval(xs, w, b, rm, rv, 1e-5), 1e-5)
      local gy = lpnx.randn(s)
      local gw1, gb1 = lpnx.randn(c), lpnx.randn(c)
      local gw2, gb2 = gw1:clone(), gb1:clone()
      local gx1 = K.batchnorm_backward_eval(xs, gy, w, rm, rv, 1e-5, gw1, gb1)
      local gx2 = R.batchnorm_backward_eval(xs, gy, w, rm, rv, 1e-5, gw2, gb2)
      h.assert_near(gx1, gx2, 1e-5)
      h.assert_near(gw1, gw2, 2e-3)
      h.assert_near(gb1, gb2, 2e-3)
    end
  end)

  it("train mode gives the same numbers on one thread and on several", function()
    lpnx.manual_seed(14)
    local xs, gy = lpnx.randn(2, 16, 32, 32), lpnx.randn(2, 16, 32, 32)
    local w, b = lpnx.randn(16), lpnx.randn(16)
    local function run()
      local rm, rv, sm, si = bn_state(16)
      local y = K.batchnorm_train(xs, w, b, rm, rv, 0.1, 1e-5, sm, si)
      local gw, gb = lpnx.zeros(16), lpnx.zeros(16)
      return {y, rm, rv, K.batchnorm_backward(xs, gy, w, sm, si, gw, gb), gw, gb}
    end
    local threads = lpnx.get_num_threads()
    lpnx.set_num_threads(1)
    local one = run()
    lpnx.set_num_threads(math.max(2, threads))
    local many = run()
    lpnx.set_num_threads(threads)
    for k = 1, #one do assert.are.equal(0, h.max_diff(one[k], many[k])) end
  end)

  it("train-mode backward matches finite differences for x, weight and bias", function()
    lpnx.manual_seed(15)
    local xs, gy = lpnx.randn(2, 3, 3, 4), lpnx.randn(2, 3, 3, 4)
    local w, b = lpnx.randn(3), lpnx.randn(3)
    local rm, rv, sm, si = bn_state(3)
    local function loss()
      return gradcheck.dot(K.batchnorm_train(xs, w, b, rm, rv, 0.1, 1e-5, sm, si), gy)
    end
    loss()
    local gw, gb = lpnx.zeros(3), lpnx.zeros(3)
    local gx = K.batchnorm_backward(xs, gy, w, sm:clone(), si:clone(), gw, gb)
    assert.is_true(gradcheck.check(loss, xs, gx) >= 30)
    assert.are.equal(3, gradcheck.check(loss, w, gw))
    assert.are.equal(3, gradcheck.check(loss, b, gb))
  end)

  it("eval-mode backward matches finite differences for x, weight and bias", function()
    lpnx.manual_seed(16)
    local xs, gy = lpnx.randn(2, 3, 3, 4), lpnx.randn(2, 3, 3, 4)
    local w, b, rm, rv = lpnx.randn(3), lpnx.randn(3), lpnx.randn(3), lpnx.rand(3) + 0.5
    local function loss() return gradcheck.dot(K.batchnorm_eval(xs, w, b, rm, rv, 1e-5), gy) end
    local gw, gb = lpnx.zeros(3), lpnx.zeros(3)
    local gx = K.batchnorm_backward_eval(xs, gy, w, rm, rv, 1e-5, gw, gb)
    assert.is_true(gradcheck.check(loss, xs, gx) >= 30)
    assert.are.equal(3, gradcheck.check(loss, w, gw))
    assert.are.equal(3, gradcheck.check(loss, b, gb))
  end)

  it("gweight and gbias accumulate across backward calls", function()
    lpnx.manual_seed(17)
    local xs, gy = lpnx.randn(2, 3, 4, 4), lpnx.randn(2, 3, 4, 4)
    local w = lpnx.randn(3)
    local rm, rv, sm, si = bn_state(3)
    K.batchnorm_train(xs, w, lpnx.zeros(3), rm, rv, 0.1, 1e-5, sm, si)
    for _, case in ipairs{
      {"batchnorm_backward", function(f, gw, gb) return f.batchnorm_backward(xs, gy, w, sm, si, gw, gb) end},
      {"batchnorm_backward_eval",
       function(f, gw, gb) return f.batchnorm_backward_eval(xs, gy, w, rm, rv, 1e-5, gw, gb) end},
    } do
      for _, impl in ipairs(IMPLS) do
        local once_w, once_b = lpnx.zeros(3), lpnx.zeros(3)
        case[2](impl[2], once_w, once_b)
        local gw, gb = lpnx.tensor{1, 2, 3}, lpnx.tensor{-1, 0, 1}
        case[2](impl[2], gw, gb)
        case[2](impl[2], gw, gb)
        h.assert_near(gw, once_w * 2 + lpnx.tensor{1, 2, 3}, 1e-5)
        h.assert_near(gb, once_b * 2 + lpnx.tensor{-1, 0, 1}, 1e-5)
        -- gbias is the plain sum of gy per channel
        h.assert_near(once_b, gy:sum(4):sum(3):sum(1), 1e-5)
      end
    end
  end)

  it("takes a non-contiguous input and read-only statistics as views", function()
    lpnx.manual_seed(18)
    local base = lpnx.randn(2, 4, 5, 3)
    local xs = base:transpose(3, 4) -- (2,4,3,5), not contiguous
    local stats = lpnx.randn(2, 4)
    local rm, rv = stats[1], stats[2]:abs() + 0.1 -- rows of a matrix
    local y = K.batchnorm_eval(xs, lpnx.ones(4), lpnx.zeros(4), rm, rv, 1e-5)
    h.assert_near(y, R.batchnorm_eval(xs:contiguous(), lpnx.ones(4), lpnx.zeros(4), rm:contiguous(), rv, 1e-5), 1e-6)
  end)
end)

describe("relu and sigmoid backward", function()
  it("relu_backward passes gy where y > 0 and PyTorch's NaN rule", function()
    local y = lpnx.tensor{{1, 0, -2}, {3, -0.5, 0 / 0}}
    local gy = lpnx.tensor{{10, 20, 30}, {40, 50, 60}}
    for _, impl in ipairs(IMPLS) do
      assert.are.same({{10, 0, 0}, {40, 0, 60}}, impl[2].relu_backward(y, gy):totable())
    end
  end)

  it("sigmoid_backward is gy * y * (1 - y)", function()
    local y, gy = lpnx.tensor{0.5, 0.25, 1, 0}, lpnx.tensor{2, 4, 3, 5}
    for _, impl in ipairs(IMPLS) do
      assert.are.same({0.5, 0.75, 0, 0}, impl[2].sigmoid_backward(y, gy):totable())
    end
  end)

  it("kernels agree with the oracles on any shape", function()
    lpnx.manual_seed(21)
    for _, s in ipairs{{7}, {3, 5}, {2, 3, 4, 5}, {4, 8, 33, 33}} do
      local x, gy = lpnx.randn(s), lpnx.randn(s)
      local r, sg = x:relu(), x:sigmoid()
      assert.are.equal(0, h.max_diff(K.relu_backward(r, gy), R.relu_backward(r, gy)))
      h.assert_near(K.sigmoid_backward(sg, gy), R.sigmoid_backward(sg, gy), 1e-6)
    end
  end)

  it("match finite differences of relu and sigmoid (kinks skipped)", function()
    lpnx.manual_seed(22)
    local x, gy = lpnx.randn(2, 3, 4, 5), lpnx.randn(2, 3, 4, 5)
    local gx = K.relu_backward(x:relu(), gy)
    -- piecewise linear: a small step keeps most points away from the kink
    local relu_loss = function() return gradcheck.dot(x:relu(), gy) end
    assert.is_true(gradcheck.check(relu_loss, x, gx, {eps = 1e-3}) >= 30)
    gx = K.sigmoid_backward(x:sigmoid(), gy)
    assert.is_true(gradcheck.check(function() return gradcheck.dot(x:sigmoid(), gy) end, x, gx) >= 30)
  end)
end)

describe("maxpool2d", function()
  for _, impl in ipairs(IMPLS) do
    local name, f = impl[1], impl[2]

    it(name .. " gives PyTorch's values and indices for the ResNet 3x3 stride 2 pad 1 pool", function()
      local x = lpnx.tensor{{{{3, 9, 14, 0, 21}, {17, 5, 11, 24, 8}, {2, 19, 6, 13, 16},
                              {22, 1, 18, 7, 10}, {12, 23, 4, 15, 20}}}}
      local y, idx = f.maxpool2d_forward(x, 3, 3, 2, 2, 1, 1)
      assert.are.same({{{{17, 24, 24}, {22, 24, 24}, {23, 23, 20}}}}, y:totable())
      assert.are.same({{{{5, 8, 8}, {15, 8, 8}, {21, 21, 24}}}}, idx:totable())
      -- ones back through the argmax: position 8 (value 24) won 4 windows
      local gx = f.maxpool2d_backward(lpnx.ones(1, 1, 3, 3), idx, 5, 5)
      assert.are.same({{{{0, 0, 0, 0, 0}, {1, 0, 0, 4, 0}, {0, 0, 0, 0, 0},
                         {1, 0, 0, 0, 0}, {0, 2, 0, 0, 1}}}}, gx:totable())
    end)

    it(name .. " gives PyTorch's values and indices for a 2x3 kernel, stride 1x2, pad 1x1", function()
      local x = lpnx.tensor{{{{6, -5, -9, -9, 2}, {-2, -4, 0, 0, -5}, {4, -8, -6, -2, 7}, {6, -8, 2, 9, -3}},
                             {{1, 9, 0, 1, 5}, {-8, 1, 6, 5, 0}, {8, 5, 1, 5, -1}, {9, -4, -9, -1, -6}}}}
      local y, idx = f.maxpool2d_forward(x, 2, 3, 1, 2, 1, 1)
      assert.are.same({{{{6, -5, 2}, {6, 0, 2}, {4, 0, 7}, {6, 9, 9}, {6, 9, 9}},
                        {{9, 9, 5}, {9, 9, 5}, {8, 6, 5}, {9, 5, 5}, {9, -1, -1}}}}, y:totable())
      assert.are.same({{{{0, 1, 4}, {0, 7, 4}, {10, 7, 14}, {15, 18, 18}, {15, 18, 18}},
                        {{1, 1, 4}, {1, 1, 4}, {10, 7, 8}, {15, 11, 13}, {15, 18, 18}}}}, idx:totable())
    end)

    it(name .. " keeps the first maximum on ties and PyTorch's NaN and -inf rules", function()
      local y, idx = f.maxpool2d_forward(lpnx.tensor{{{{5, 5}, {5, 5}}}}, 2, 2, 1, 1, 0, 0)
      assert.are.same({{{{5}}}}, y:totable())
      assert.are.same({{{{0}}}}, idx:totable())
      -- PyTorch: a NaN takes over, so the last NaN of a window wins
      local nan = 0 / 0
      y, idx = f.maxpool2d_forward(lpnx.tensor{{{{1, nan, 3}, {nan, 2, 0}, {1, 1, 1}}}}, 2, 2, 1, 1, 0, 0)
      local yt = y:totable()[1][1]
      assert.is_true(isnan(yt[1][1]) and isnan(yt[1][2]) and isnan(yt[2][1]))
      assert.are.equal(2, yt[2][2])
      assert.are.same({{{{3, 1}, {3, 4}}}}, idx:totable())
      -- windows of -inf point at their first cell inside the plane
      y, idx = f.maxpool2d_forward(lpnx.full({1, 1, 3, 3}, -math.huge), 3, 3, 2, 2, 1, 1)
      assert.are.same({{{{-math.huge, -math.huge}, {-math.huge, -math.huge}}}}, y:totable())
      assert.are.same({{{{0, 1}, {3, 4}}}}, idx:totable())
    end)
  end

  -- {N, C, H, W, kh, kw, sh, sw, ph, pw}
  local configs = {
    {2, 3, 9, 9, 3, 3, 2, 2, 1, 1}, {1, 2, 8, 11, 2, 2, 2, 2, 0, 0}, {3, 2, 7, 5, 3, 2, 1, 2, 1, 1},
    {2, 4, 6, 7, 1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 2, 13, 10, 4, 5, 3, 2, 2, 2},
    {1, 3, 5, 4, 5, 4, 1, 1, 2, 2}, {2, 8, 64, 64, 3, 3, 2, 2, 1, 1}, {1, 1, 150, 120, 3, 3, 1, 1, 1, 1},
  }

  it("kernels agree with the oracles on values, indices and gradients, ties included", function()
    lpnx.manual_seed(31)
    for _, c in ipairs(configs) do
      local s = {c[1], c[2], c[3], c[4]}
      for _, x in ipairs{lpnx.randn(s), (lpnx.randn(s) * 1.5):round()} do
        local y1, i1 = K.maxpool2d_forward(x, c[5], c[6], c[7], c[8], c[9], c[10])
        local y2, i2 = R.maxpool2d_forward(x, c[5], c[6], c[7], c[8], c[9], c[10])
        assert.are.equal(0, h.max_diff(y1, y2))
        assert.are.equal(0, h.max_diff(i1, i2))
        if c[3] * c[4] <= 4096 then
          local gy = lpnx.randn(y1:size())
          h.assert_near(K.maxpool2d_backward(gy, i1, c[3], c[4]), R.maxpool2d_backward(gy, i2, c[3], c[4]), 1e-5)
        end
      end
    end
  end)

  it("backward matches finite differences with overlapping windows (kinks skipped)", function()
    lpnx.manual_seed(32)
    for _, c in ipairs{{2, 2, 7, 6, 3, 3, 2, 2, 1, 1}, {1, 3, 5, 6, 2, 3, 1, 2, 1, 1}} do
      local x = lpnx.randn(c[1], c[2], c[3], c[4])
      local y, idx = K.maxpool2d_forward(x, c[5], c[6], c[7], c[8], c[9], c[10])
      local gy = lpnx.randn(y:size())
      local gx = K.maxpool2d_backward(gy, idx, c[3], c[4])
      local function loss()
        return gradcheck.dot((K.maxpool2d_forward(x, c[5], c[6], c[7], c[8], c[9], c[10])), gy)
      end
      assert.is_true(gradcheck.check(loss, x, gx, {samples = 80}) >= 40)
    end
  end)
end)

describe("upsample", function()
  for _, impl in ipairs(IMPLS) do
    local name, f = impl[1], impl[2]

    it(name .. ".upsample_nearest gives PyTorch's 2x, up and down results", function()
      local x = lpnx.tensor{{{{1, 2, 3}, {4, 5, 6}}}}
      assert.are.same({{{{1, 1, 2, 2, 3, 3}, {1, 1, 2, 2, 3, 3}, {4, 4, 5, 5, 6, 6}, {4, 4, 5, 5, 6, 6}}}},
                      f.upsample_nearest(x, 4, 6):totable())
      assert.are.same({{{{0, 1, 3, 5}, {7, 8, 10, 12}, {21, 22, 24, 26}}}},
                      f.upsample_nearest(lpnx.arange(35):view(1, 1, 5, 7), 3, 4):totable())
      assert.are.same({{{{0, 0, 0, 1, 1, 2, 2}, {0, 0, 0, 1, 1, 2, 2}, {3, 3, 3, 4, 4, 5, 5}}}},
                      f.upsample_nearest(lpnx.arange(6):view(1, 1, 2, 3), 3, 7):totable())
    end)

    -- The kernels round as PyTorch does and match it bit for bit; the
    -- oracles work in double.
    local tol = name == "kernels" and 0 or 1e-6

    it(name .. ".upsample_bilinear gives PyTorch's 2x, up and down results", function()
      assert.are.same({{{{1, 1.5, 2.5, 3}, {2, 2.75, 4.25, 5}, {4, 5.25, 7.75, 9}, {5, 6.5, 9.5, 11}}}},
                      f.upsample_bilinear(lpnx.tensor{{{{1, 3}, {5, 11}}}}, 4, 4):totable())
      local x = lpnx.tensor{{{{1, 2, 4}, {0, -1, 3}, {2, 5, 1}}}}
      h.assert_near(f.upsample_bilinear(x, 5, 7), {{{
        {1, 1.14285719, 1.57142854, 2, 2.85714293, 3.71428585, 4},
        {0.599999964, 0.628571391, 0.714285672, 0.799999952, 2, 3.20000005, 3.5999999},
        {1.1920929e-07, -0.142856985, -0.571428299, -0.999999583, 0.714286029, 2.42857146, 2.99999976},
        {1.20000017, 1.40000033, 2.00000048, 2.60000062, 2.25714302, 1.91428566, 1.79999983},
        {2, 2.42857146, 3.71428585, 5, 3.28571415, 1.57142854, 1}}}}, tol)
      -- x = arange(30).view(1,1,5,6) ** 1.5 / 10, down to 2x3 (pow may differ by an ulp)
      local down = f.upsample_bilinear(lpnx.arange(30):view(1, 1, 5, 6):pow(1.5) / 10, 2, 3)
      h.assert_near(down, {{{{1.25814497, 1.9613353, 2.79371619}, {9.00169182, 10.3737631, 11.8101463}}}}, 1e-5)
    end)

    it(name .. " upsample backward passes give PyTorch's gradients", function()
      -- gy = ((arange(35) % 7) - 3) * 0.5 + arange(35) * 0.01, as (1,1,5,7), back to 3x3
      local k = lpnx.arange(35)
      local gy = (k - (k / 7):floor() * 7 - 3) * 0.5 + k * 0.01
      h.assert_near(f.upsample_bilinear_backward(gy:view(1, 1, 5, 7), 3, 3),
                    {{{{-3.99085689, 0.21857135, 4.40228558}, {-4.02171373, 0.743142664, 5.42057085},
                       {-3.15885735, 1.10257149, 5.23428631}}}}, 2e-6)
      local row1 = {0.333333343, 0.166666597, -0.99999994, 0.0833333582, 0.166666642}
      local row2 = {1, 0.49999997, 0.124999993, -0.166666716, -0.333333284}
      h.assert_near(f.upsample_bilinear_backward(lpnx.tensor{{{{1, -2, 0.5}, {3, 0.25, -1}}}}, 4, 5),
                    {{{row1, row1, row2, row2}}}, tol)
      assert.are.same({{{{-5, -4, 0, -3, 0, -2, 0}, {-1, 0, 0, 1, 0, 2, 0}, {0, 0, 0, 0, 0, 0, 0},
                         {3, 4, 0, 5, 0, 6, 0}, {0, 0, 0, 0, 0, 0, 0}}}},
                      f.upsample_nearest_backward(lpnx.arange(12):view(1, 1, 3, 4) - 5, 5, 7):totable())
    end)
  end

  -- {N, C, H, W, Ho, Wo}: 2x, down, identity, to 1x1, from 1x1, mixed, and
  -- sizes for the threaded loops (several planes, and one image plane).
  local cases = {
    {2, 3, 5, 7, 10, 14}, {1, 1, 5, 7, 3, 4}, {2, 2, 4, 4, 4, 4}, {1, 3, 17, 13, 1, 1},
    {1, 1, 1, 1, 5, 3}, {3, 2, 6, 9, 13, 5}, {1, 3, 60, 50, 128, 96}, {1, 1, 100, 90, 190, 200},
  }

  for _, mode in ipairs{"nearest", "bilinear"} do
    local fwd, bwd = "upsample_" .. mode, "upsample_" .. mode .. "_backward"

    it(fwd .. " and its backward agree with the oracles, up- and down-sizing", function()
      lpnx.manual_seed(41)
      for _, c in ipairs(cases) do
        local x = lpnx.randn(c[1], c[2], c[3], c[4])
        h.assert_near(K[fwd](x, c[5], c[6]), R[fwd](x, c[5], c[6]), 1e-5)
        if c[3] * c[4] <= 3000 then
          local gy = lpnx.randn(c[1], c[2], c[5], c[6])
          h.assert_near(K[bwd](gy, c[3], c[4]), R[bwd](gy, c[3], c[4]), 1e-4)
        end
      end
    end)

    it(bwd .. " matches finite differences", function()
      lpnx.manual_seed(42)
      for _, c in ipairs{{2, 2, 3, 4, 6, 8}, {1, 2, 7, 5, 3, 4}, {1, 1, 4, 6, 7, 3}} do
        local x = lpnx.randn(c[1], c[2], c[3], c[4])
        local gy = lpnx.randn(c[1], c[2], c[5], c[6])
        local gx = K[bwd](gy, c[3], c[4])
        local function loss() return gradcheck.dot(K[fwd](x, c[5], c[6]), gy) end
        assert.is_true(gradcheck.check(loss, x, gx) >= 20)
      end
    end)
  end

  it("upsample backward of the nearest 2x sums each 2x2 block", function()
    local gy = lpnx.arange(16):view(1, 1, 4, 4)
    for _, impl in ipairs(IMPLS) do
      assert.are.same({{{{0 + 1 + 4 + 5, 2 + 3 + 6 + 7}, {8 + 9 + 12 + 13, 10 + 11 + 14 + 15}}}},
                      impl[2].upsample_nearest_backward(gy, 2, 2):totable())
    end
  end)
end)

describe("layer kernels reject bad arguments", function()
  local x = lpnx.zeros(2, 3, 4, 4)
  local c3 = function() return lpnx.zeros(3) end
  local c0 = function() return lpnx.zeros(0) end

  it("batchnorm: channel counts, n == 1 in training, momentum and eps", function()
    for _, impl in ipairs(IMPLS) do
      local f = impl[2]
      assert_message("expected weight (3) to match input channels 3, got (4)", function()
        return f.batchnorm_train(x, lpnx.ones(4), c3(), c3(), c3(), 0.1, 1e-5, c3(), c3())
      end)
      assert_message("expected running_var (3) to match input channels 3, got (3,1)", function()
        return f.batchnorm_eval(x, c3(), c3(), c3(), lpnx.ones(3, 1), 1e-5)
      end)
      assert_message("expected save_invstd (3) to match input channels 3, got (2)", function()
        return f.batchnorm_backward(x, x, c3(), c3(), lpnx.ones(2), c3(), c3())
      end)
      assert_message("expected more than 1 value per channel when training, got input (1,3,1,1)", function()
        return f.batchnorm_train(lpnx.zeros(1, 3, 1, 1), c3(), c3(), c3(), c3(), 0.1, 1e-5, c3(), c3())
      end)
      assert_message("momentum must be in [0, 1], got 1.5", function()
        return f.batchnorm_train(x, c3(), c3(), c3(), c3(), 1.5, 1e-5, c3(), c3())
      end)
      assert_message("eps must be a non-negative number, got -1", function()
        return f.batchnorm_eval(x, c3(), c3(), c3(), c3(), -1)
      end)
      assert_message("expected (N,C,H,W), got 3x4", function()
        return f.batchnorm_eval(lpnx.zeros(3, 4), c3(), c3(), c3(), c3(), 1e-5)
      end)
    end
  end)

  it("batchnorm: statistics written in place must be contiguous", function()
    local strided = lpnx.zeros(3, 2):select(2, 1)
    assert_message("expected a contiguous tensor", function()
      return K.batchnorm_train(x, c3(), c3(), strided, c3(), 0.1, 1e-5, c3(), c3())
    end)
    assert_message("expected a contiguous tensor", function()
      return K.batchnorm_backward_eval(x, x, c3(), c3(), c3(), 1e-5, strided, c3())
    end)
  end)

  it("backward passes: gy must have the input's shape", function()
    for _, impl in ipairs(IMPLS) do
      local f = impl[2]
      assert_message("expected gy (2,3,4,4) to match x, got (2,3,4,5)", function()
        return f.batchnorm_backward(x, lpnx.zeros(2, 3, 4, 5), c3(), c3(), c3(), c3(), c3())
      end)
      assert_message("expected gy (2,3,4,4) to match x, got (2,3,16)", function()
        return f.batchnorm_backward_eval(x, lpnx.zeros(2, 3, 16), c3(), c3(), c3(), 1e-5, c3(), c3())
      end)
      assert_message("expected gy (2,3) to match y, got (3,2)", function()
        return f.relu_backward(lpnx.zeros(2, 3), lpnx.zeros(3, 2))
      end)
      assert_message("expected gy (4) to match y, got (5)", function()
        return f.sigmoid_backward(lpnx.zeros(4), lpnx.zeros(5))
      end)
    end
  end)

  it("maxpool2d: kernel, stride and padding, output size, indices", function()
    for _, impl in ipairs(IMPLS) do
      local f = impl[2]
      assert_message("pad should be at most half of kernel size, got pad_h 2 for kernel_h 3", function()
        return f.maxpool2d_forward(x, 3, 3, 1, 1, 2, 1)
      end)
      assert_message("pad should be at most half of kernel size, got pad_w 1 for kernel_w 1", function()
        return f.maxpool2d_forward(x, 3, 1, 1, 1, 1, 1)
      end)
      assert_message("stride_w must be at least 1, got 0", function()
        return f.maxpool2d_forward(x, 2, 2, 1, 0, 0, 0)
      end)
      assert_message("kernel_h must be an integer, got 2.5", function()
        return f.maxpool2d_forward(x, 2.5, 2, 1, 1, 0, 0)
      end)
      assert_message("output size is too small: input (2,3,4,4) with kernel 5x2, stride 1x1, padding 0x0 gives 0x3",
                     function() return f.maxpool2d_forward(x, 5, 2, 1, 1, 0, 0) end)
      assert_message("expected a non-empty input plane, got (1,1,0,4)", function()
        return f.maxpool2d_forward(lpnx.zeros(1, 1, 0, 4), 2, 2, 1, 1, 1, 1)
      end)
      local y, idx = f.maxpool2d_forward(lpnx.zeros(1, 1, 5, 5), 3, 3, 2, 2, 1, 1)
      assert_message("expected indices (1,1,3,3) to match gy, got (1,1,3,2)", function()
        return f.maxpool2d_backward(y, idx:narrow(4, 1, 2), 5, 5)
      end)
      idx:set(30, 1, 1, 1, 2)
      assert_message("indices hold 30 at (1,1,1,2), not a position in a 5x5 input plane (0 to 24)", function()
        return f.maxpool2d_backward(y, idx, 5, 5)
      end)
      idx:set(1.5, 1, 1, 1, 2)
      assert_message("indices hold 1.5 at (1,1,1,2)", function() return f.maxpool2d_backward(y, idx, 5, 5) end)
      assert_message("H must be at least 1, got 0", function() return f.maxpool2d_backward(y, idx, 0, 5) end)
    end
  end)

  it("maxpool2d: refuses planes whose flat indices float32 cannot hold exactly", function()
    -- no channels, so no memory: the plane size alone is checked
    local big = lpnx.empty(1, 0, 4097, 4097)
    assert_message("expected input planes of at most 16777216 values so that float indices are exact, got 4097x4097",
                   function() return K.maxpool2d_forward(big, 3, 3, 2, 2, 1, 1) end)
    assert_message("got 4097x4097", function()
      return K.maxpool2d_backward(lpnx.zeros(1, 1, 1, 1), lpnx.zeros(1, 1, 1, 1), 4097, 4097)
    end)
    -- 4096x4096 is exactly 2^24 values and is accepted
    local y = K.maxpool2d_forward(lpnx.empty(1, 0, 4096, 4096), 2, 2, 2, 2, 0, 0)
    assert.are.same({1, 0, 2048, 2048}, y:size())
  end)

  it("upsample: output sizes and planes must be non-empty", function()
    for _, impl in ipairs(IMPLS) do
      local f = impl[2]
      assert_message("output height must be at least 1, got 0", function() return f.upsample_nearest(x, 0, 4) end)
      assert_message("output width must be an integer, got string", function()
        return f.upsample_bilinear(x, 4, "4x")
      end)
      assert_message("expected a non-empty input plane, got (2,3,0,4)", function()
        return f.upsample_bilinear(lpnx.zeros(2, 3, 0, 4), 4, 4)
      end)
      assert_message("input width must be at least 1, got -2", function()
        return f.upsample_nearest_backward(x, 4, -2)
      end)
      assert_message("expected (N,C,H,W), got 4x4", function() return f.upsample_nearest(lpnx.zeros(4, 4), 8, 8) end)
    end
    -- no planes: an empty result of the requested size
    assert.are.same({0, 3, 7, 9}, K.upsample_bilinear(lpnx.zeros(0, 3, 4, 4), 7, 9):size())
  end)

  it("tensors without elements give results without elements", function()
    assert.are.same({0, 3, 7, 9}, K.upsample_nearest(lpnx.zeros(0, 3, 4, 4), 7, 9):size())
    assert.are.same({2, 0, 4, 2}, K.upsample_bilinear_backward(lpnx.zeros(2, 0, 3, 3), 4, 2):size())
    assert.are.same({2, 0, 4, 4}, K.batchnorm_eval(lpnx.zeros(2, 0, 4, 4), c0(), c0(), c0(), c0(), 1e-5):size())
    assert.are.same({2, 0, 3, 3},
                    K.batchnorm_train(lpnx.zeros(2, 0, 3, 3), c0(), c0(), c0(), c0(), 0.1, 1e-5, c0(), c0()):size())
    local y, idx = K.maxpool2d_forward(lpnx.zeros(0, 3, 5, 5), 3, 3, 2, 2, 1, 1)
    assert.are.same({0, 3, 3, 3}, y:size())
    assert.are.same({0, 3, 3, 3}, idx:size())
    -- a gy without positions sends no gradient anywhere
    local none = lpnx.zeros(1, 1, 0, 2)
    assert.are.same({{{{0, 0}, {0, 0}}}}, K.maxpool2d_backward(none, none, 2, 2):totable())
  end)
end)
