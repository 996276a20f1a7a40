-- lpnx.image: resizing, flips, shift-scale-rotate, elastic warps, blur,
-- CLAHE, intensity changes, connected components and review overlays.
-- The fast kernels are held to the oracles in lpnx.ref.image on random
-- inputs, to hand-computed values, and to values written by
-- spec/fixtures/gen/make_image_fixtures.py: spec/fixtures/image/resize.safetensors
-- (PyTorch 1.13 F.interpolate) and spec/fixtures/image/opencv.safetensors
-- (OpenCV 4.6: CLAHE, warpAffine, GaussianBlur).
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local I, R = lpnx.image, lpnx.ref.image

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

local function assert_equal(a, b)
  assert.are.same(b:size(), a:size())
  assert.are.equal(0, h.max_diff(a, b))
end

-- Random values with a fixed seed.
local function rand(seed, ...)
  lpnx.manual_seed(seed)
  return lpnx.rand(...)
end

local resize_fx = lpnx.load(h.fixture("image/resize.safetensors"))
local opencv_fx = lpnx.load(h.fixture("image/opencv.safetensors"))

describe("image.resize", function()
  -- Every resize case of the fixture: mode, input name, output size.
  local cases = {}
  for key in pairs(resize_fx) do
    local mode, name, hh, ww = key:match("^(%a+)%.(%a+)%.(%d+)x(%d+)$")
    if mode then cases[#cases + 1] = {key = key, mode = mode, name = name, h = tonumber(hh), w = tonumber(ww)} end
  end
  table.sort(cases, function(a, b) return a.key < b.key end)

  it("has the PyTorch fixtures for every mode, up and down, odd sizes, a batch and a 2-D image", function()
    assert.are.equal(36, #cases)
  end)

  it("nearest and area equal F.interpolate exactly; bilinear equals it exactly per plane", function()
    for _, c in ipairs(cases) do
      local y = I.resize(resize_fx["input." .. c.name], c.h, c.w, c.mode)
      local want = resize_fx[c.key]
      -- PyTorch's own bilinear result for a batch depends on how its
      -- vectorised loop splits the planes (it differs from the same planes
      -- resized one at a time by one float rounding); lpnx equals the
      -- one-plane-at-a-time result, so batches get one rounding of slack.
      local tol = (c.mode == "bilinear" and c.name == "nchw") and 1.2e-7 or 0
      local d = h.max_diff(y, want)
      assert(d <= tol, ("%s: max difference %g"):format(c.key, d))
    end
  end)

  it("the oracle agrees with the PyTorch fixtures", function()
    for _, c in ipairs(cases) do
      h.assert_near(R.resize(resize_fx["input." .. c.name], c.h, c.w, c.mode), resize_fx[c.key], 1e-6)
    end
  end)

  it("keeps the rank: (H,W), (C,H,W) and (N,C,H,W); bilinear is the default", function()
    local x = rand(1, 2, 3, 5, 7)
    assert.are.same({2, 3, 4, 9}, I.resize(x, 4, 9):size())
    assert.are.same({3, 4, 9}, I.resize(x[1], 4, 9, "area"):size())
    assert.are.same({4, 9}, I.resize(x[1][1], 4, 9, "nearest"):size())
    assert_equal(I.resize(x, 4, 9), I.resize(x, 4, 9, "bilinear"))
  end)

  it("area averages whole blocks when the sizes divide", function()
    local x = lpnx.arange(24):view(4, 6)
    assert.are.same({{3.5, 5.5, 7.5}, {15.5, 17.5, 19.5}}, I.resize(x, 2, 3, "area"):totable())
  end)

  it("the network's upsample kernel is the same implementation", function()
    local x = rand(2, 1, 2, 6, 5)
    assert_equal(I.resize(x, 12, 10, "nearest"), lpnx.kernels.upsample_nearest(x, 12, 10))
    assert_equal(I.resize(x, 9, 4, "bilinear"), lpnx.kernels.upsample_bilinear(x, 9, 4))
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    local x = rand(3, 1, 1024, 1024)
    h.assert_near(I.resize(x, 333, 517, "area"), R.resize(x, 333, 517, "area"), 1e-6)
    h.assert_near(I.resize(x, 300, 700, "bilinear"), R.resize(x, 300, 700, "bilinear"), 1e-6)
    assert_equal(I.resize(x, 257, 1100, "nearest"), R.resize(x, 257, 1100, "nearest"))
  end)
end)

describe("image.hflip and vflip", function()
  it("mirror left-right and top-bottom at every rank", function()
    local x = lpnx.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.are.same({{3, 2, 1}, {6, 5, 4}}, I.hflip(x):totable())
    assert.are.same({{4, 5, 6}, {1, 2, 3}}, I.vflip(x):totable())
    local b = rand(4, 2, 3, 4, 5)
    assert_equal(I.hflip(I.hflip(b)), b)
    assert_equal(I.vflip(b)[2][3], I.vflip(b[2][3]))
    assert.are.equal(b:get(2, 1, 1, 5), I.hflip(b):get(2, 1, 1, 1))
  end)

  it("take views that are not contiguous", function()
    local x = rand(5, 6, 4)
    local t = x:transpose(1, 2)
    assert.is_false(t:is_contiguous())
    assert_equal(I.hflip(t), I.hflip(t:contiguous()))
    assert_equal(I.resize(t, 3, 5, "area"), I.resize(t:contiguous(), 3, 5, "area"))
  end)
end)

describe("image.affine", function()
  -- OpenCV's convention: pixel (row i, column j) is at x = j, y = i; the
  -- default centre is ((W-1)/2, (H-1)/2).
  it("a 90-degree rotation of a square image is an exact permutation (counter-clockwise)", function()
    for _, n in ipairs{4, 5} do
      local x = rand(5, 2, n, n)
      for _, mode in ipairs{"bilinear", "nearest"} do
        local y, t = I.affine(x, {angle = 90, mode = mode}), x:totable()
        for c = 1, 2 do
          for i = 1, n do
            for j = 1, n do
              -- the output's top row is the input's right column
              assert.are.equal(t[c][j][n + 1 - i], y:get(c, i, j))
            end
          end
        end
        assert_equal(I.affine(x, {angle = -90, mode = mode}), I.affine(x, {angle = 270, mode = mode}))
        assert_equal(I.affine(x, {angle = 180, mode = mode}), I.vflip(I.hflip(x)))
      end
    end
  end)

  it("scales by 2 about the centre (sampling (x - 1.5) / 2 + 1.5 on a 4x4 ramp)", function()
    -- value = x + 4y is linear, so bilinear sampling gives it exactly
    local y = I.affine(lpnx.arange(16):view(4, 4), {scale = 2})
    h.assert_near(y, {{3.75, 4.25, 4.75, 5.25}, {5.75, 6.25, 6.75, 7.25},
                      {7.75, 8.25, 8.75, 9.25}, {9.75, 10.25, 10.75, 11.25}}, 1e-6)
  end)

  it("shifts by one pixel with shift = {1/W, 0} and {0, 1/H}", function()
    local x = lpnx.arange(12):view(3, 4) + 1
    assert.are.same({{0, 1, 2, 3}, {0, 5, 6, 7}, {0, 9, 10, 11}}, I.affine(x, {shift = {0.25, 0}}):totable())
    assert.are.same({{-1, -1, -1, -1}, {1, 2, 3, 4}, {5, 6, 7, 8}},
                    I.affine(x, {shift = {0, 1 / 3}, value = -1}):totable())
    assert.are.same({{1, 1, 2, 3}, {5, 5, 6, 7}, {9, 9, 10, 11}},
                    I.affine(x, {shift = {0.25, 0}, border = "replicate"}):totable())
    assert.are.same({{2, 1, 2, 3}, {6, 5, 6, 7}, {10, 9, 10, 11}},
                    I.affine(x, {shift = {0.25, 0}, border = "reflect"}):totable())
  end)

  it("rotates about a given centre", function()
    -- 90 degrees about pixel (0, 0): the output pixel (x, y) reads (-y, x)
    local x = lpnx.arange(9):view(3, 3) + 1
    assert.are.same({{1, 4, 7}, {0, 0, 0}, {0, 0, 0}}, I.affine(x, {angle = 90, center = {0, 0}}):totable())
  end)

  it("the identity returns the image", function()
    local x = rand(6, 3, 7, 9)
    assert_equal(I.affine(x), x)
    assert_equal(I.affine(x, {angle = 360, border = "reflect"}), x)
  end)

  it("matches OpenCV's warpAffine of albumentations' ShiftScaleRotate matrix", function()
    -- OpenCV samples at 1/32-pixel positions, so the two agree to about a
    -- 32nd of the local gradient.
    local borders = {"constant", "replicate", "reflect"}
    for i = 0, 3 do
      local p = opencv_fx["affine." .. i .. ".params"]:totable()
      local y = I.affine(opencv_fx["affine.input"], {angle = p[1], scale = p[2], shift = {p[3], p[4]},
                                                      border = borders[p[5] + 1], value = p[6]})
      h.assert_near(y, opencv_fx["affine." .. i .. ".output"], 0.01)
    end
  end)

  it("matches the oracle for every mode and border, at every rank", function()
    local shapes = {{3, 17, 23}, {2, 2, 9, 8}, {11, 6}, {1, 1, 1}}
    local params = {{angle = 33, scale = 1.3, shift = {0.1, -0.2}},
                    {angle = -120, scale = 0.7, center = {2.5, 1}},
                    {angle = 7.5, scale = 0.45, shift = {-0.3, 0.05}, value = 0.5}}
    for s, shape in ipairs(shapes) do
      local x = rand(10 + s, table.unpack(shape))
      for _, p in ipairs(params) do
        for _, mode in ipairs{"bilinear", "nearest"} do
          for _, border in ipairs{"constant", "replicate", "reflect"} do
            local o = {angle = p.angle, scale = p.scale, shift = p.shift, center = p.center, value = p.value,
                       mode = mode, border = border}
            h.assert_near(I.affine(x, o), R.affine(x, o), 1e-5)
          end
        end
      end
    end
  end)

  it("nearest keeps a mask binary", function()
    local m = rand(7, 20, 20):gt(0.5)
    local y = I.affine(m, {angle = 23, scale = 1.1, mode = "nearest"})
    assert.are.equal(0, (y:eq(0) + y:eq(1)):eq(0):sum())
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    local x = rand(8, 1, 1024, 1024)
    local o = {angle = 10, scale = 1.1, shift = {0.02, -0.01}, border = "reflect"}
    h.assert_near(I.affine(x, o), R.affine(x, o), 1e-5)
  end)
end)

describe("image.remap and elastic", function()
  it("an integer field moves pixels exactly", function()
    local x = lpnx.arange(12):view(3, 4) + 1
    local field = lpnx.zeros(2, 3, 4)
    field[1]:fill_(1) -- every output reads one pixel to the right
    assert.are.same({{2, 3, 4, 0}, {6, 7, 8, 0}, {10, 11, 12, 0}}, I.remap(x, field):totable())
    assert.are.same({{2, 3, 4, 3}, {6, 7, 8, 7}, {10, 11, 12, 11}},
                    I.remap(x, field, {border = "reflect"}):totable())
  end)

  it("remap matches the oracle for every mode and border", function()
    for s, shape in ipairs{{2, 9, 13}, {1, 2, 7, 6}, {8, 8}} do
      local x = rand(20 + s, table.unpack(shape))
      local hh, ww = shape[#shape - 1], shape[#shape]
      local field = (rand(30 + s, 2, hh, ww) - 0.5) * 8 -- reaches past the borders
      for _, mode in ipairs{"bilinear", "nearest"} do
        for _, border in ipairs{"constant", "replicate", "reflect"} do
          local o = {mode = mode, border = border, value = 0.25}
          h.assert_near(I.remap(x, field, o), R.remap(x, field, o), 1e-5)
        end
      end
    end
  end)

  it("elastic with alpha 0 is the identity", function()
    local x = rand(40, 3, 10, 12)
    assert_equal(I.elastic(x, 0, 4, lpnx.Generator(1)), x)
    assert_equal(I.elastic(x, 0, 4, lpnx.Generator(1), {border = "reflect", mode = "nearest"}), x)
  end)

  it("the same generator seed gives the same field; elastic = remap by that field", function()
    local f1 = I.elastic_field(16, 20, 30, 3, lpnx.Generator(9))
    local f2 = I.elastic_field(16, 20, 30, 3, lpnx.Generator(9))
    assert.are.same({2, 16, 20}, f1:size())
    assert_equal(f1, f2)
    assert(h.max_diff(f1, I.elastic_field(16, 20, 30, 3, lpnx.Generator(10))) > 0.1)
    local x = rand(41, 2, 16, 20)
    local o = {border = "reflect"}
    assert_equal(I.elastic(x, 30, 3, lpnx.Generator(9), o), I.remap(x, f1, o))
    -- the image and its mask warp with one field
    local mask = x[1]:gt(0.5)
    local warped = I.remap(mask, f1, {mode = "nearest"})
    assert.are.equal(0, (warped:eq(0) + warped:eq(1)):eq(0):sum())
    -- without a generator the default one is used
    lpnx.manual_seed(9)
    assert_equal(I.elastic(x, 30, 3, o), I.remap(x, f1, o))
  end)

  it("without a blur the field is alpha * uniform(-1, 1)", function()
    local f = I.elastic_field(64, 64, 5, 0, lpnx.Generator(2))
    assert(f:max() < 5 and f:min() >= -5)
    assert(math.abs(f:mean()) < 0.1)
    assert(f:abs():mean() > 2.3 and f:abs():mean() < 2.7) -- E|U(-5, 5)| = 2.5
  end)

  it("the field and the warp match the oracles", function()
    for _, p in ipairs{{9, 14, 12, 2}, {20, 7, 1, 0.8}, {5, 5, 3, 0}} do
      h.assert_near(I.elastic_field(p[1], p[2], p[3], p[4], lpnx.Generator(p[1])),
                    R.elastic_field(p[1], p[2], p[3], p[4], lpnx.Generator(p[1])), 1e-5)
      local x = rand(p[2], 2, p[1], p[2])
      h.assert_near(I.elastic(x, p[3], p[4], lpnx.Generator(3)), R.elastic(x, p[3], p[4], lpnx.Generator(3)), 1e-4)
    end
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    h.assert_near(I.elastic_field(1024, 1024, 20, 0.5, lpnx.Generator(4)),
                  R.elastic_field(1024, 1024, 20, 0.5, lpnx.Generator(4)), 1e-4)
    local x = rand(42, 1024, 1024)
    local field = (rand(43, 2, 1024, 1024) - 0.5) * 6
    h.assert_near(I.remap(x, field, {border = "reflect"}), R.remap(x, field, {border = "reflect"}), 1e-5)
  end)
end)

describe("image.gaussian_blur", function()
  it("blurs a delta into a sampled Gaussian summing to 1", function()
    local x = lpnx.zeros(31, 31)
    x:set(1, 16, 16)
    local sigma = 2
    local y = I.gaussian_blur(x, sigma)
    local w, sum = {}, 0
    for k = -8, 8 do -- radius: size round(8 sigma + 1) = 17
      w[k] = math.exp(-k * k / (2 * sigma * sigma))
      sum = sum + w[k]
    end
    for i = -10, 10 do
      for j = -10, 10 do
        local want = (w[i] and w[j]) and w[i] * w[j] / (sum * sum) or 0
        assert(math.abs(y:get(16 + i, 16 + j) - want) < 1e-7)
      end
    end
    assert(math.abs(y:sum() - 1) < 1e-5)
  end)

  it("matches OpenCV's GaussianBlur with BORDER_REFLECT_101", function()
    for _, sigma in ipairs{0.8, 1.5, 3} do
      local key = ("blur.%s"):format(sigma == 3 and "3" or tostring(sigma))
      h.assert_near(I.gaussian_blur(opencv_fx["blur.input"], sigma), opencv_fx[key], 1e-6)
    end
  end)

  it("sigma 0 is the identity; a constant image stays constant", function()
    local x = rand(50, 2, 5, 6)
    assert_equal(I.gaussian_blur(x, 0), x)
    h.assert_near(I.gaussian_blur(lpnx.full({3, 4}, 0.25), 5), lpnx.full({3, 4}, 0.25), 1e-6)
  end)

  it("matches the oracle, kernels wider than the image included", function()
    for s, shape in ipairs{{3, 9, 14}, {1, 2, 6, 5}, {4, 4}, {1, 1}} do
      local x = rand(60 + s, table.unpack(shape))
      for _, sigma in ipairs{0.5, 1.7, 4} do
        h.assert_near(I.gaussian_blur(x, sigma), R.gaussian_blur(x, sigma), 1e-5)
      end
    end
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    local x = rand(70, 1024, 1024)
    h.assert_near(I.gaussian_blur(x, 1), R.gaussian_blur(x, 1), 1e-5)
  end)
end)

describe("image intensity operations", function()
  it("brightness_contrast computes t * (1 + contrast) + brightness, clamped to [0, 1]", function()
    local x = lpnx.tensor{{0, 0.25, 0.5, 1}}
    h.assert_near(I.brightness_contrast(x, 0.1, 0.2), {{0.1, 0.4, 0.7, 1}}, 1e-7)
    h.assert_near(I.brightness_contrast(x, -0.2, -0.5), {{0, 0, 0.05, 0.3}}, 1e-7)
    assert_equal(I.brightness_contrast(x, 0, 0), x)
  end)

  it("gamma clamps to [0, 1] and raises to g", function()
    local x = lpnx.tensor{{-0.5, 0, 0.25, 0.64, 1, 1.5}}
    h.assert_near(I.gamma(x, 0.5), {{0, 0, 0.5, 0.8, 1, 1}}, 1e-7)
    h.assert_near(I.gamma(x, 2), {{0, 0, 0.0625, 0.4096, 1, 1}}, 1e-7)
  end)

  it("gaussian_noise adds N(0, std) and depends only on the generator state", function()
    local x = rand(80, 1, 1024, 1024)
    local y = I.gaussian_noise(x, 0.1, lpnx.Generator(5))
    local noise = y - x
    local n = noise:numel()
    assert(math.abs(noise:mean()) < 5 * 0.1 / math.sqrt(n))
    local std = math.sqrt((noise * noise):mean())
    assert(math.abs(std - 0.1) < 0.001, "std " .. std)
    assert_equal(I.gaussian_noise(x, 0.1, lpnx.Generator(5)), y)
    assert(h.max_diff(I.gaussian_noise(x, 0.1, lpnx.Generator(6)), y) > 0.1)
    lpnx.manual_seed(5)
    assert_equal(I.gaussian_noise(x, 0.1), y)
    assert_equal(I.gaussian_noise(x, 0, lpnx.Generator(5)), x)
  end)

  it("normalize subtracts and divides per channel; numbers apply to every channel", function()
    local x = lpnx.tensor{{{0.5, 1}}, {{0, 0.25}}, {{1, 1}}}
    h.assert_near(I.normalize(x, {0.5, 0.25, 0}, {0.5, 0.25, 2}), {{{0, 1}}, {{-1, 0}}, {{0.5, 0.5}}}, 1e-7)
    h.assert_near(I.normalize(x, 0.5, 0.25), {{{0, 2}}, {{-2, -1}}, {{2, 2}}}, 1e-7)
    local b = lpnx.cat({x:view(1, 3, 1, 2), x:view(1, 3, 1, 2) * 2}, 1)
    h.assert_near(I.normalize(b, {0.5, 0.25, 0}, {0.5, 0.25, 2})[2], {{{1, 3}}, {{-1, 1}}, {{1, 1}}}, 1e-7)
    h.assert_near(I.normalize(lpnx.tensor{{1, 2}}, 1, 2), {{0, 0.5}}, 1e-7)
  end)

  it("to_rgb repeats one channel three times", function()
    local x = rand(81, 1, 3, 4)
    local y = I.to_rgb(x)
    assert.are.same({3, 3, 4}, y:size())
    for c = 1, 3 do assert_equal(y[c], x[1]) end
    assert.are.same({3, 3, 4}, I.to_rgb(x[1]):size())
    assert.are.same({2, 3, 3, 4}, I.to_rgb(lpnx.cat({x:view(1, 1, 3, 4), x:view(1, 1, 3, 4)}, 1)):size())
    assert_equal(I.to_rgb(y), y)
  end)

  it("no operation changes its input", function()
    local x = rand(82, 1, 8, 9)
    local keep = x:clone()
    local mask = x[1]:gt(0.5)
    I.resize(x, 5, 5, "area"); I.hflip(x); I.vflip(x); I.affine(x, {angle = 30})
    I.elastic(x, 5, 2); I.gaussian_blur(x, 1); I.brightness_contrast(x, 0.1, 0.1); I.gamma(x, 2)
    I.gaussian_noise(x, 0.1); I.clahe(x); I.normalize(x, 0.5, 0.5); I.to_rgb(x)
    I.components(mask); I.remove_small(mask, 3); I.overlay(x, mask)
    assert_equal(x, keep)
    assert_equal(mask, keep[1]:gt(0.5))
  end)
end)

describe("image.clahe", function()
  it("is within one 8-bit level of OpenCV's CLAHE on 8-bit images", function()
    -- OpenCV rounds each tile map and the result to 8 bits; lpnx keeps
    -- floats, so the two differ by at most 1/255. Fixture c has a height
    -- that divides the grid and a width that does not: OpenCV then extends
    -- both sides, and so does lpnx.
    for _, name in ipairs{"a", "b", "c", "d"} do
      local p = opencv_fx["clahe." .. name .. ".params"]:totable()
      local y = I.clahe(opencv_fx["clahe." .. name .. ".input"], {clip = p[1], tiles = {p[2], p[3]}})
      h.assert_near(y, opencv_fx["clahe." .. name .. ".output"], 1 / 255 + 1e-6)
    end
  end)

  it("matches the oracle for several sizes, grids, clip limits and bin counts", function()
    local cases = {{{1, 37, 45}, {clip = 2, tiles = {4, 3}}},
                   {{32, 32}, {clip = 4, tiles = {8, 8}, bins = 64}},
                   {{9, 50}, {clip = 1, tiles = {5, 2}, bins = 1000}},
                   {{3, 2}, {clip = 40, tiles = {8, 8}}},
                   {{20, 17}, {clip = 0}}}
    for i, c in ipairs(cases) do
      local x = rand(90 + i, table.unpack(c[1])) * 1.2 - 0.1 -- some values outside [0, 1]
      local y = I.clahe(x, c[2])
      h.assert_near(y, R.clahe(x, c[2]), 1e-6)
      assert.are.same(c[1], y:size())
      assert(y:min() >= 0 and y:max() <= 1)
    end
  end)

  it("maps a constant image to a constant image", function()
    for _, v in ipairs{0, 0.3, 1} do
      local y = I.clahe(lpnx.full({19, 27}, v))
      assert.are.equal(y:min(), y:max())
    end
  end)

  it("with no clipping, tiles {1, 1} is plain histogram equalisation", function()
    local x = rand(99, 12, 10)
    local counts, t = {}, x:view(-1):totable()
    for b = 0, 255 do counts[b] = 0 end
    local function bin(v) return math.min(math.floor(v * 256), 255) end
    for _, v in ipairs(t) do counts[bin(v)] = counts[bin(v)] + 1 end
    local cdf, sum = {}, 0
    for b = 0, 255 do
      sum = sum + counts[b]
      cdf[b] = sum / #t
    end
    local want = {}
    for i, v in ipairs(t) do want[i] = cdf[bin(v)] end
    want = lpnx.tensor(want):view(12, 10)
    h.assert_near(I.clahe(x, {clip = 1e9, tiles = {1, 1}}), want, 1e-6)
    h.assert_near(I.clahe(x, {clip = 0, tiles = {1, 1}}), want, 1e-6)
  end)

  it("with no clipping, the corner pixels take their own tile's equalisation", function()
    -- tiles of 8x8 on 16x16: pixels with x, y <= 4 lie before the first
    -- tile centre and use the top-left tile's map alone
    local x = rand(98, 16, 16)
    local y = I.clahe(x, {clip = 1e9, tiles = {2, 2}})
    local tile = x:narrow(1, 1, 8):narrow(2, 1, 8):contiguous():view(-1):totable()
    for i = 1, 5 do
      for j = 1, 5 do
        local v, below = x:get(i, j), 0
        for _, u in ipairs(tile) do
          if math.floor(u * 256) <= math.floor(v * 256) then below = below + 1 end
        end
        assert(math.abs(y:get(i, j) - below / 64) < 1e-6)
      end
    end
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    local x = rand(97, 1024, 1024)
    h.assert_near(I.clahe(x), R.clahe(x), 1e-6)
  end)
end)

describe("image.components and remove_small", function()
  local mask = lpnx.tensor{
    {1, 1, 0, 0, 1},
    {0, 1, 0, 1, 0},
    {0, 0, 0, 0, 0},
    {1, 0, 1, 1, 1},
    {1, 0, 0, 0, 1}}

  it("labels 8-connected components in raster order of their first pixel", function()
    local labels, areas = I.components(mask)
    assert.are.same({
      {1, 1, 0, 0, 2},
      {0, 1, 0, 2, 0},
      {0, 0, 0, 0, 0},
      {3, 0, 4, 4, 4},
      {3, 0, 0, 0, 4}}, labels:totable())
    assert.are.same({3, 2, 2, 4}, areas)
  end)

  it("splits diagonal neighbours with 4-connectivity", function()
    local labels, areas = I.components(mask, {connectivity = 4})
    assert.are.same({
      {1, 1, 0, 0, 2},
      {0, 1, 0, 3, 0},
      {0, 0, 0, 0, 0},
      {4, 0, 5, 5, 5},
      {4, 0, 0, 0, 5}}, labels:totable())
    assert.are.same({3, 1, 1, 2, 4}, areas)
  end)

  it("joins branches that meet late (a U and a comb) into one component", function()
    local u = lpnx.tensor{{1, 0, 1, 0, 1}, {1, 0, 1, 0, 1}, {1, 1, 1, 1, 1}}
    local labels, areas = I.components(u, {connectivity = 4})
    assert.are.same({{1, 0, 1, 0, 1}, {1, 0, 1, 0, 1}, {1, 1, 1, 1, 1}}, labels:totable())
    assert.are.same({11}, areas)
  end)

  it("counts foreground as > 0.5, keeps (1,H,W), and finds nothing in an empty mask", function()
    local labels, areas = I.components(lpnx.tensor{{{0.5, 0.51, 2}}})
    assert.are.same({{{0, 1, 1}}}, labels:totable())
    assert.are.same({2}, areas)
    labels, areas = I.components(lpnx.zeros(3, 4))
    assert.are.same({}, areas)
    assert.are.equal(0, labels:max())
  end)

  it("matches the flood-fill oracle on random masks", function()
    for i, shape in ipairs{{17, 23}, {1, 40, 31}, {1, 1}, {64, 64}} do
      local m = rand(100 + i, table.unpack(shape)):gt(0.45)
      for _, conn in ipairs{4, 8} do
        local l1, a1 = I.components(m, {connectivity = conn})
        local l2, a2 = R.components(m, {connectivity = conn})
        assert_equal(l1, l2)
        assert.are.same(a2, a1)
      end
    end
    local big = rand(109, 300, 200):gt(0.4)
    local l1, a1 = I.components(big)
    local l2, a2 = R.components(big)
    assert_equal(l1, l2)
    assert.are.same(a2, a1)
  end)

  it("remove_small drops components below min_area and returns 0/1", function()
    assert.are.same({
      {1, 1, 0, 0, 0},
      {0, 1, 0, 0, 0},
      {0, 0, 0, 0, 0},
      {0, 0, 1, 1, 1},
      {0, 0, 0, 0, 1}}, I.remove_small(mask, 3):totable())
    assert.are.same({
      {1, 1, 0, 0, 0},
      {0, 1, 0, 0, 0},
      {0, 0, 0, 0, 0},
      {1, 0, 1, 1, 1},
      {1, 0, 0, 0, 1}}, I.remove_small(mask, 2, {connectivity = 4}):totable())
    assert.are.same({{0, 1, 1}}, I.remove_small(lpnx.tensor{{0.2, 0.7, 3}}, 0):totable())
    for i = 1, 3 do
      local m = rand(110 + i, 30, 41):gt(0.5)
      assert_equal(I.remove_small(m, i * 2, {connectivity = 4}), R.remove_small(m, i * 2, {connectivity = 4}))
    end
  end)
end)

describe("image.overlay", function()
  local mask = lpnx.tensor{{0, 0, 0, 0}, {0, 1, 1, 1}, {0, 1, 1, 1}, {0, 1, 1, 1}}

  it("blends the fill and paints the contour (the image edge counts as outside)", function()
    local y = I.overlay(lpnx.full({1, 4, 4}, 0.5), mask)
    assert.are.same({3, 4, 4}, y:size())
    local g, r, c = 0.5, {1, 0, 0}, {0.7, 0.3, 0.3} -- c: 0.6 * 0.5 + 0.4 * red
    for ch = 1, 3 do
      h.assert_near(y[ch], {{g, g, g, g},
                            {g, r[ch], r[ch], r[ch]},
                            {g, r[ch], c[ch], r[ch]},
                            {g, r[ch], r[ch], r[ch]}}, 1e-7)
    end
  end)

  it("without a contour every mask pixel is blended; colours and alpha are options", function()
    local y = I.overlay(lpnx.full({4, 4}, 0.5), mask, {contour = false, color = {0, 1, 0}, alpha = 0.5})
    h.assert_near(y[2], {{0.5, 0.5, 0.5, 0.5}, {0.5, 0.75, 0.75, 0.75},
                         {0.5, 0.75, 0.75, 0.75}, {0.5, 0.75, 0.75, 0.75}}, 1e-7)
    h.assert_near(y[1], {{0.5, 0.5, 0.5, 0.5}, {0.5, 0.25, 0.25, 0.25},
                         {0.5, 0.25, 0.25, 0.25}, {0.5, 0.25, 0.25, 0.25}}, 1e-7)
    local z = I.overlay(lpnx.full({4, 4}, 0.5), mask, {color = {0, 1, 0}, contour_color = {0, 0, 1}})
    assert.are.same({0, 0, 1}, {z:get(1, 2, 2), z:get(2, 2, 2), z:get(3, 2, 2)})
    h.assert_near(lpnx.tensor{z:get(1, 3, 3), z:get(2, 3, 3), z:get(3, 3, 3)}, {0.3, 0.7, 0.3}, 1e-7)
  end)

  it("thickens the contour inwards to contour_width", function()
    local full = lpnx.ones(7, 7)
    local y = I.overlay(lpnx.zeros(7, 7), full, {contour_width = 2, alpha = 1, color = {0, 0, 0},
                                                 contour_color = {1, 1, 1}})
    -- city-block distance to the outside <= 2: two rings, the rest filled
    local want = {}
    for i = 1, 7 do
      want[i] = {}
      for j = 1, 7 do
        want[i][j] = math.min(i, j, 8 - i, 8 - j) <= 2 and 1 or 0
      end
    end
    assert.are.same(want, y[1]:totable())
  end)

  it("takes RGB images, clamps values to [0, 1], and accepts a (1,H,W) mask", function()
    local img = lpnx.tensor{{{1.5, -1}}, {{0.2, 0.4}}, {{0.6, 0.8}}}
    local y = I.overlay(img, lpnx.zeros(1, 1, 2))
    h.assert_near(y, {{{1, 0}}, {{0.2, 0.4}}, {{0.6, 0.8}}}, 1e-7)
  end)

  it("matches the oracle on random masks and widths", function()
    for i, shape in ipairs{{1, 13, 17}, {3, 9, 9}, {20, 8}} do
      local img = rand(120 + i, table.unpack(shape))
      local m = I.gaussian_blur(rand(130 + i, shape[#shape - 1], shape[#shape]), 1):gt(0.5)
      for _, w in ipairs{1, 2, 3} do
        local o = {contour_width = w, color = {0.1, 0.9, 0.3}, alpha = 0.3, contour_color = {1, 1, 0}}
        h.assert_near(I.overlay(img, m, o), R.overlay(img, m, o), 1e-6)
      end
    end
  end)

  it("matches the oracle on a 1024x1024 image (threaded path)", function()
    local img = rand(140, 1024, 1024)
    local m = rand(141, 1024, 1024):gt(0.7)
    h.assert_near(I.overlay(img, m), R.overlay(img, m), 1e-6)
  end)
end)

describe("image argument errors", function()
  local x = lpnx.zeros(3, 4, 5)

  it("resize says what size and mode were expected", function()
    assert_message("output height must be in [1, 2147483647], got 0", function() return I.resize(x, 0, 4) end)
    assert_message('mode must be "nearest", "bilinear" or "area", got "bicubic"',
                   function() return I.resize(x, 4, 4, "bicubic") end)
    assert_message("expected an image (H,W), (C,H,W) or (N,C,H,W), got (5)",
                   function() return I.resize(lpnx.zeros(5), 2, 2) end)
    assert_message("expected an image of at least 1x1 pixels, got (3,0,4)",
                   function() return I.resize(lpnx.zeros(3, 0, 4), 2, 2) end)
  end)

  it("options are checked by name, type and range", function()
    assert_message("unknown option 'angel' (expected one of angle, scale, shift, center, mode, border, value)",
                   function() return I.affine(x, {angel = 3}) end)
    assert_message("option 'scale' must be positive, got 0", function() return I.affine(x, {scale = 0}) end)
    assert_message('option \'border\' must be "constant", "replicate" or "reflect", got "wrap"',
                   function() return I.affine(x, {border = "wrap"}) end)
    assert_message("option 'shift' must be a table of 2 finite numbers {dx, dy}",
                   function() return I.affine(x, {shift = {1}}) end)
    assert_message("option 'angle' must be a number, got string", function() return I.affine(x, {angle = "9"}) end)
    assert_message("expected a table of options, got number", function() return I.affine(x, 90) end)
  end)

  it("remap and elastic check the field and the generator", function()
    assert_message("expected field (2,4,5) (dx, dy) to match the image (3,4,5), got (2,4,4)",
                   function() return I.remap(x, lpnx.zeros(2, 4, 4)) end)
    assert_message("height must be in [1, 2147483647], got 0", function() return I.elastic_field(0, 4, 1, 1) end)
    assert_message("expected an lpnx.Generator, got string", function() return I.elastic(x, 1, 1, "seed") end)
    assert_message("expected an lpnx.Generator, got string", function() return I.gaussian_noise(x, 0.1, "seed") end)
  end)

  it("numbers must be finite and in range", function()
    assert_message("sigma must be in [0, 1000], got -1", function() return I.gaussian_blur(x, -1) end)
    assert_message("brightness must be a finite number, got inf",
                   function() return I.brightness_contrast(x, math.huge, 0) end)
    assert_message("gamma must be positive, got 0", function() return I.gamma(x, 0) end)
    assert_message("std must be non-negative, got -0.5", function() return I.gaussian_noise(x, -0.5) end)
  end)

  it("clahe wants one channel and a sensible grid", function()
    assert_message("expected a single-channel image (H,W) or (1,H,W), got (3,4,5)", function() return I.clahe(x) end)
    assert_message("option 'tiles' must be a table of 2 integers {tiles_x, tiles_y} in [1, 1024], got 0",
                   function() return I.clahe(x[1], {tiles = {0, 8}}) end)
    assert_message("option 'bins' must be in [2, 65536], got 1", function() return I.clahe(x[1], {bins = 1}) end)
  end)

  it("components, remove_small and overlay check masks and options", function()
    assert_message("option 'connectivity' must be 4 or 8, got 6",
                   function() return I.components(x[1], {connectivity = 6}) end)
    assert_message("expected mask (H,W) or (1,H,W), got (3,4,5)", function() return I.components(x) end)
    assert_message("min_area must be in [0, ", function() return I.remove_small(x[1], -1) end)
    assert_message("expected mask (4,5) or (1,4,5) to match image (3,4,5), got (4,6)",
                   function() return I.overlay(x, lpnx.zeros(4, 6)) end)
    assert_message("expected image (H,W), (1,H,W) or (3,H,W), got (2,4,5)",
                   function() return I.overlay(lpnx.zeros(2, 4, 5), lpnx.zeros(4, 5)) end)
    assert_message("option 'alpha' must be in [0, 1], got 2",
                   function() return I.overlay(x, lpnx.zeros(4, 5), {alpha = 2}) end)
    assert_message("option 'color' must be a table of 3 numbers {r, g, b} in [0, 1]",
                   function() return I.overlay(x, lpnx.zeros(4, 5), {color = {1, 0}}) end)
  end)

  it("normalize and to_rgb check channel counts", function()
    assert_message("expected mean to have 3 values (one per channel), got 2",
                   function() return I.normalize(x, {0.5, 0.5}, 1) end)
    assert_message("std must be non-zero, got 0 for channel 2",
                   function() return I.normalize(x, 0, {1, 0, 1}) end)
    assert_message("expected 1 channel (or 3, returned as a copy), got (2,4,5)",
                   function() return I.to_rgb(lpnx.zeros(2, 4, 5)) end)
  end)
end)
