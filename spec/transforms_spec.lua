-- lpnx.transforms: per-sample augmentation driven by the sample's own
-- generator. Transforms are held to the lpnx.image functions they call,
-- with parameters drawn from a twin generator (same seed) in the
-- documented order; geometric ones to image and mask moving together;
-- generator_for to values computed independently in Python.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local T = lpnx.transforms
local I = lpnx.image

local function rand(seed, ...)
  lpnx.manual_seed(seed)
  return lpnx.rand(...)
end

-- A sample of C channels, H x W, with a random 0/1 mask and an extra field.
local function sample(seed, C, H, W)
  return {image = rand(seed, C, H, W), mask = rand(seed + 1, 1, H, W):gt(0.6), id = "case" .. seed}
end

local function assert_equal(a, b)
  assert.are.same(b:size(), a:size())
  assert.are.equal(0, h.max_diff(a, b))
end

local function assert_binary(m)
  assert.are.equal(1, (m:eq(0) + m:eq(1)):min())
end

local function assert_unit(t)
  assert.is_true(t:min() >= 0 and t:max() <= 1, ("values in [%g, %g]"):format(t:min(), t:max()))
end

-- Applies t to s with a fresh lpnx.Generator(seed).
local function run(t, s, seed)
  return t(s, lpnx.Generator(seed))
end

-- Every random transform applied for sure, on a sample of C channels.
local function sure_transforms()
  return {
    hflip = T.hflip {p = 1},
    shift_scale_rotate = T.shift_scale_rotate {p = 1},
    elastic = T.elastic {p = 1, alpha = 60, sigma = 4},
    brightness_contrast = T.brightness_contrast {p = 1},
    gamma = T.gamma {p = 1},
    clahe = T.clahe {p = 1},
    gaussian_noise = T.gaussian_noise {p = 1},
  }
end

describe("transforms.generator_for", function()
  it("mixes seed, epoch and index with the documented splitmix64 chain", function()
    -- Computed in Python 3 with the same chain on 64-bit unsigned integers
    -- (h = mix(seed + G); h = mix((h ^ epoch) + G); h = mix((h ^ index) + G)),
    -- shown as signed 64-bit integers.
    assert.are.equal(2558736989570252433, T.mix_seed(0, 0, 0))
    assert.are.equal(-7034684801168263783, T.mix_seed(42, 3, 17))
    assert.are.equal(-4386750418227504768, T.mix_seed(-5, 1, 1000000))
    assert.are.equal(T.mix_seed(42, 3, 17), T.mix_seed(42.0, 3.0, 17.0))
  end)

  it("gives lpnx.Generator(mix_seed(...)), whose first draws match xoshiro256** in Python", function()
    -- Python 3: splitmix64 seeding of xoshiro256** from mix_seed(42, 3, 17),
    -- uniform = (next >> 11) * 2^-53.
    local g = T.generator_for(42, 3, 17)
    assert.are.equal(0.39871164454741503, g:uniform())
    assert.are.equal(0.9807677879756477, g:uniform())
    assert.are.equal(lpnx.Generator(T.mix_seed(7, 1, 2)):state(), T.generator_for(7, 1, 2):state())
  end)

  it("depends on its arguments alone, not on the order of calls or other draws", function()
    local forward = {}
    for e = 0, 2 do
      for i = 0, 9 do forward[e * 10 + i + 1] = T.generator_for(5, e, i):state() end
    end
    lpnx.manual_seed(99)
    lpnx.rand(10)
    for e = 2, 0, -1 do
      for i = 9, 0, -1 do
        local g = T.generator_for(5, e, i)
        assert.are.equal(forward[e * 10 + i + 1], g:state())
        g:uniform()
        T.generator_for(6, i, e):normal()
      end
    end
  end)

  it("gives unrelated streams for neighbouring inputs", function()
    local function bits(x)
      local n = 0
      while x ~= 0 do
        n = n + (x & 1)
        x = x >> 1
      end
      return n
    end
    -- Flipped bits between neighbours: about half of 64 (the mean of 600
    -- Binomial(64, 1/2) draws has a standard deviation of 0.16).
    local flips, pairs_seen = 0, 0
    for k = 0, 199 do
      local base = T.mix_seed(3, 1, k)
      for _, other in ipairs {T.mix_seed(3, 1, k + 1), T.mix_seed(3, 2, k), T.mix_seed(4, 1, k)} do
        flips = flips + bits(base ~ other)
        pairs_seen = pairs_seen + 1
      end
    end
    assert.is_true(math.abs(flips / pairs_seen - 32) < 1, "mean flipped bits " .. flips / pairs_seen)
    -- First draws over consecutive indices: uniform mean, no lag-1 correlation.
    local u = {}
    for i = 0, 999 do u[i + 1] = T.generator_for(1, 0, i):uniform() end
    local mean = 0
    for _, v in ipairs(u) do mean = mean + v / #u end
    local cov, var = 0, 0
    for i = 1, #u - 1 do cov = cov + (u[i] - mean) * (u[i + 1] - mean) end
    for i = 1, #u do var = var + (u[i] - mean) ^ 2 end
    assert.is_true(math.abs(mean - 0.5) < 0.04, "mean " .. mean)
    assert.is_true(math.abs(cov / var) < 0.12, "lag-1 correlation " .. cov / var)
    assert.are_not.equal(T.mix_seed(0, 0, 1), T.mix_seed(0, 1, 0))
    assert.are_not.equal(T.mix_seed(0, 0, 1), T.mix_seed(1, 0, 0))
  end)

  it("wants integers", function()
    assert.has_error(function() T.generator_for(1, 0.5, 2) end,
                     "generator_for: epoch (argument 2) must be an integer, got 0.5")
    assert.has_error(function() T.generator_for("1", 0, 2) end,
                     'generator_for: seed (argument 1) must be an integer, got "1"')
    assert.has_error(function() T.mix_seed(1, 2) end, "mix_seed: index (argument 3) must be an integer, got nil")
  end)
end)

describe("transforms are deterministic", function()
  it("give identical outputs for one seed and different ones for different seeds", function()
    local s = sample(1, 1, 24, 20)
    for name, t in pairs(sure_transforms()) do
      local a, b, c = run(t, s, 11), run(t, s, 11), run(t, s, 12)
      assert_equal(a.image, b.image)
      assert_equal(a.mask, b.mask)
      if name ~= "hflip" and name ~= "clahe" then
        assert.is_true(h.max_diff(a.image, c.image) > 0, name .. " ignores its generator")
      end
    end
    local aug = T.siim_train(24)
    local differ = false
    for i = 0, 5 do
      local a, b = aug(s, T.generator_for(3, 0, i)), aug(s, T.generator_for(3, 0, i))
      assert_equal(a.image, b.image)
      assert_equal(a.mask, b.mask)
      differ = differ or h.max_diff(a.image, aug(s, T.generator_for(3, 1, i)).image) > 0
    end
    assert.is_true(differ)
  end)

  it("never change their inputs", function()
    local s = sample(2, 1, 17, 23)
    local image, mask = s.image:clone(), s.mask:clone()
    local list = sure_transforms()
    list.resize = T.resize {size = 12}
    list.normalize = T.normalize {mean = 0.5, std = 0.25}
    list.to_rgb = T.to_rgb()
    list.siim = T.siim_train(16)
    for name, t in pairs(list) do
      local out = run(t, s, 4)
      assert.are_not.equal(s, out, name)
      assert.are_not.equal(s.image, out.image, name)
      assert_equal(s.image, image)
      assert_equal(s.mask, mask)
      assert.are.equal("case2", s.id)
      assert.are.equal("case2", out.id)
    end
  end)
end)

describe("transforms.hflip", function()
  it("mirrors image and mask exactly with p = 1", function()
    local s = {image = lpnx.tensor {{{1, 2, 3}, {4, 5, 6}}, {{7, 8, 9}, {10, 11, 12}}},
               mask = lpnx.tensor {{{1, 0, 0}, {1, 1, 0}}}}
    local out = run(T.hflip {p = 1}, s, 1)
    assert.are.same({{{3, 2, 1}, {6, 5, 4}}, {{9, 8, 7}, {12, 11, 10}}}, out.image:totable())
    assert.are.same({{{0, 0, 1}, {0, 1, 1}}}, out.mask:totable())
    local big = sample(3, 3, 9, 14)
    local flipped = run(T.hflip {p = 1}, big, 2)
    assert_equal(flipped.image, I.hflip(big.image))
    assert_equal(flipped.mask, I.hflip(big.mask))
  end)

  it("returns the sample itself with p = 0 and works without a mask", function()
    local s = sample(4, 1, 5, 6)
    assert.are.equal(s, run(T.hflip {p = 0}, s, 1))
    local out = run(T.hflip {p = 1}, {image = s.image}, 1)
    assert.is_nil(out.mask)
    assert_equal(out.image, I.hflip(s.image))
  end)
end)

-- A dark image and empty mask holding one bright 5x5 square at the same place.
local function square_sample(H, W, row, col)
  local img = lpnx.zeros(1, H, W)
  img:narrow(2, row, 5):narrow(3, col, 5):fill_(1)
  return {image = img, mask = img:clone()}
end

-- Centre of mass of a (1,H,W) tensor, as x, y (1-based).
local function centroid(t)
  local v = t[1]:totable()
  local sx, sy, total = 0, 0, 0
  for y = 1, #v do
    for x = 1, #v[y] do
      sx, sy, total = sx + x * v[y][x], sy + y * v[y][x], total + v[y][x]
    end
  end
  return sx / total, sy / total
end

-- Image (bilinear) and mask (nearest) of one warp of a square: where the
-- mask is 1 the image keeps at least a quarter of the square's value,
-- where the image is above 3/4 the mask is 1, and the centres agree.
local function assert_moved_together(out)
  assert_binary(out.mask)
  assert.is_true(out.mask:sum() > 0)
  local img, mask = out.image, out.mask
  assert.are.equal(0, (mask:gt(0.5) * img:lt(0.25 - 1e-6)):sum())
  assert.are.equal(0, (img:gt(0.75) * mask:lt(0.5)):sum())
  local ix, iy = centroid(img)
  local mx, my = centroid(mask)
  assert.is_true(math.abs(ix - mx) < 0.75 and math.abs(iy - my) < 0.75,
                 ("image centre (%g, %g), mask centre (%g, %g)"):format(ix, iy, mx, my))
end

describe("transforms.shift_scale_rotate", function()
  it("is lpnx.image.affine with angle, scale, dx, dy drawn in that order", function()
    local s = sample(5, 3, 19, 26)
    local t = T.shift_scale_rotate {shift = 0.1, scale = 0.2, rotate = 30, p = 1, border = "reflect"}
    local out = run(t, s, 8)
    local g = lpnx.Generator(8)
    assert.is_true(g:uniform() < 1)
    local angle, factor = g:uniform(-30, 30), 1 + g:uniform(-0.2, 0.2)
    local dx, dy = g:uniform(-0.1, 0.1), g:uniform(-0.1, 0.1)
    assert_equal(out.image, I.affine(s.image, {angle = angle, scale = factor, shift = {dx, dy}, border = "reflect"}))
    assert_equal(out.mask, I.affine(s.mask, {angle = angle, scale = factor, shift = {dx, dy}, mode = "nearest"}))
    assert_binary(out.mask)
  end)

  it("moves image and mask together and keeps the mask binary", function()
    local s = square_sample(32, 32, 9, 18)
    local t = T.shift_scale_rotate {shift = 0.1, scale = 0.15, rotate = 45, p = 1}
    local moved = 0
    for seed = 1, 12 do
      local out = run(t, s, seed)
      assert_moved_together(out)
      assert_unit(out.image)
      if h.max_diff(out.mask, s.mask) > 0 then moved = moved + 1 end
    end
    assert.are.equal(12, moved)
  end)

  it("with zero limits leaves every pixel in place", function()
    local s = sample(6, 1, 11, 13)
    local out = run(T.shift_scale_rotate {shift = 0, scale = 0, rotate = 0, p = 1}, s, 3)
    assert_equal(out.image, s.image)
    assert_equal(out.mask, s.mask)
  end)
end)

describe("transforms.elastic", function()
  it("warps image and mask with one field from lpnx.image.elastic_field", function()
    local s = sample(7, 2, 21, 18)
    local out = run(T.elastic {alpha = 50, sigma = 3, p = 1}, s, 9)
    local g = lpnx.Generator(9)
    g:uniform()
    local field = I.elastic_field(21, 18, 50, 3, g)
    assert_equal(out.image, I.remap(s.image, field, {border = "reflect"}))
    assert_equal(out.mask, I.remap(s.mask, field, {mode = "nearest"}))
  end)

  it("moves image and mask together and keeps the mask binary", function()
    local s = square_sample(24, 24, 8, 10)
    for seed = 1, 6 do
      local out = run(T.elastic {alpha = 40, sigma = 3, p = 1}, s, seed)
      assert.is_true(h.max_diff(out.image, s.image) > 0)
      assert_moved_together(out)
    end
  end)
end)

describe("transforms.probability", function()
  -- A transform that counts its calls and marks the sample.
  local function counter()
    local c = {n = 0}
    c.t = function(s)
      c.n = c.n + 1
      return {image = s.image, mask = s.mask, marked = true}
    end
    return c
  end

  it("with p = 0 is the identity and with p = 1 always applies", function()
    local s = sample(8, 1, 4, 4)
    local never, always = counter(), counter()
    local g = lpnx.Generator(1)
    for _ = 1, 200 do
      assert.are.equal(s, T.probability(0, never.t)(s, g))
      assert.is_true(T.probability(1, always.t)(s, g).marked)
    end
    assert.are.equal(0, never.n)
    assert.are.equal(200, always.n)
  end)

  it("applies with probability p", function()
    local c = counter()
    local t = T.probability(0.3, c.t)
    local g = lpnx.Generator(21)
    local s = sample(9, 1, 2, 2)
    for _ = 1, 3000 do t(s, g) end
    -- 900 expected; the standard deviation is 25.
    assert.is_true(math.abs(c.n - 900) < 100, "applied " .. c.n .. " times")
  end)
end)

describe("transforms.one_of", function()
  local function tag(k) return function(s) return {image = s.image, pick = k} end end

  it("picks by weight", function()
    local t = T.one_of {tag(1), tag(2), tag(3), tag(4), weights = {1, 2, 1, 0}}
    local g = lpnx.Generator(17)
    local s = {image = lpnx.zeros(1, 1, 1)}
    local n = {0, 0, 0, 0}
    for _ = 1, 4000 do
      local k = t(s, g).pick
      n[k] = n[k] + 1
    end
    -- Expected 1000, 2000, 1000, 0; standard deviations 27, 32, 27.
    assert.is_true(math.abs(n[1] - 1000) < 130, "first " .. n[1])
    assert.is_true(math.abs(n[2] - 2000) < 150, "second " .. n[2])
    assert.is_true(math.abs(n[3] - 1000) < 130, "third " .. n[3])
    assert.are.equal(0, n[4])
  end)

  it("weights equally by default and passes its generator on", function()
    local seen = {}
    local t = T.one_of {tag(1), tag(2), function(s, g) return {image = s.image, pick = 3, u = g:uniform()} end}
    local g = lpnx.Generator(2)
    local twin = lpnx.Generator(2)
    for _ = 1, 300 do
      local out = t({image = lpnx.zeros(1, 1, 1)}, g)
      twin:uniform()
      seen[out.pick] = (seen[out.pick] or 0) + 1
      if out.pick == 3 then assert.are.equal(twin:uniform(), out.u) end
    end
    for k = 1, 3 do assert.is_true(seen[k] > 60, "transform " .. k .. " picked " .. tostring(seen[k])) end
  end)
end)

describe("photometric transforms", function()
  it("leave the mask as it is and keep the image in [0, 1]", function()
    local s = sample(10, 1, 16, 12)
    local strong = {
      T.brightness_contrast {brightness = 1, contrast = 1, p = 1},
      T.gamma {range = {0.2, 5}, p = 1},
      T.clahe {clip = 4, tiles = {3, 2}, p = 1},
      T.gaussian_noise {std = {0.5, 1}, p = 1},
    }
    for _, t in ipairs(strong) do
      for seed = 1, 5 do
        local out = run(t, s, seed)
        assert.are.equal(s.mask, out.mask)
        assert_equal(out.mask, s.mask)
        assert_unit(out.image)
        assert.is_true(h.max_diff(out.image, s.image) > 0)
      end
    end
  end)

  it("call lpnx.image with parameters drawn in the documented order", function()
    local s = sample(11, 1, 9, 10)
    local g = lpnx.Generator(5)
    g:uniform()
    local c = g:uniform(-0.3, 0.3)
    local b = g:uniform(-0.1, 0.1)
    assert_equal(run(T.brightness_contrast {brightness = 0.1, contrast = 0.3, p = 1}, s, 5).image,
                 I.brightness_contrast(s.image, b, c))
    g = lpnx.Generator(5)
    g:uniform()
    assert_equal(run(T.gamma {range = {0.5, 2}, p = 1}, s, 5).image, I.gamma(s.image, g:uniform(0.5, 2)))
    g = lpnx.Generator(5)
    g:uniform()
    local std = g:uniform(0.01, 0.05)
    assert_equal(run(T.gaussian_noise {std = {0.01, 0.05}, p = 1}, s, 5).image,
                 I.gaussian_noise(s.image, std, g):clamp_(0, 1))
    assert_equal(run(T.clahe {clip = 3, tiles = {2, 4}, p = 1}, s, 5).image,
                 I.clahe(s.image, {clip = 3, tiles = {2, 4}}))
  end)

  it("clahe wants a single channel", function()
    assert.has_error(function() run(T.clahe {p = 1}, sample(12, 3, 4, 4), 1) end,
                     "clahe: expected a single-channel image (1,H,W), got (3,4,4)")
  end)
end)

describe("deterministic transforms", function()
  it("resize: area when shrinking, bilinear when growing, the mask kept binary", function()
    local s = sample(13, 1, 20, 24)
    local small = T.resize {size = 10}(s)
    assert_equal(small.image, I.resize(s.image, 10, 10, "area"))
    assert_equal(small.mask, I.resize(s.mask, 10, 10, "bilinear"):gt(0.5))
    assert_binary(small.mask)
    local big = T.resize {size = {30, 16}}(s)
    assert.are.same({1, 30, 16}, big.image:size())
    assert_equal(big.image, I.resize(s.image, 30, 16, "bilinear"))
    assert.are.same({1, 30, 16}, big.mask:size())
    assert.are.equal(s, T.resize {size = {20, 24}}(s))
    assert.are.same({1, 256, 256}, T.resize()({image = lpnx.zeros(1, 8, 8)}).image:size())
  end)

  it("normalize and to_rgb", function()
    local s = {image = lpnx.tensor {{{0, 0.5}}, {{1, 0.25}}}}
    local out = T.normalize {mean = {0.5, 0.25}, std = {0.5, 0.25}}(s)
    h.assert_near(out.image, {{{-1, 0}}, {{3, 0}}}, 1e-6)
    h.assert_near(T.normalize {mean = 0.5, std = 2}(s).image, {{{-0.25, 0}}, {{0.25, -0.125}}}, 1e-6)
    assert.has_error(function() T.normalize()(s) end,
                     "normalize: expected an image of 3 channels to match mean, got (2,1,2)")
    local rgb = T.to_rgb()({image = lpnx.tensor {{{0.1, 0.2}}}, mask = lpnx.ones(1, 1, 2)})
    h.assert_near(rgb.image, {{{0.1, 0.2}}, {{0.1, 0.2}}, {{0.1, 0.2}}}, 1e-7)
    assert.has_error(function() T.to_rgb()(s) end, "to_rgb: expected an image of 1 or 3 channels, got (2,1,2)")
  end)
end)

describe("transforms.random_crop", function()
  it("cuts the same window of image and mask, at the corner drawn in the documented order", function()
    local s = sample(21, 2, 20, 17)
    for seed = 1, 6 do
      local out = run(T.random_crop {size = {8, 5}, positive = 0}, s, seed)
      assert.are.same({2, 8, 5}, out.image:size())
      local g = lpnx.Generator(seed)
      g:uniform()
      local y, x = g:random(20 - 8 + 1), g:random(17 - 5 + 1)
      assert_equal(out.image, s.image:narrow(2, y, 8):narrow(3, x, 5))
      assert_equal(out.mask, s.mask:narrow(2, y, 8):narrow(3, x, 5))
      assert.are.equal("case21", out.id)
    end
  end)

  it("with positive = 1 always holds some of the mask, and a uniform crop often misses a small one", function()
    local img = lpnx.rand(1, 64, 64)
    local mask = lpnx.zeros(1, 64, 64)
    mask:narrow(2, 3, 2):narrow(3, 58, 3):fill_(1)           -- 6 pixels near a corner
    local s = {image = img, mask = mask}
    local hit_sure, hit_uniform = 0, 0
    for i = 0, 199 do
      local g = T.generator_for(5, 0, i)
      local a = T.random_crop {size = 16, positive = 1}(s, g)
      assert.are.same({1, 16, 16}, a.mask:size())
      if a.mask:sum() > 0 then hit_sure = hit_sure + 1 end
      local b = T.random_crop {size = 16, positive = 0}(s, T.generator_for(5, 0, i))
      if b.mask:sum() > 0 then hit_uniform = hit_uniform + 1 end
    end
    assert.are.equal(200, hit_sure)
    -- a 16x16 window of a 64x64 image holds one of those pixels with
    -- probability about 0.07 when placed uniformly
    assert.is_true(hit_uniform < 40, "uniform crops holding the mask: " .. hit_uniform)
    -- an empty mask, or none: a window anywhere
    local c = T.random_crop {size = 16, positive = 1}({image = img}, lpnx.Generator(1))
    assert.are.same({1, 16, 16}, c.image:size())
    assert.is_nil(c.mask)
  end)

  it("places the window uniformly among those holding the chosen pixel", function()
    -- one mask pixel at (10, 12) of 32x32: the corner's row is uniform on
    -- [10 - 8 + 1, 10] = [3, 10], its column on [5, 12]
    local mask = lpnx.zeros(1, 32, 32)
    mask[1][10][12] = 1
    local s = {image = lpnx.rand(1, 32, 32), mask = mask}
    local rows, cols = {}, {}
    for i = 0, 799 do
      local g = T.generator_for(9, 1, i)
      local out = T.random_crop {size = 8, positive = 1}(s, g)
      assert.are.equal(1, out.mask:sum())
      -- the pixel's place inside the crop gives the corner
      for y = 1, 8 do
        for x = 1, 8 do
          if out.mask[1][y][x] == 1 then
            rows[10 - y + 1] = (rows[10 - y + 1] or 0) + 1
            cols[12 - x + 1] = (cols[12 - x + 1] or 0) + 1
          end
        end
      end
    end
    for v = 3, 10 do assert.is_true((rows[v] or 0) > 60, "row " .. v .. ": " .. tostring(rows[v])) end
    for v = 5, 12 do assert.is_true((cols[v] or 0) > 60, "column " .. v .. ": " .. tostring(cols[v])) end
    assert.is_nil(rows[2]); assert.is_nil(rows[11]); assert.is_nil(cols[4]); assert.is_nil(cols[13])
  end)

  it("refuses a window larger than the image, and bad options", function()
    local t = T.random_crop {size = 40}
    assert.has_error(function() t(sample(1, 1, 32, 48), lpnx.Generator(1)) end,
                     "random_crop: a 40x40 crop does not fit the image (1,32,48)")
    assert.has_error(function() T.random_crop {size = 0} end,
                     "random_crop: size must be a positive integer or a table of 2 {height, width}, got 0")
    assert.has_error(function() T.random_crop {positive = 2} end, "random_crop: positive must be in [0, 1], got 2")
    assert.has_error(function() T.siim_train(64, {crop = 96}) end,
                     "siim_train: crop must be an integer from 1 to the size 64, got 96")
  end)
end)

describe("transforms.siim_train", function()
  it("runs on random 64x64 samples", function()
    local aug = T.siim_train(64)
    local s = sample(14, 1, 64, 64)
    local changed = 0
    for i = 0, 15 do
      local out = aug(s, T.generator_for(2024, 0, i))
      assert.are.same({1, 64, 64}, out.image:size())
      assert.are.same({1, 64, 64}, out.mask:size())
      assert_unit(out.image)
      assert_binary(out.mask)
      assert.are.equal("case14", out.id)
      if h.max_diff(out.image, s.image) > 0 then changed = changed + 1 end
    end
    assert.is_true(changed >= 8, "changed " .. changed .. " of 16")
    local cropped = T.siim_train(64, {crop = 32, crop_positive = 1})
    for i = 0, 7 do
      local out = cropped(s, T.generator_for(2024, 0, i))
      assert.are.same({1, 32, 32}, out.image:size())
      assert.are.same({1, 32, 32}, out.mask:size())
      assert_binary(out.mask)
    end
    local other = aug({image = rand(15, 1, 80, 72)}, T.generator_for(1, 0, 0))
    assert.are.same({1, 64, 64}, other.image:size())
    assert.is_nil(other.mask)
  end)
end)

describe("transform errors", function()
  it("name the transform and the option", function()
    local f = T.hflip()
    local cases = {
      {function() T.hflip {p = 2} end, "hflip: p must be in [0, 1], got 2"},
      {function() T.hflip {p = "x"} end, "hflip: p must be a number, got string"},
      {function() T.hflip {q = 1} end, "hflip: unknown option 'q' (expected one of p)"},
      {function() T.hflip(0.5) end, "hflip: expected a table of options, got number"},
      {function() T.shift_scale_rotate {scale = 1} end, "shift_scale_rotate: scale must be in [0, 1), got 1"},
      {function() T.shift_scale_rotate {rotate = 200} end, "shift_scale_rotate: rotate must be in [0, 180], got 200"},
      {function() T.shift_scale_rotate {shift = -0.1} end, "shift_scale_rotate: shift must be in [0, 1], got -0.1"},
      {function() T.shift_scale_rotate {border = "wrap"} end,
       'shift_scale_rotate: border must be "constant", "replicate" or "reflect", got "wrap"'},
      {function() T.shift_scale_rotate {value = 0 / 0} end, "shift_scale_rotate: value must be in [0, 1], got"},
      {function() T.elastic {alpha = -1} end, "elastic: alpha must be a finite number >= 0, got -1"},
      {function() T.elastic {sigma = 2000} end, "elastic: sigma must be in [0, 1000], got 2000"},
      {function() T.brightness_contrast {brightness = 1.5} end,
       "brightness_contrast: brightness must be in [0, 1], got 1.5"},
      {function() T.brightness_contrast {contrast = math.huge} end,
       "brightness_contrast: contrast must be in [0, 1], got inf"},
      {function() T.gamma {range = {1.2, 0.8}} end,
       "gamma: range must be a table of 2 numbers {low, high} with 0 < low <= high, got {1.2, 0.8}"},
      {function() T.gamma {range = 1} end,
       "gamma: range must be a table of 2 numbers {low, high} with 0 < low <= high, got number"},
      {function() T.clahe {clip = 0} end, "clahe: clip must be a finite number > 0, got 0"},
      {function() T.clahe {tiles = {8, 2.5}} end,
       "clahe: tiles must be a table of 2 integers {columns, rows} in [1, 1024], got {8, 2.5}"},
      {function() T.clahe {tiles = {8}} end,
       "clahe: tiles must be a table of 2 integers {columns, rows} in [1, 1024], got a table of 1 values"},
      {function() T.gaussian_noise {std = {0.1, 0.05}} end,
       "gaussian_noise: std must be a table of 2 numbers {low, high} with 0 <= low <= high <= 1, got {0.1, 0.05}"},
      {function() T.resize {size = 0} end,
       "resize: size must be a positive integer or a table of 2 {height, width}, got 0"},
      {function() T.resize {size = {64, 0}} end,
       "resize: size must be a positive integer or a table of 2 positive integers {height, width}, got {64, 0}"},
      {function() T.normalize {std = {1, 0}} end,
       "normalize: std[2] must be a non-zero finite number or an array of them (one per channel), got 0"},
      {function() T.to_rgb {x = 1} end, "to_rgb: unknown option 'x' (it takes none)"},
      {function() T.compose {f, 3} end, "compose: element 2 must be a transform (a function), got number"},
      {function() T.compose {f, p = 1} end, "compose: unknown option 'p' (expected transforms at 1..1)"},
      {function() T.compose(f) end, "compose: expected a table of transforms, got function"},
      {function() T.one_of {} end, "one_of: expected at least one transform"},
      {function() T.one_of {f, f, weights = {1}} end, "one_of: weights must have 2 values (one per transform), got 1"},
      {function() T.one_of {f, f, weights = {1, -1}} end, "one_of: weights[2] must be a finite number >= 0, got -1"},
      {function() T.one_of {f, weights = {0}} end, "one_of: weights must not all be 0"},
      {function() T.one_of {f, p = 0.5} end, "one_of: unknown option 'p' (expected transforms at 1..1 and weights)"},
      {function() T.probability(1.5, f) end, "probability: p must be in [0, 1], got 1.5"},
      {function() T.probability(0.5) end, "probability: expected a transform (a function) as argument 2, got nil"},
      {function() T.siim_train(0) end, "siim_train: size must be a positive integer, got 0"},
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[1])
      assert.is_false(ok, case[2])
      assert(tostring(err):find(case[2], 1, true), ("expected %q, got %q"):format(case[2], tostring(err)))
    end
  end)

  it("check the sample and the generator", function()
    local g = lpnx.Generator(1)
    local t = T.shift_scale_rotate()
    assert.has_error(function() t({image = lpnx.zeros(4, 4)}, g) end,
                     "shift_scale_rotate: expected sample.image (C,H,W), got (4,4)")
    assert.has_error(function() t({image = lpnx.zeros(1, 4, 4), mask = lpnx.zeros(1, 4, 5)}, g) end,
                     "shift_scale_rotate: expected sample.mask (1,4,4) to match the image (1,4,4), got (1,4,5)")
    assert.has_error(function() t(lpnx.zeros(1, 4, 4), g) end,
                     "shift_scale_rotate: expected a sample table, got userdata")
    assert.has_error(function() t({image = lpnx.zeros(1, 4, 4)}) end,
                     "shift_scale_rotate: expected an lpnx.Generator as argument 2, got nil")
    assert.has_error(function() T.compose {function() end}({image = lpnx.zeros(1, 1, 1)}, g) end,
                     "compose: transform 1 returned nil, expected a sample table")
  end)
end)
