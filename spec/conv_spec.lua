local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local gradcheck = require "spec.support.gradcheck"

local K, R = lpnx.kernels, lpnx.ref

-- The message of the error f raises.
local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Geometry arguments in the order the kernels take them.
local function geo(c)
  return c.s[1], c.s[2], c.p[1], c.p[2], c.d[1], c.d[2]
end

-- Random x, w, b (nil without bias) and gy for case c.
local function inputs(c, seed)
  lpnx.manual_seed(seed)
  local x = lpnx.randn(c.n, c.cin, c.h, c.w)
  local w = lpnx.randn(c.cout, c.cin, c.kh, c.kw)
  local b = c.bias ~= false and lpnx.randn(c.cout) or nil
  local ho, wo = K.conv2d_output_size(c.h, c.w, c.kh, c.kw, geo(c))
  local gy = lpnx.randn(c.n, c.cout, ho, wo)
  return x, w, b, gy
end

-- Forward and backward of impl (lpnx.kernels or lpnx.ref). gw and gb start
-- from gw0 and gb0 (copied), so the results show what was accumulated.
local function run(impl, c, x, w, b, gy, gw0, gb0, algo)
  local s1, s2, p1, p2, d1, d2 = geo(c)
  local y = impl.conv2d_forward(x, w, b, s1, s2, p1, p2, d1, d2, nil, nil, algo)
  local gw = gw0:clone()
  local gb = gb0 and gb0:clone() or nil
  local gx = impl.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw, gb, true, nil, nil, algo)
  return y, gx, gw, gb
end

-- Absolute tolerance for sums of about cin*kh*kw products of normal values.
local function tol(c)
  return 2e-6 * c.cin * c.kh * c.kw * math.max(1, c.n) + 1e-5
end

-- Asserts a agrees with the oracle's r to tol(c) (times scale), or to 2e-5
-- of r's largest magnitude when that is looser: Winograd F(4x4, 3x3) errs
-- by a few 1e-6 of the output's scale.
local function near(a, r, c, scale)
  h.assert_near(a, r, math.max(tol(c) * (scale or 1), 2e-5 * r:abs():max()))
end

-- The kernels pick their method by shape (see lpnx/ops/conv2d.c): 3x3
-- stride-1 convolutions go to Winograd F(4x4, 3x3) with at least 16 input
-- channels and 64 tiles of 4x4 in the batch, else to F(2x2, 3x3) with at
-- least 64 tiles of 2x2, else to im2col; im2col cuts an image into tiles
-- of about 64K floats of columns or groups small images. The cases name
-- the path their sizes take.
local cases = {
  {name = "3x3 stride 1 pad 1, few tiles: im2col", n = 3, cin = 3, h = 7, w = 6, cout = 4, kh = 3, kw = 3,
   s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "3x3 stride 1 pad 1 on odd sizes: Winograd F(4x4)", n = 2, cin = 16, h = 30, w = 29, cout = 4,
   kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "3x3 stride 1 pad 1 on odd sizes, 3 input channels: Winograd F(2x2)", n = 2, cin = 3, h = 30, w = 29,
   cout = 4, kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "3x3 stride 1 pad 0, one image: Winograd F(2x2)", n = 1, cin = 5, h = 17, w = 18, cout = 3,
   kh = 3, kw = 3, s = {1, 1}, p = {0, 0}, d = {1, 1}, bias = false},
  {name = "3x3 stride 1 pad 2, output larger than the input: Winograd F(4x4)", n = 3, cin = 16, h = 20, w = 19,
   cout = 3, kh = 3, kw = 3, s = {1, 1}, p = {2, 2}, d = {1, 1}},
  {name = "3x3 stride 1 pad 2: Winograd F(2x2)", n = 3, cin = 2, h = 13, w = 11, cout = 2, kh = 3, kw = 3,
   s = {1, 1}, p = {2, 2}, d = {1, 1}},
  {name = "3x3 stride 1, 1x1 outputs only: im2col", n = 1, cin = 3, h = 3, w = 3, cout = 2, kh = 3, kw = 3,
   s = {1, 1}, p = {0, 0}, d = {1, 1}},
  {name = "7x7 stride 2 pad 3 (the ResNet stem)", n = 1, cin = 3, h = 11, w = 13, cout = 4, kh = 7, kw = 7,
   s = {2, 2}, p = {3, 3}, d = {1, 1}},
  {name = "7x7 stride 2 pad 3, two column tiles per image", n = 3, cin = 1, h = 80, w = 79, cout = 2, kh = 7,
   kw = 7, s = {2, 2}, p = {3, 3}, d = {1, 1}},
  {name = "3x3 stride 2 with 576 rows of columns: images grouped 2 to a tile", n = 5, cin = 64, h = 16, w = 15,
   cout = 3, kh = 3, kw = 3, s = {2, 2}, p = {1, 1}, d = {1, 1}},
  {name = "1x1 stride 1 (straight to gemm)", n = 3, cin = 5, h = 5, w = 7, cout = 3, kh = 1, kw = 1,
   s = {1, 1}, p = {0, 0}, d = {1, 1}},
  {name = "1x1 stride 2 (the ResNet downsample)", n = 3, cin = 4, h = 7, w = 9, cout = 6, kh = 1, kw = 1,
   s = {2, 2}, p = {0, 0}, d = {1, 1}, bias = false},
  {name = "1x1 stride 2, the whole batch gathered into one tile", n = 5, cin = 24, h = 12, w = 11, cout = 4,
   kh = 1, kw = 1, s = {2, 2}, p = {0, 0}, d = {1, 1}},
  {name = "3x3 stride 2 pad 1 on odd sizes", n = 3, cin = 2, h = 9, w = 7, cout = 5, kh = 3, kw = 3,
   s = {2, 2}, p = {1, 1}, d = {1, 1}},
  {name = "3x3 dilation 2 pad 2", n = 2, cin = 3, h = 8, w = 9, cout = 2, kh = 3, kw = 3,
   s = {1, 1}, p = {2, 2}, d = {2, 2}},
  {name = "non-square 3x2 kernel, stride (2,1), pad (1,0)", n = 1, cin = 2, h = 7, w = 6, cout = 3, kh = 3, kw = 2,
   s = {2, 1}, p = {1, 0}, d = {1, 1}},
  {name = "non-square 1x5 kernel, stride (1,3), pad (2,1), dilation (3,2)", n = 3, cin = 3, h = 5, w = 13,
   cout = 2, kh = 1, kw = 5, s = {1, 3}, p = {2, 1}, d = {3, 2}},
  {name = "3x3 without bias, stride 3, the last rows unused", n = 1, cin = 4, h = 10, w = 11, cout = 3,
   kh = 3, kw = 3, s = {3, 3}, p = {0, 0}, d = {1, 1}, bias = false},
  {name = "1x1 with padding 1 (padding alone needs columns)", n = 2, cin = 3, h = 3, w = 4, cout = 2,
   kh = 1, kw = 1, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "5x5 pad 2 on a 3x4 input (kernel larger than the image)", n = 2, cin = 2, h = 3, w = 4, cout = 3,
   kh = 5, kw = 5, s = {1, 1}, p = {2, 2}, d = {1, 1}},
  {name = "5x5 pad 2 on a 2x1 input (most windows wholly in the padding)", n = 3, cin = 2, h = 2, w = 1, cout = 2,
   kh = 5, kw = 5, s = {1, 1}, p = {2, 2}, d = {1, 1}},
  {name = "3x3 pad 4 stride 2 dilation 3 on a 1x2 input", n = 1, cin = 3, h = 1, w = 2, cout = 2,
   kh = 3, kw = 3, s = {2, 2}, p = {4, 4}, d = {3, 3}},
}

-- Shapes large enough (a million multiply-adds and more) that the threads
-- split the work: Winograd blocks of tile rows shared out in two phases,
-- blocks of whole images, products shared out within one block; im2col
-- tiles shared out.
local threaded = {
  {name = "Winograd F(4x4), five blocks of tile rows per image", n = 1, cin = 16, h = 120, w = 120, cout = 2,
   kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "Winograd F(2x2), three blocks of tile rows per image", n = 2, cin = 2, h = 130, w = 131, cout = 3,
   kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "Winograd F(4x4), one block per image", n = 4, cin = 16, h = 40, w = 36, cout = 6,
   kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
  {name = "Winograd F(2x2), blocks in sequence, each shared by the threads", n = 1, cin = 48, h = 28, w = 28,
   cout = 16, kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}, bias = false},
  {name = "im2col, column tiles shared out", n = 4, cin = 1, h = 80, w = 79, cout = 4, kh = 7, kw = 7,
   s = {2, 2}, p = {3, 3}, d = {1, 1}},
  {name = "im2col, two tiles in sequence, each one product", n = 4, cin = 32, h = 16, w = 16, cout = 64,
   kh = 3, kw = 3, s = {2, 2}, p = {1, 1}, d = {1, 1}},
  {name = "1x1 stride 1, products cut into blocks of columns", n = 2, cin = 64, h = 32, w = 32, cout = 128,
   kh = 1, kw = 1, s = {1, 1}, p = {0, 0}, d = {1, 1}},
}

describe("conv2d: the kernels agree with the direct oracle", function()
  for i, c in ipairs(cases) do
    it(c.name .. (" (batch %d)"):format(c.n), function()
      local x, w, b, gy = inputs(c, 100 + i)
      -- gw and gb start non-zero: the kernels must add to them.
      local gw0, gb0 = lpnx.randn(c.cout, c.cin, c.kh, c.kw), b and lpnx.randn(c.cout) or nil
      local y, gx, gw, gb = run(K, c, x, w, b, gy, gw0, gb0)
      local ry, rgx, rgw, rgb = run(R, c, x, w, b, gy, gw0, gb0)
      local ho, wo = K.conv2d_output_size(c.h, c.w, c.kh, c.kw, geo(c))
      assert.are.same({c.n, c.cout, ho, wo}, y:size())
      assert.are.same({c.n, c.cin, c.h, c.w}, gx:size())
      assert(ry:abs():max() > 0.1, "the oracle output is not trivially zero")
      near(y, ry, c)
      near(gx, rgx, c)
      near(gw, rgw, c, ho * wo)
      if b then
        h.assert_near(gb, rgb, 1e-4 * math.max(1, c.n * ho * wo / 100))
      end
    end)
  end

  it("algorithm double rounds each output of the exact sum once: within 1 ulp of the oracle", function()
    for i, c in ipairs(cases) do
      local x, w, b = inputs(c, 300 + i)
      local s1, s2, p1, p2, d1, d2 = geo(c)
      local y = K.conv2d_forward(x, w, b, s1, s2, p1, p2, d1, d2, nil, nil, "double")
      h.assert_ulps(y, R.conv2d_forward(x, w, b, geo(c)), 1, c.name)
    end
  end)

  it("accepts non-contiguous x and gy (copied first)", function()
    local c = cases[14]
    assert.are.equal("3x3 stride 2 pad 1 on odd sizes", c.name)
    local x, w, b, gy = inputs(c, 7)
    local xt = x:transpose(3, 4):contiguous():transpose(3, 4) -- same values, strided
    local gyt = gy:transpose(1, 2):contiguous():transpose(1, 2)
    assert.is_false(xt:is_contiguous())
    assert.is_false(gyt:is_contiguous())
    local gw0, gb0 = lpnx.zeros(c.cout, c.cin, c.kh, c.kw), lpnx.zeros(c.cout)
    local y, gx, gw, gb = run(K, c, x, w, b, gy, gw0, gb0)
    local y2, gx2, gw2, gb2 = run(K, c, xt, w, b, gyt, gw0, gb0)
    assert.is_true(y:equal(y2))
    assert.is_true(gx:equal(gx2))
    assert.is_true(gw:equal(gw2))
    assert.is_true(gb:equal(gb2))
  end)

  for i, c in ipairs(threaded) do
    for _, algo in ipairs {"winograd", "direct", "double"} do
      it(("on one thread and on two (%s): %s"):format(algo, c.name), function()
        local x, w, b, gy = inputs(c, 150 + i)
        local threads = lpnx.get_num_threads()
        local gw0, gb0 = lpnx.zeros(c.cout, c.cin, c.kh, c.kw), b and lpnx.zeros(c.cout) or nil
        lpnx.set_num_threads(1)
        local y1, gx1, gw1, gb1 = run(K, c, x, w, b, gy, gw0, gb0, algo)
        lpnx.set_num_threads(2)
        local ok, y2, gx2, gw2, gb2 = pcall(run, K, c, x, w, b, gy, gw0, gb0, algo)
        local ok3, y3, gx3, gw3 = pcall(run, K, c, x, w, b, gy, gw0, gb0, algo)
        lpnx.set_num_threads(threads)
        assert(ok, y2)
        assert(ok3, y3)
        -- the same bits from run to run, weight gradient included
        assert.is_true(y2:equal(y3))
        assert.is_true(gx2:equal(gx3))
        assert.is_true(gw2:equal(gw3))
        -- The work is cut into the same pieces on any number of threads
        -- and the pieces are added in the same order: the same bits.
        assert.is_true(y1:equal(y2))
        assert.is_true(gx1:equal(gx2))
        assert.is_true(gw1:equal(gw2))
        if b then assert.is_true(gb1:equal(gb2)) end
        local ry, rgx, rgw = run(R, c, x, w, b, gy, gw0, gb0)
        local ho, wo = K.conv2d_output_size(c.h, c.w, c.kh, c.kw, geo(c))
        near(y2, ry, c)
        near(gx2, rgx, c)
        near(gw2, rgw, c, ho * wo)
      end)
    end
  end

  it("Winograd stays within 1e-5 of the oracle's scale at the network's magnitudes", function()
    -- He-initialised weights on unit inputs, as in the U-Net's decoder; the
    -- error is the largest difference over the largest magnitude.
    for _, c in ipairs {
      {n = 4, cin = 64, h = 16, w = 16, cout = 16, kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}}, -- F(4x4)
      {n = 1, cin = 64, h = 16, w = 16, cout = 16, kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}}, -- F(2x2)
    } do
      local x, w, _, gy = inputs(c, 170)
      w = w * math.sqrt(2 / (c.cin * 9))
      local gw0 = lpnx.zeros(c.cout, c.cin, 3, 3)
      local y, gx, gw = run(K, c, x, w, nil, gy, gw0, nil)
      local ry, rgx, rgw = run(R, c, x, w, nil, gy, gw0, nil)
      local function rel(a, r) return (a - r):abs():max() / r:abs():max() end
      local errors = {forward = rel(y, ry), ["input gradient"] = rel(gx, rgx), ["weight gradient"] = rel(gw, rgw)}
      for name, e in pairs(errors) do
        assert(e < 1e-5, ("%s: relative error %g"):format(name, e))
      end
    end
  end)
end)

describe("conv2d gradients match finite differences", function()
  local checked = {
    {name = "3x3 stride 2 pad 1 dilation 2 with bias, batch 2", n = 2, cin = 2, h = 7, w = 6, cout = 3,
     kh = 3, kw = 3, s = {2, 2}, p = {1, 1}, d = {2, 2}},
    {name = "7x7 stride 2 pad 3", n = 1, cin = 2, h = 9, w = 8, cout = 2, kh = 7, kw = 7,
     s = {2, 2}, p = {3, 3}, d = {1, 1}},
    {name = "1x1 stride 1", n = 3, cin = 3, h = 4, w = 5, cout = 2, kh = 1, kw = 1,
     s = {1, 1}, p = {0, 0}, d = {1, 1}},
    {name = "3x3 stride 1 pad 1 through Winograd F(4x4)", n = 4, cin = 16, h = 15, w = 16, cout = 2, kh = 3,
     kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}},
    {name = "3x3 stride 1 pad 0 through Winograd F(2x2)", n = 2, cin = 2, h = 13, w = 14, cout = 3, kh = 3, kw = 3,
     s = {1, 1}, p = {0, 0}, d = {1, 1}},
    {name = "7x7 stride 2 pad 3 in two column tiles per image", n = 2, cin = 1, h = 80, w = 76, cout = 2, kh = 7,
     kw = 7, s = {2, 2}, p = {3, 3}, d = {1, 1}},
  }
  for i, c in ipairs(checked) do
    it(c.name, function()
      local x, w, b, gy = inputs(c, 200 + i)
      local function loss()
        return gradcheck.dot(K.conv2d_forward(x, w, b, geo(c)), gy)
      end
      local gw, gb = lpnx.zeros(c.cout, c.cin, c.kh, c.kw), lpnx.zeros(c.cout)
      local s1, s2, p1, p2, d1, d2 = geo(c)
      local gx = K.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw, gb, true)
      assert(gradcheck.check(loss, x, gx, {samples = 40}) > 0)
      assert(gradcheck.check(loss, w, gw, {samples = 40}) > 0)
      assert(gradcheck.check(loss, b, gb) > 0)
    end)
  end

  it("holds for the oracle too", function()
    local c = checked[1]
    local x, w, b, gy = inputs(c, 210)
    local function loss()
      return gradcheck.dot(R.conv2d_forward(x, w, b, geo(c)), gy)
    end
    local gw, gb = lpnx.zeros(c.cout, c.cin, c.kh, c.kw), lpnx.zeros(c.cout)
    local s1, s2, p1, p2, d1, d2 = geo(c)
    local gx = R.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw, gb, true)
    gradcheck.check(loss, x, gx, {samples = 30})
    gradcheck.check(loss, w, gw, {samples = 30})
    gradcheck.check(loss, b, gb)
  end)
end)

describe("conv2d exact values", function()
  for _, impl in ipairs {{"kernels", K}, {"ref", R}} do
    local name, f = impl[1], impl[2]

    it(name .. ": a 2x2 kernel over 1..9 worked by hand", function()
      local x = lpnx.tensor{{{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}}}
      local w = lpnx.tensor{{{{1, 2}, {3, 4}}}}
      local b = lpnx.tensor{1}
      -- y[0][0] = 1*1 + 2*2 + 4*3 + 5*4 + 1 = 38, and so on.
      local y = f.conv2d_forward(x, w, b, 1, 1, 0, 0, 1, 1)
      assert.are.same({{{{38, 48}, {68, 78}}}}, y:totable())
      local gw, gb = lpnx.zeros(1, 1, 2, 2), lpnx.zeros(1)
      local gx = f.conv2d_backward(x, w, lpnx.ones(1, 1, 2, 2), 1, 1, 0, 0, 1, 1, gw, gb, true)
      -- gw: the sum of each 2x2 window's pixel at that kernel position;
      -- gx: the sum of the kernel entries that touched each pixel.
      assert.are.same({{{{12, 16}, {24, 28}}}}, gw:totable())
      assert.are.same({4}, gb:totable())
      assert.are.same({{{{1, 3, 2}, {4, 10, 6}, {3, 7, 4}}}}, gx:totable())
    end)

    it(name .. ": stride 2 with padding 1 reads zeros outside the image", function()
      local x = lpnx.tensor{{{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}}}
      local w = lpnx.ones(1, 1, 3, 3)
      -- Windows centred on the corners: 3x3 sums clipped to the image.
      local y = f.conv2d_forward(x, w, nil, 2, 2, 1, 1, 1, 1)
      assert.are.same({{{{12, 16}, {24, 28}}}}, y:totable())
      local gw = lpnx.zeros(1, 1, 3, 3)
      local gx = f.conv2d_backward(x, w, lpnx.ones(1, 1, 2, 2), 2, 2, 1, 1, 1, 1, gw, nil, true)
      assert.are.same({{{{1, 2, 1}, {2, 4, 2}, {1, 2, 1}}}}, gx:totable())
      assert.are.same({{{{5, 10, 5}, {10, 20, 10}, {5, 10, 5}}}}, gw:totable())
    end)

    it(name .. ": matches PyTorch on a small strided, padded, dilated case", function()
      -- Expected values from torch 1.13 (float64 on these float32 inputs):
      --   F.conv2d(x, w, b, stride=(2,1), padding=(1,0), dilation=(1,2)); y.backward(gy)
      -- with x[i] = i/10 - 2, w[i] = ((i % 7) - 3)/4, gy[i] = ((i % 5) - 2)/2 (i from 0).
      local function filled(n, fn, ...)
        local t = {}
        for i = 0, n - 1 do t[i + 1] = fn(i) end
        return lpnx.tensor(t):view(...)
      end
      local x = filled(40, function(i) return i / 10 - 2 end, 1, 2, 4, 5)
      local w = filled(36, function(i) return (i % 7 - 3) / 4 end, 3, 2, 3, 2)
      local b = lpnx.tensor{0.5, -1, 0.25}
      local gy = filled(18, function(i) return (i % 5 - 2) / 2 end, 1, 3, 2, 3)
      local y = f.conv2d_forward(x, w, b, 2, 1, 1, 0, 1, 2)
      h.assert_near(y, lpnx.tensor{
        0.10000002, 0.0999999754, 0.0999999791, 1.72499998, 1.59999999, 1.47499996,
        1.19999998, 0.974999977, 0.749999974, -2.30000001, -2.32499998, -2.34999995,
        -0.374999978, -0.300000003, -0.225000005, -0.075000003, 4.47034836e-08, 0.0750000365,
      }:view(1, 3, 2, 3), 1e-5)
      local gw, gb = lpnx.zeros(3, 2, 3, 2), lpnx.zeros(3)
      local gx = f.conv2d_backward(x, w, gy, 2, 1, 1, 0, 1, 2, gw, gb, true)
      h.assert_near(gx, lpnx.tensor{
        0.625, 0.375, 0.375, 0.375, 0.5, 0, -1.75, -0.625, -1.875, -0.375,
        -1.375, 0.25, -0.625, 0.125, 0.25, 0.625, 0.875, 0.625, 0.75, -0.5,
        0.125, 0.375, 1.25, 0.375, 0.125, 1.125, 1, -0.375, -1.75, -0.375,
        0.25, -1.375, -1.25, 0.25, 0.625, -1.25, 0.125, 0.875, 0.875, -0.125,
      }:view(1, 2, 4, 5), 1e-5)
      h.assert_near(gw, lpnx.tensor{
        -0.850000024, -0.75, 2.35000002, 2.15000001, 1.84999999, 1.64999997,
        0.150000036, 0.25000003, 0.349999975, 0.149999991, -0.150000036, -0.349999994,
        0.549999952, 0.450000107, 0.400000006, 0.299999952, 0.150000036, 0.049999956,
        -0.450000018, -0.550000012, -0.600000046, -0.699999891, -0.850000054, -0.949999899,
        2.19999999, 1.89999998, -1.29999995, -1.30000004, -1.29999994, -1.30000003,
        -0.800000012, -1.09999999, -1.30000001, -1.30000001, -1.30000001, -1.30000004,
      }:view(3, 2, 3, 2), 1e-5)
      h.assert_near(gb, {-1, -0.5, 0}, 1e-6)
    end)

    it(name .. ": matches PyTorch on a 3x3 padded convolution of 16x16 images (Winograd F(2x2))", function()
      -- Expected values from torch 1.13 (float64 on these float32 inputs):
      --   F.conv2d(x, w, b, padding=1); y.backward(gy)
      -- with x[i] = ((7i) % 13 - 6)/4, w[i] = ((i % 5) - 2)/3, gy[i] = ((i % 9) - 4)/8 (i from 0).
      local function filled(n, fn, ...)
        local t = {}
        for i = 0, n - 1 do t[i + 1] = fn(i) end
        return lpnx.tensor(t):view(...)
      end
      local x = filled(4 * 2 * 16 * 16, function(i) return ((7 * i) % 13 - 6) / 4 end, 4, 2, 16, 16)
      local w = filled(36, function(i) return (i % 5 - 2) / 3 end, 2, 2, 3, 3)
      local b = lpnx.tensor{0.5, -0.25}
      local gy = filled(4 * 2 * 16 * 16, function(i) return (i % 9 - 4) / 8 end, 4, 2, 16, 16)
      local y = f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1)
      local gw, gb = lpnx.zeros(2, 2, 3, 3), lpnx.zeros(2)
      local gx = f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, gb, true)
      local at = {{1, 1, 1, 1}, {1, 2, 1, 16}, {2, 1, 8, 9}, {3, 2, 16, 16}, {4, 1, 16, 1}, {4, 2, 5, 12}}
      local want_y = {-0.750000037, -2.16666672, -0.250000022, 0.750000030, -0.500000030, 0.583333358}
      local want_gx = {-1.16666670, 0.750000022, -0.375000011, -0.375000011, -0.250000007, 0.125000004}
      for k, p in ipairs(at) do
        assert.is_near(want_y[k], y:get(table.unpack(p)), 1e-5)
        assert.is_near(want_gx[k], gx:get(table.unpack(p)), 1e-5)
      end
      h.assert_near(gw, lpnx.tensor{
        -1.15625, -0.4375, -1.5625, -0.09375, 0.6875, 1.125, -1.21875, -0.78125, -1.5625,
        -3.1875, -0.8125, -1.0625, 0.8125, -0.3125, -0.5, 0.875, -0.0625, 2.0,
        -0.34375, -0.6875, -0.3125, 0.3125, -0.15625, -1.125, 0.6875, 0.5, -0.28125,
        1.03125, 1.0625, 0.5625, 0.375, -0.96875, -0.78125, -1.0, 0.375, -0.84375,
      }:view(2, 2, 3, 3), 1e-4)
      h.assert_near(gb, {-1.25, 0}, 1e-5)
    end)

    it(name .. ": matches PyTorch on 16 channels of 16x16 images (Winograd F(4x4))", function()
      -- Expected values from torch 1.13 (float64 on these float32 inputs):
      --   F.conv2d(x, w, b, padding=1); y.backward(gy)
      -- with x[i] = ((7i) % 13 - 6)/4, w[i] = ((i % 5) - 2)/8, gy[i] = ((i % 9) - 4)/8 (i from 0);
      -- every value is a multiple of 1/32, so these are exact.
      local function filled(n, fn, ...)
        local t = {}
        for i = 0, n - 1 do t[i + 1] = fn(i) end
        return lpnx.tensor(t):view(...)
      end
      local x = filled(4 * 16 * 16 * 16, function(i) return ((7 * i) % 13 - 6) / 4 end, 4, 16, 16, 16)
      local w = filled(2 * 16 * 9, function(i) return (i % 5 - 2) / 8 end, 2, 16, 3, 3)
      local b = lpnx.tensor{0.5, -0.25}
      local gy = filled(4 * 2 * 16 * 16, function(i) return (i % 9 - 4) / 8 end, 4, 2, 16, 16)
      local y = f.conv2d_forward(x, w, b, 1, 1, 1, 1, 1, 1)
      local gw, gb = lpnx.zeros(2, 16, 3, 3), lpnx.zeros(2)
      local gx = f.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, gb, true)
      local checks = {
        {y, {{1, 1, 1, 1}, {1, 2, 1, 16}, {2, 1, 8, 9}, {3, 2, 16, 16}, {4, 1, 16, 1}, {4, 2, 5, 12}},
         {-0.875, -0.65625, 0.5, 0.90625, -0.125, -0.21875}},
        {gx, {{1, 1, 1, 1}, {1, 16, 1, 16}, {2, 5, 8, 9}, {3, 9, 16, 16}, {4, 12, 16, 1}, {4, 2, 5, 12}},
         {-0.3125, -0.3125, 0.3125, 0.15625, -0.125, 0.125}},
        {gw, {{1, 1, 1, 1}, {1, 16, 3, 3}, {2, 5, 2, 2}, {2, 9, 1, 3}, {1, 12, 3, 1}, {2, 2, 2, 1}},
         {-0.40625, -3.21875, 2.71875, 0.71875, 4.40625, 2.34375}},
      }
      for _, c in ipairs(checks) do
        for k, p in ipairs(c[2]) do assert.is_near(c[3][k], c[1]:get(table.unpack(p)), 1e-4) end
      end
      h.assert_near(gb, {-1.25, 0}, 1e-5)
    end)
  end

  it("3x3 box sums over 16 channels of 32x32 images through Winograd F(4x4) match a sum in Lua", function()
    local x = lpnx.empty(2, 16, 32, 32)
    local plane = {} -- the channel sum of each image, [n][i][j]
    for n = 1, 2 do
      plane[n] = {}
      for i = 1, 32 do
        plane[n][i] = {}
        for j = 1, 32 do
          local s = 0
          for c = 1, 16 do
            local v = (n * 5 + c * 2 + i * 3 + j * 7) % 11 - 5
            x:set(v, n, c, i, j)
            s = s + v
          end
          plane[n][i][j] = s
        end
      end
    end
    local y = K.conv2d_forward(x, lpnx.ones(1, 16, 3, 3), nil, 1, 1, 1, 1, 1, 1)
    local worst = 0
    for n = 1, 2 do
      for i = 1, 32 do
        for j = 1, 32 do
          local s = 0
          for a = math.max(1, i - 1), math.min(32, i + 1) do
            for b = math.max(1, j - 1), math.min(32, j + 1) do s = s + plane[n][a][b] end
          end
          worst = math.max(worst, math.abs(y:get(n, 1, i, j) - s))
        end
      end
    end
    -- sums reach a few hundred; F(4x4) rounds to a few 1e-6 of that
    assert(worst < 5e-3, ("largest difference %g"):format(worst))
  end)

  it("conv2d_output_size follows PyTorch's formula", function()
    assert.are.same({128, 128}, {K.conv2d_output_size(256, 256, 7, 7, 2, 2, 3, 3, 1, 1)})
    assert.are.same({64, 64}, {K.conv2d_output_size(128, 128, 1, 1, 2, 2, 0, 0, 1, 1)})
    -- floor((5 + 2 - 2 - 1) / 2) + 1 = 3 and floor((6 - 2*1 - 1) / 1) + 1 = 4
    assert.are.same({3, 4}, {K.conv2d_output_size(5, 6, 3, 2, 2, 1, 1, 0, 1, 2)})
    assert.are.same({1, 1}, {K.conv2d_output_size(1, 1, 3, 3, 1, 1, 1, 1, 1, 1)})
  end)
end)

describe("conv2d backward semantics", function()
  local c = {n = 2, cin = 3, h = 6, w = 5, cout = 4, kh = 3, kw = 3, s = {1, 2}, p = {1, 1}, d = {1, 1}}

  it("accumulates: calling backward twice doubles gw and gb", function()
    local x, w, _, gy = inputs(c, 300)
    local gw, gb = lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4)
    local s1, s2, p1, p2, d1, d2 = geo(c)
    K.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw, gb, false)
    local once_w, once_b = gw:clone(), gb:clone()
    assert(once_w:abs():max() > 0.1 and once_b:abs():max() > 0.1)
    K.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw, gb, false)
    h.assert_near(gw, once_w * 2, 1e-5)
    h.assert_near(gb, once_b * 2, 1e-5)
    local rw, rb = lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4)
    R.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, rw, rb, false)
    R.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, rw, rb, false)
    h.assert_near(rw, once_w * 2, 1e-4)
    h.assert_near(rb, once_b * 2, 1e-5)
  end)

  it("returns nil without need_gx and still fills gw", function()
    local x, w, _, gy = inputs(c, 301)
    local s1, s2, p1, p2, d1, d2 = geo(c)
    local gw1, gw2 = lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4, 3, 3, 3)
    local gx = K.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw1, nil, true)
    assert.are.same({2, 3, 6, 5}, gx:size())
    assert.is_nil(K.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, gw2, nil, false))
    assert.is_nil(R.conv2d_backward(x, w, gy, s1, s2, p1, p2, d1, d2, lpnx.zeros(4, 3, 3, 3), nil, false))
    assert.is_true(gw1:equal(gw2))
    assert(gw1:abs():max() > 0.1)
  end)

  it("parts: two halves of a batch, each holding every other image, sum to the whole batch's bits", function()
    lpnx.manual_seed(310)
    local x, w = lpnx.randn(4, 16, 16, 16), lpnx.randn(8, 16, 3, 3)
    local gy = lpnx.randn(4, 8, 16, 16)
    local function rows(t, a, b) return lpnx.cat({t:narrow(1, a, 1), t:narrow(1, b, 1)}, 1) end
    for _, algo in ipairs {"winograd", "winograd2", "direct"} do
      local gw, gb = lpnx.zeros(8, 16, 3, 3), lpnx.zeros(8)
      K.conv2d_backward(x, w, gy, 1, 1, 1, 1, 1, 1, gw, gb, false, nil, nil, algo)
      local hw, hb = {}, {}
      for r, pick in ipairs {{1, 3}, {2, 4}} do
        hw[r], hb[r] = lpnx.zeros(8, 16, 3, 3), lpnx.zeros(8)
        K.conv2d_backward(rows(x, pick[1], pick[2]), w, rows(gy, pick[1], pick[2]), 1, 1, 1, 1, 1, 1,
                          hw[r], hb[r], false, nil, nil, algo, 2)
      end
      assert.is_true(gw:equal(hw[1] + hw[2]), algo)
      assert.is_true(gb:equal(hb[1] + hb[2]), algo)
    end
    assert.matches("parts must be a power of two of processes, got 3",
      message(function() K.conv2d_forward(x, w, nil, 1, 1, 1, 1, 1, 1, nil, nil, "direct", 3) end))
    assert.matches("parts must be a power of two of processes, got string",
      message(function() K.conv2d_workspace_size(x, w, 1, 1, 1, 1, 1, 1, nil, "2") end))
  end)

  it("an empty batch gives an empty output and adds nothing", function()
    local x, w = lpnx.zeros(0, 3, 6, 5), lpnx.randn(4, 3, 3, 3)
    local y = K.conv2d_forward(x, w, lpnx.ones(4), 1, 1, 1, 1, 1, 1)
    assert.are.same({0, 4, 6, 5}, y:size())
    local gw, gb = lpnx.ones(4, 3, 3, 3), lpnx.ones(4)
    local gx = K.conv2d_backward(x, w, lpnx.zeros(0, 4, 6, 5), 1, 1, 1, 1, 1, 1, gw, gb, true)
    assert.are.same({0, 3, 6, 5}, gx:size())
    assert.is_true(gw:equal(lpnx.ones(4, 3, 3, 3)))
    assert.is_true(gb:equal(lpnx.ones(4)))
  end)
end)

describe("conv2d workspace", function()
  -- Its size depends on the method and the thread count; these are larger
  -- than any of them needs here, or smaller than all of them.
  local large, small = 200000, 4
  local im2col = {n = 2, cin = 3, h = 6, w = 5, cout = 4, kh = 3, kw = 3, s = {2, 1}, p = {1, 1}, d = {1, 1}}
  local winograd = {n = 4, cin = 3, h = 16, w = 16, cout = 4, kh = 3, kw = 3, s = {1, 1}, p = {1, 1}, d = {1, 1}}

  for _, c in ipairs {im2col, winograd} do
    it("is used as scratch when large enough (" .. (c == winograd and "Winograd" or "im2col") .. ")", function()
      local x, w, b, gy = inputs(c, 400)
      local ws = lpnx.full({large}, 0 / 0)
      local y = K.conv2d_forward(x, w, b, c.s[1], c.s[2], 1, 1, 1, 1, ws)
      assert.is_true(y:equal(K.conv2d_forward(x, w, b, c.s[1], c.s[2], 1, 1, 1, 1)))
      assert(ws:ne(ws):sum() < large, "the workspace was written")
      local gw1, gw2 = lpnx.zeros(4, 3, 3, 3), lpnx.zeros(4, 3, 3, 3)
      ws:fill_(0 / 0)
      local gx1 = K.conv2d_backward(x, w, gy, c.s[1], c.s[2], 1, 1, 1, 1, gw1, nil, true, ws)
      local gx2 = K.conv2d_backward(x, w, gy, c.s[1], c.s[2], 1, 1, 1, 1, gw2, nil, true)
      assert.is_true(gx1:equal(gx2))
      assert.is_true(gw1:equal(gw2))
      assert(ws:ne(ws):sum() < large, "the workspace was written")
    end)
  end

  it("is left alone when too small, and ignored by the oracle", function()
    for _, c in ipairs {im2col, winograd} do
      local x, w, b = inputs(c, 401)
      local ws = lpnx.full({2, small // 2}, 0 / 0)
      local y = K.conv2d_forward(x, w, b, c.s[1], c.s[2], 1, 1, 1, 1, ws)
      near(y, R.conv2d_forward(x, w, b, c.s[1], c.s[2], 1, 1, 1, 1, ws), c)
      assert.are.equal(ws:numel(), ws:ne(ws):sum())
    end
  end)

  it("is not needed by a 1x1 stride-1 convolution", function()
    local x, w = lpnx.randn(2, 3, 4, 4), lpnx.randn(5, 3, 1, 1)
    local ws = lpnx.full({100}, 0 / 0)
    local y = K.conv2d_forward(x, w, nil, 1, 1, 0, 0, 1, 1, ws)
    h.assert_near(y, R.conv2d_forward(x, w, nil, 1, 1, 0, 0, 1, 1), 1e-5)
    assert.are.equal(100, ws:ne(ws):sum())
  end)
end)

describe("conv2d argument errors", function()
  local x, w = lpnx.zeros(1, 3, 8, 8), lpnx.zeros(4, 3, 3, 3)
  for _, impl in ipairs {{"kernels", K}, {"ref", R}} do
    local name, f = impl[1], impl[2]

    it(name .. ": a weight with the wrong channel count", function()
      assert.matches("expected weight (64,3,7,7) to match input channels 3, got (64,4,7,7)",
                     message(function() f.conv2d_forward(x, lpnx.zeros(64, 4, 7, 7), nil, 2, 2, 3, 3, 1, 1) end),
                     1, true)
      assert.matches("expected weight (Cout,Cin,kh,kw), got (4,3,3)",
                     message(function() f.conv2d_forward(x, lpnx.zeros(4, 3, 3), nil, 1, 1, 0, 0, 1, 1) end),
                     1, true)
      assert.matches("expected a kernel of at least 1x1, got weight (4,3,0,3)",
                     message(function() f.conv2d_forward(x, lpnx.zeros(4, 3, 0, 3), nil, 1, 1, 0, 0, 1, 1) end),
                     1, true)
    end)

    it(name .. ": an input that is not NCHW, or a bias of the wrong size", function()
      assert.matches("expected (N,C,H,W), got 3x8x8",
                     message(function() f.conv2d_forward(lpnx.zeros(3, 8, 8), w, nil, 1, 1, 0, 0, 1, 1) end),
                     1, true)
      assert.matches("expected bias (4) for 4 output channels, got (3)",
                     message(function() f.conv2d_forward(x, w, lpnx.zeros(3), 1, 1, 0, 0, 1, 1) end), 1, true)
    end)

    it(name .. ": an input too small for the kernel", function()
      assert.matches("input (1,3,2,2) is too small for the kernel: padded size 4x4 is smaller than "
                     .. "the dilated kernel 5x5",
                     message(function()
                       f.conv2d_forward(lpnx.zeros(1, 3, 2, 2), lpnx.zeros(4, 3, 5, 5), nil, 1, 1, 1, 1, 1, 1)
                     end), 1, true)
      assert.matches("input (1,3,8,8) is too small for the kernel: padded size 8x8 is smaller than "
                     .. "the dilated kernel 9x3",
                     message(function() f.conv2d_forward(x, w, nil, 1, 1, 0, 0, 4, 1) end), 1, true)
    end)

    it(name .. ": bad stride, padding or dilation", function()
      assert.matches("stride_h must be an integer >= 1, got 0",
                     message(function() f.conv2d_forward(x, w, nil, 0, 1, 0, 0, 1, 1) end), 1, true)
      assert.matches("stride_w must be an integer >= 1, got 1.5",
                     message(function() f.conv2d_forward(x, w, nil, 1, 1.5, 0, 0, 1, 1) end), 1, true)
      assert.matches("pad_w must be an integer >= 0, got -1",
                     message(function() f.conv2d_forward(x, w, nil, 1, 1, 0, -1, 1, 1) end), 1, true)
      assert.matches("dil_h must be an integer >= 1, got nil",
                     message(function() f.conv2d_forward(x, w, nil, 1, 1, 0, 0) end), 1, true)
      assert.matches("stride_h must be at most 2147483647, got 4294967296",
                     message(function() f.conv2d_forward(x, w, nil, 2 ^ 32, 1, 0, 0, 1, 1) end), 1, true)
    end)

    it(name .. ": a gy that does not match the forward output", function()
      assert.matches("expected gy (1,4,6,6) to match the forward output, got (1,4,6,7)",
                     message(function()
                       f.conv2d_backward(x, w, lpnx.zeros(1, 4, 6, 7), 1, 1, 0, 0, 1, 1, lpnx.zeros(4, 3, 3, 3),
                                         nil, true)
                     end), 1, true)
    end)

    it(name .. ": gradient buffers of the wrong shape or layout", function()
      local gy = lpnx.zeros(1, 4, 6, 6)
      assert.matches("expected gw (4,3,3,3) like the weight, got (4,3,3)",
                     message(function()
                       f.conv2d_backward(x, w, gy, 1, 1, 0, 0, 1, 1, lpnx.zeros(4, 3, 3), nil, true)
                     end), 1, true)
      assert.matches("expected a contiguous tensor",
                     message(function()
                       local gw = lpnx.zeros(3, 4, 3, 3):transpose(1, 2)
                       f.conv2d_backward(x, w, gy, 1, 1, 0, 0, 1, 1, gw, nil, true)
                     end), 1, true)
      assert.matches("expected gb (4) for 4 output channels, got (5)",
                     message(function()
                       f.conv2d_backward(x, w, gy, 1, 1, 0, 0, 1, 1, lpnx.zeros(4, 3, 3, 3), lpnx.zeros(5), true)
                     end), 1, true)
      assert.matches("boolean expected, got nil",
                     message(function()
                       f.conv2d_backward(x, w, gy, 1, 1, 0, 0, 1, 1, lpnx.zeros(4, 3, 3, 3), nil)
                     end), 1, true)
      assert.matches("gw must not share memory with x, w or gy",
                     message(function() f.conv2d_backward(x, w, gy, 1, 1, 0, 0, 1, 1, w, nil, true) end), 1, true)
    end)
  end

  it("a workspace that overlaps an input or is not contiguous", function()
    local big = lpnx.zeros(2, 3, 8, 8)
    local xv = big:narrow(1, 1, 1)
    assert.matches("workspace must not share memory with x, w or b",
                   message(function() K.conv2d_forward(xv, w, nil, 1, 1, 0, 0, 1, 1, big) end), 1, true)
    -- a strided x is copied first, but its own memory is still the caller's
    local flat = lpnx.zeros(1000)
    local xs = flat:narrow(1, 1, 192):view(1, 3, 8, 8):transpose(3, 4)
    assert.matches("workspace must not share memory with x, w or b",
                   message(function() K.conv2d_forward(xs, w, nil, 1, 1, 1, 1, 1, 1, flat:narrow(1, 101, 900)) end),
                   1, true)
    assert.matches("workspace must not share memory with x, w, gy, gw or gb",
                   message(function()
                     local gw = lpnx.zeros(4, 3, 3, 3)
                     K.conv2d_backward(x, w, lpnx.zeros(1, 4, 6, 6), 1, 1, 0, 0, 1, 1, gw, nil, false, gw)
                   end), 1, true)
    assert.matches("expected a contiguous tensor",
                   message(function()
                     K.conv2d_forward(x, w, nil, 1, 1, 0, 0, 1, 1, lpnx.zeros(100, 100):t())
                   end), 1, true)
    assert.matches("lpnx.Tensor expected, got string",
                   message(function() K.conv2d_forward(x, w, nil, 1, 1, 0, 0, 1, 1, "ws") end), 1, true)
  end)

  it("conv2d_output_size rejects a kernel larger than the padded input", function()
    assert.matches("input 3x3 is too small for the kernel: padded size 3x5 is smaller than the dilated kernel 4x4",
                   message(function() K.conv2d_output_size(3, 3, 4, 4, 1, 1, 0, 1, 1, 1) end), 1, true)
    assert.matches("kh must be an integer >= 1, got 0",
                   message(function() K.conv2d_output_size(3, 3, 0, 4, 1, 1, 0, 1, 1, 1) end), 1, true)
  end)
end)
