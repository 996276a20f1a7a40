-- Augmentation for segmentation training, one sample at a time, in the
-- manner of albumentations.
--
-- A sample is a table {image = (C,H,W) float tensor in [0, 1], mask =
-- (1,H,W) 0/1 tensor or nil, ...}; other fields pass through untouched.
-- A transform is a function(sample, g) -> sample, where g is the sample's
-- own lpnx.Generator: every random draw comes from g, so the output is a
-- pure function of the input and g's state. A data loader that makes g
-- with generator_for(seed, epoch, index) gets the same augmentation for a
-- sample whatever the number or order of its workers.
--
-- Transforms never change the table or the tensors they are given: they
-- return a new table (a shallow copy) holding new tensors for what they
-- change and the input's own tensors for what they leave alone. A
-- transform that is skipped (its probability did not come up) returns its
-- input table itself.
--
--   compose{t1, t2, ...}                         t1, then t2, ...
--   one_of{t1, t2, ..., weights = {w1, w2, ...}}  one of them, picked by weight (default equal)
--   probability(p, t)                            t with probability p
--   generator_for(seed, epoch, index) -> lpnx.Generator      mix_seed(seed, epoch, index) -> integer
--
-- Geometric (the same parameters for image and mask; the mask is sampled
-- nearest with a constant 0 border, then kept 0/1 by mask > 0.5):
--   hflip{p = 0.5}
--   random_crop{size = 256, positive = 0.5}     size or {height, width}
--   shift_scale_rotate{shift = 0.0625, scale = 0.1, rotate = 15, p = 0.5,
--                      border = "constant", value = 0}
--   elastic{alpha = 30, sigma = 6, p = 0.3, border = "reflect", value = 0}
-- Photometric (the image only; the mask is passed on as it is):
--   brightness_contrast{brightness = 0.2, contrast = 0.2, p = 0.5}
--   gamma{range = {0.8, 1.2}, p = 0.5}
--   clahe{clip = 2, tiles = {8, 8}, p = 0.3}          single-channel images
--   gaussian_noise{std = {0, 0.03}, p = 0.3}
-- Deterministic:
--   resize{size = 256}            size or {height, width}
--   normalize{mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}}
--   to_rgb()                      1 channel to 3
-- Ready-made:
--   siim_train([size = 256] [, {crop = n, crop_positive = 0.5}])
--
-- Every transform with a probability p first draws u = g:uniform() and is
-- skipped unless u < p; its parameters are drawn after that, in the order
-- its comment gives. Builders check their options: an unknown key or a
-- value out of range is an error naming the transform and the option
-- ("hflip: p must be in [0, 1], got 2").
local lpnx = require "lpnx"
local util = require "lpnx.util"

local image = lpnx.image

local transforms = {}

local GENERATOR_MT = getmetatable(lpnx.Generator(0))

-- ---- messages --------------------------------------------------------

-- A value as it appears in a message ("2", "0.5", "inf", '"wrap"', "table")
-- and a tensor's sizes as "(C,H,W)".
local show, shape = util.show, util.shape_tuple

-- Raises "name: text" with the position of a caller: level 1 is the
-- function calling fail, 2 its caller, and so on (so a helper called by a
-- builder passes 3 to blame the builder's caller).
local function fail(name, level, fmt, ...)
  error(name .. ": " .. fmt:format(...), level + 1)
end

-- ---- option checks (called straight from the builders) ----------------

-- opts as a table whose keys are all in keys ({} for nil).
local function options(name, opts, keys)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(name, 3, "expected a table of options, got %s", type(opts)) end
  local known = {}
  for _, k in ipairs(keys) do known[k] = true end
  for k in pairs(opts) do
    if not known[k] then
      fail(name, 3, "unknown option %s (%s)", type(k) == "string" and "'" .. k .. "'" or show(k),
           #keys > 0 and "expected one of " .. table.concat(keys, ", ") or "it takes none")
    end
  end
  return opts
end

-- number(name, opts, key, def, ok, what): opts[key] (def when nil), a
-- finite number for which ok(v) holds; what says what ok wants ("in [0, 1]").
local finite, number = util.is_finite, util.option_number

local function unit(v) return v >= 0 and v <= 1 end

local function probability_option(name, opts, def)
  return number(name, opts, "p", def, unit, "in [0, 1]")
end

-- opts[key] (def when nil): a table of two finite numbers {a, b} for which
-- ok(a, b) holds; returns a, b.
local function pair(name, opts, key, def, ok, what, level)
  local v = opts[key]
  if v == nil then return def[1], def[2] end
  local got
  if type(v) ~= "table" then
    got = type(v)
  elseif #v ~= 2 then
    got = ("a table of %d values"):format(#v)
  elseif not (finite(v[1]) and finite(v[2]) and ok(v[1], v[2])) then
    got = "{" .. show(v[1]) .. ", " .. show(v[2]) .. "}"
  end
  if got then fail(name, level or 3, "%s must be %s, got %s", key, what, got) end
  return v[1], v[2]
end

-- size_option(name, opts, def): opts.size (def when nil), n for n x n or
-- {height, width}, positive integers -> height, width.
local function size_option(name, opts, def)
  local function positive(v) return math.tointeger(v) ~= nil and v >= 1 and v <= 2147483647 end
  local size = opts.size
  if size == nil then size = def end
  if type(size) == "number" then
    if not positive(size) then
      fail(name, 3, "size must be a positive integer or a table of 2 {height, width}, got %s", show(size))
    end
    return math.tointeger(size), math.tointeger(size)
  end
  local h, w = pair(name, opts, "size", nil, function(a, b) return positive(a) and positive(b) end,
                    "a positive integer or a table of 2 positive integers {height, width}", 4)
  return math.tointeger(h), math.tointeger(w)
end

local BORDERS = {constant = true, replicate = true, reflect = true}

local function border_option(name, opts, def)
  local v = opts.border
  if v == nil then return def end
  if not BORDERS[v] then
    fail(name, 3, 'border must be "constant", "replicate" or "reflect", got %s', show(v))
  end
  return v
end

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- The transforms of list (copied), which holds them at 1..n and otherwise
-- only the keys in extra (an array of names).
local function transform_list(name, list, extra)
  if type(list) ~= "table" then fail(name, 3, "expected a table of transforms, got %s", type(list)) end
  local n, count, allowed = #list, 0, {}
  for _, k in ipairs(extra) do allowed[k] = true end
  for k in pairs(list) do
    if math.type(k) == "integer" and k >= 1 and k <= n then
      count = count + 1
    elseif not allowed[k] then
      local also = #extra > 0 and " and " .. table.concat(extra, ", ") or ""
      fail(name, 3, "unknown option %s (expected transforms at 1..%d%s)",
           type(k) == "string" and "'" .. k .. "'" or show(k), n, also)
    end
  end
  if count ~= n then fail(name, 3, "expected transforms at 1..%d without gaps", n) end
  local ts = {}
  for i = 1, n do
    if not callable(list[i]) then
      fail(name, 3, "element %d must be a transform (a function), got %s", i, type(list[i]))
    end
    ts[i] = list[i]
  end
  return ts
end

-- ---- sample checks (called straight from the transforms) --------------

local function check_generator(name, g)
  if getmetatable(g) ~= GENERATOR_MT then
    fail(name, 3, "expected an lpnx.Generator as argument 2, got %s", type(g))
  end
end

local function check_sample(name, sample)
  if type(sample) ~= "table" then fail(name, 3, "expected a sample table, got %s", type(sample)) end
  local img, mask = sample.image, sample.mask
  if not (lpnx.is_tensor(img) and img:dim() == 3) then
    fail(name, 3, "expected sample.image (C,H,W), got %s", lpnx.is_tensor(img) and shape(img) or type(img))
  end
  if mask ~= nil then
    local H, W = img:size(2), img:size(3)
    if not (lpnx.is_tensor(mask) and mask:dim() == 3 and mask:size(1) == 1 and mask:size(2) == H
            and mask:size(3) == W) then
      fail(name, 3, "expected sample.mask (1,%d,%d) to match the image %s, got %s", H, W, shape(img),
           lpnx.is_tensor(mask) and shape(mask) or type(mask))
    end
  end
end

-- A shallow copy of sample with image and mask replaced.
local function with(sample, img, mask)
  local out = {}
  for k, v in pairs(sample) do out[k] = v end
  out.image, out.mask = img, mask
  return out
end

-- ---- combinators ------------------------------------------------------

-- compose{t1, t2, ...}: applies t1, then t2, ... with the one generator.
-- An empty list is the identity.
function transforms.compose(list)
  local ts = transform_list("compose", list, {})
  return function(sample, g)
    for i = 1, #ts do
      sample = ts[i](sample, g)
      if type(sample) ~= "table" then
        fail("compose", 2, "transform %d returned %s, expected a sample table", i, type(sample))
      end
    end
    return sample
  end
end

-- one_of{t1, t2, ..., weights = {w1, w2, ...}}: applies exactly one of
-- the transforms, t_i with probability w_i / sum(w) (one draw,
-- g:uniform(0, sum(w))). Weights are finite and >= 0, not all 0; equal by
-- default.
function transforms.one_of(list)
  local name = "one_of"
  local ts = transform_list(name, list, {"weights"})
  local n = #ts
  if n == 0 then fail(name, 2, "expected at least one transform") end
  local weights = list.weights
  if weights == nil then
    weights = {}
    for i = 1, n do weights[i] = 1 end
  elseif type(weights) ~= "table" then
    fail(name, 2, "weights must be a table of %d numbers (one per transform), got %s", n, type(weights))
  elseif #weights ~= n then
    fail(name, 2, "weights must have %d values (one per transform), got %d", n, #weights)
  end
  local cumulative, total, last = {}, 0, 0
  for i = 1, n do
    local w = weights[i]
    if not (finite(w) and w >= 0) then
      fail(name, 2, "weights[%d] must be a finite number >= 0, got %s", i, show(w))
    end
    total = total + w
    cumulative[i] = total
    if w > 0 then last = i end
  end
  if total == 0 then fail(name, 2, "weights must not all be 0") end
  return function(sample, g)
    check_generator(name, g)
    local u = g:uniform(0, total)
    for i = 1, n do
      if u < cumulative[i] then return ts[i](sample, g) end
    end
    return ts[last](sample, g) -- u rounded up to total
  end
end

-- probability(p, t): t with probability p (one draw, applied when
-- g:uniform() < p); otherwise the sample as it came.
function transforms.probability(p, t)
  local name = "probability"
  if type(p) ~= "number" then fail(name, 2, "p must be a number, got %s", type(p)) end
  if not (p >= 0 and p <= 1) then fail(name, 2, "p must be in [0, 1], got %s", show(p)) end
  if not callable(t) then fail(name, 2, "expected a transform (a function) as argument 2, got %s", type(t)) end
  return function(sample, g)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    return t(sample, g)
  end
end

-- ---- per-sample generators --------------------------------------------

local GOLDEN = 0x9e3779b97f4a7c15 -- 2^64 / golden ratio, as splitmix64 steps

-- splitmix64's finaliser (Stafford's mix 13): a bijection of 64-bit
-- integers in which every input bit flips about half the output bits.
-- Lua integers wrap modulo 2^64 and >> is a logical shift, so this is the
-- C function bit for bit.
local function mix64(z)
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return z ~ (z >> 31)
end

-- The three arguments of mix_seed or generator_for, mixed.
local function mixed(name, seed, epoch, index)
  local args = {seed, epoch, index}
  for i, what in ipairs {"seed", "epoch", "index"} do
    local v = args[i]
    if not (type(v) == "number" and math.tointeger(v)) then
      fail(name, 3, "%s (argument %d) must be an integer, got %s", what, i, show(v))
    end
    args[i] = math.tointeger(v)
  end
  local h = mix64(args[1] + GOLDEN)
  h = mix64((h ~ args[2]) + GOLDEN)
  return mix64((h ~ args[3]) + GOLDEN)
end

-- mix_seed(seed, epoch, index) -> a 64-bit integer:
--   h = mix64(seed + G)
--   h = mix64((h ~ epoch) + G)
--   h = mix64((h ~ index) + G)
-- with G = 0x9e3779b97f4a7c15 and mix64 splitmix64's finaliser, all modulo
-- 2^64 (as signed Lua integers). Each step is a bijection of its new input,
-- so for one seed and epoch distinct indices give distinct values, and
-- inputs one apart give unrelated ones.
function transforms.mix_seed(seed, epoch, index)
  return mixed("mix_seed", seed, epoch, index)
end

-- generator_for(seed, epoch, index) -> lpnx.Generator(mix_seed(seed,
-- epoch, index)): the generator of one sample in one epoch, a function of
-- the three numbers alone.
function transforms.generator_for(seed, epoch, index)
  return lpnx.Generator(mixed("generator_for", seed, epoch, index))
end

-- ---- geometric --------------------------------------------------------

-- The mask after a warp: nearest sampling read 0 outside, then > 0.5.
local MASK_SAMPLING = {mode = "nearest", border = "constant", value = 0}

-- hflip{p = 0.5}: mirrors image and mask left-right.
function transforms.hflip(opts)
  local name = "hflip"
  opts = options(name, opts, {"p"})
  local p = probability_option(name, opts, 0.5)
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    return with(sample, image.hflip(sample.image), sample.mask and image.hflip(sample.mask))
  end
end

-- random_crop{size = 256, positive = 0.5}: an n x n window of the sample
-- (size n, or {height, width}; at most the image's own). Draws u =
-- g:uniform(); when u < positive and the mask has a pixel set, one of the
-- mask's pixels, uniformly (g:random over their count), and a window that
-- holds it, uniformly among those that do (its row, then its column, by
-- g:random); otherwise a window anywhere (row, then column). So a small
-- region still lands in the crop as often as `positive` says, which a
-- uniform crop of a large image would rarely give. albumentations'
-- CropNonEmptyMaskIfExists is positive = 1, RandomCrop positive = 0.
function transforms.random_crop(opts)
  local name = "random_crop"
  opts = options(name, opts, {"size", "positive"})
  local h, w = size_option(name, opts, 256)
  local p = number(name, opts, "positive", 0.5, unit, "in [0, 1]")
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    local img, mask = sample.image, sample.mask
    local H, W = img:size(2), img:size(3)
    if h > H or w > W then
      fail(name, 2, "a %dx%d crop does not fit the image %s", h, w, shape(img))
    end
    local u = g:uniform()
    local y, x                                    -- the window's top-left corner, 1-based
    local total = u < p and mask and mask:sum() or 0
    if total > 0 then
      -- the k-th set pixel in row-major order: its row from the row sums,
      -- then its column within the row
      local k = g:random(math.floor(total + 0.5))
      local flat = mask:contiguous():view(H, W)
      local rows = flat:sum(2)
      local row = 1
      while k > rows[row] do k = k - rows[row]; row = row + 1 end
      local line = flat[row]
      local col = 0
      while k > 0 do col = col + 1; if line[col] > 0 then k = k - 1 end end
      y = g:random(math.max(1, row - h + 1), math.min(row, H - h + 1))
      x = g:random(math.max(1, col - w + 1), math.min(col, W - w + 1))
    else
      y, x = g:random(H - h + 1), g:random(W - w + 1)
    end
    if h == H and w == W then return sample end
    local function cut(t) return t:narrow(2, y, h):narrow(3, x, w):contiguous() end
    return with(sample, cut(img), mask and cut(mask))
  end
end

-- shift_scale_rotate{shift = 0.0625, scale = 0.1, rotate = 15, p = 0.5,
-- border = "constant", value = 0}: albumentations' ShiftScaleRotate about
-- the image centre (lpnx.image.affine). Draws, in order: angle =
-- uniform(-rotate, rotate) degrees (counter-clockwise), factor = 1 +
-- uniform(-scale, scale), dx = uniform(-shift, shift) and dy = likewise
-- (fractions of the width and height). The image is sampled bilinearly
-- with the given border (value in [0, 1] for "constant").
function transforms.shift_scale_rotate(opts)
  local name = "shift_scale_rotate"
  opts = options(name, opts, {"shift", "scale", "rotate", "p", "border", "value"})
  local shift = number(name, opts, "shift", 0.0625, unit, "in [0, 1]")
  local scale = number(name, opts, "scale", 0.1, function(v) return v >= 0 and v < 1 end, "in [0, 1)")
  local rotate = number(name, opts, "rotate", 15, function(v) return v >= 0 and v <= 180 end, "in [0, 180]")
  local p = probability_option(name, opts, 0.5)
  local border = border_option(name, opts, "constant")
  local value = number(name, opts, "value", 0, unit, "in [0, 1]")
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    local angle = g:uniform(-rotate, rotate)
    local factor = 1 + g:uniform(-scale, scale)
    local dx = g:uniform(-shift, shift)
    local dy = g:uniform(-shift, shift)
    local img = image.affine(sample.image, {angle = angle, scale = factor, shift = {dx, dy},
                                            border = border, value = value})
    local mask = sample.mask
    if mask then
      mask = image.affine(mask, {angle = angle, scale = factor, shift = {dx, dy}, mode = "nearest",
                                 border = "constant", value = 0}):gt(0.5)
    end
    return with(sample, img, mask)
  end
end

-- elastic{alpha = 30, sigma = 6, p = 0.3, border = "reflect", value = 0}:
-- albumentations' ElasticTransform: one field lpnx.image.elastic_field(H,
-- W, alpha, sigma, g) (uniform(-1, 1) displacements blurred with sigma,
-- times alpha, in pixels) moves image and mask alike. The image is sampled
-- bilinearly with the given border (reflect-101 by default, as there).
function transforms.elastic(opts)
  local name = "elastic"
  opts = options(name, opts, {"alpha", "sigma", "p", "border", "value"})
  local alpha = number(name, opts, "alpha", 30, function(v) return v >= 0 end, "a finite number >= 0")
  local sigma = number(name, opts, "sigma", 6, function(v) return v >= 0 and v <= 1000 end, "in [0, 1000]")
  local p = probability_option(name, opts, 0.3)
  local border = border_option(name, opts, "reflect")
  local value = number(name, opts, "value", 0, unit, "in [0, 1]")
  local sampling = {border = border, value = value}
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    local img = sample.image
    local field = image.elastic_field(img:size(2), img:size(3), alpha, sigma, g) -- (2,H,W)
    local mask = sample.mask and image.remap(sample.mask, field, MASK_SAMPLING):gt(0.5)
    return with(sample, image.remap(img, field, sampling), mask)
  end
end

-- ---- photometric ------------------------------------------------------

-- brightness_contrast{brightness = 0.2, contrast = 0.2, p = 0.5}:
-- albumentations' RandomBrightnessContrast for float images: image =
-- clamp(image * (1 + c) + b, 0, 1) with c = uniform(-contrast, contrast)
-- drawn first, then b = uniform(-brightness, brightness).
function transforms.brightness_contrast(opts)
  local name = "brightness_contrast"
  opts = options(name, opts, {"brightness", "contrast", "p"})
  local brightness = number(name, opts, "brightness", 0.2, unit, "in [0, 1]")
  local contrast = number(name, opts, "contrast", 0.2, unit, "in [0, 1]")
  local p = probability_option(name, opts, 0.5)
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    local c = g:uniform(-contrast, contrast)
    local b = g:uniform(-brightness, brightness)
    return with(sample, image.brightness_contrast(sample.image, b, c), sample.mask)
  end
end

-- gamma{range = {0.8, 1.2}, p = 0.5}: image = clamp(image, 0, 1) ^ gamma
-- with gamma = uniform(range[1], range[2]).
function transforms.gamma(opts)
  local name = "gamma"
  opts = options(name, opts, {"range", "p"})
  local lo, hi = pair(name, opts, "range", {0.8, 1.2}, function(a, b) return a > 0 and a <= b end,
                      "a table of 2 numbers {low, high} with 0 < low <= high")
  local p = probability_option(name, opts, 0.5)
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    return with(sample, image.gamma(sample.image, g:uniform(lo, hi)), sample.mask)
  end
end

-- clahe{clip = 2, tiles = {8, 8}, p = 0.3}: contrast-limited adaptive
-- histogram equalisation (lpnx.image.clahe, OpenCV's algorithm) of a
-- single-channel image; tiles = {columns, rows} of the grid. No draws
-- beyond the one for p.
function transforms.clahe(opts)
  local name = "clahe"
  opts = options(name, opts, {"clip", "tiles", "p"})
  local clip = number(name, opts, "clip", 2, function(v) return v > 0 end, "a finite number > 0")
  local function tile_count(v) return math.tointeger(v) ~= nil and v >= 1 and v <= 1024 end
  local tx, ty = pair(name, opts, "tiles", {8, 8}, function(a, b) return tile_count(a) and tile_count(b) end,
                      "a table of 2 integers {columns, rows} in [1, 1024]")
  local p = probability_option(name, opts, 0.3)
  local clahe_opts = {clip = clip, tiles = {tx, ty}}
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    local img = sample.image
    if img:size(1) ~= 1 then fail(name, 2, "expected a single-channel image (1,H,W), got %s", shape(img)) end
    if g:uniform() >= p then return sample end
    return with(sample, image.clahe(img, clahe_opts), sample.mask)
  end
end

-- gaussian_noise{std = {0, 0.03}, p = 0.3}: image = clamp(image + N(0,
-- s^2), 0, 1) per pixel with s = uniform(std[1], std[2]) drawn first,
-- then one normal per value, in order.
function transforms.gaussian_noise(opts)
  local name = "gaussian_noise"
  opts = options(name, opts, {"std", "p"})
  local lo, hi = pair(name, opts, "std", {0, 0.03}, function(a, b) return a >= 0 and a <= b and b <= 1 end,
                      "a table of 2 numbers {low, high} with 0 <= low <= high <= 1")
  local p = probability_option(name, opts, 0.3)
  return function(sample, g)
    check_sample(name, sample)
    check_generator(name, g)
    if g:uniform() >= p then return sample end
    local std = g:uniform(lo, hi)
    return with(sample, image.gaussian_noise(sample.image, std, g):clamp_(0, 1), sample.mask)
  end
end

-- ---- deterministic ----------------------------------------------------

-- resize{size = 256}: to size x size (or {height, width}). The image by
-- area averaging when it shrinks in both directions (OpenCV's INTER_AREA
-- choice), bilinear otherwise; the mask bilinear, then > 0.5. A sample
-- already at the size is returned as it is. Takes no generator.
function transforms.resize(opts)
  local name = "resize"
  opts = options(name, opts, {"size"})
  local h, w = size_option(name, opts, 256)
  return function(sample)
    check_sample(name, sample)
    local img = sample.image
    local H, W = img:size(2), img:size(3)
    if H == h and W == w then return sample end
    local mode = (h <= H and w <= W) and "area" or "bilinear"
    local mask = sample.mask and image.resize(sample.mask, h, w, "bilinear"):gt(0.5)
    return with(sample, image.resize(img, h, w, mode), mask)
  end
end

-- Per-channel values for normalize: a finite number or a non-empty array.
local function channel_values(name, opts, key, def, nonzero)
  local v = opts[key]
  if v == nil then return def end
  local what = nonzero and "a non-zero finite number or an array of them (one per channel)"
                        or "a finite number or an array of them (one per channel)"
  local function good(x) return finite(x) and (not nonzero or x ~= 0) end
  if type(v) == "number" then
    if not good(v) then fail(name, 3, "%s must be %s, got %s", key, what, show(v)) end
    return v
  end
  if type(v) ~= "table" or #v == 0 then
    fail(name, 3, "%s must be %s, got %s", key, what, type(v) == "table" and "an empty table" or type(v))
  end
  local copy = {}
  for i = 1, #v do
    if not good(v[i]) then fail(name, 3, "%s[%d] must be %s, got %s", key, i, what, show(v[i])) end
    copy[i] = v[i]
  end
  return copy
end

-- normalize{mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}}:
-- image = (image - mean[c]) / std[c] per channel (ImageNet's statistics by
-- default, for pretrained encoders; one number serves every channel). The
-- result leaves [0, 1], so it comes last. Takes no generator.
function transforms.normalize(opts)
  local name = "normalize"
  opts = options(name, opts, {"mean", "std"})
  local mean = channel_values(name, opts, "mean", {0.485, 0.456, 0.406}, false)
  local std = channel_values(name, opts, "std", {0.229, 0.224, 0.225}, true)
  return function(sample)
    check_sample(name, sample)
    local img = sample.image
    local C = img:size(1)
    for _, key in ipairs {"mean", "std"} do
      local v = key == "mean" and mean or std
      if type(v) == "table" and #v ~= C then
        fail(name, 2, "expected an image of %d channels to match %s, got %s", #v, key, shape(img))
      end
    end
    return with(sample, image.normalize(img, mean, std), sample.mask)
  end
end

-- to_rgb(): a single-channel image repeated into 3 channels (a 3-channel
-- image passes as it is), for encoders pretrained on RGB. Takes no
-- generator.
function transforms.to_rgb(opts)
  local name = "to_rgb"
  options(name, opts, {})
  return function(sample)
    check_sample(name, sample)
    local img = sample.image
    local C = img:size(1)
    if C == 3 then return sample end
    if C ~= 1 then fail(name, 2, "expected an image of 1 or 3 channels, got %s", shape(img)) end
    return with(sample, image.to_rgb(img), sample.mask)
  end
end

-- ---- ready-made --------------------------------------------------------

-- siim_train([size = 256] [, opts]): training augmentation close to what the
-- leading SIIM-ACR solutions used with albumentations (HorizontalFlip;
-- ShiftScaleRotate with small limits; OneOf of RandomBrightnessContrast
-- and RandomGamma; now and then ElasticTransform(alpha=120,
-- sigma=120*0.05) or Gaussian noise):
--
--   resize{size = size}
--   random_crop{size = crop, positive = crop_positive}       with opts.crop only
--   hflip{p = 0.5}
--   shift_scale_rotate{shift = 0.0625, scale = 0.1, rotate = 10, p = 0.5}   black border
--   probability(0.5, one_of{brightness_contrast{brightness = 0.2, contrast = 0.2},
--                           gamma{range = {0.8, 1.2}}})
--   probability(0.2, one_of{elastic{alpha = 120 s^2, sigma = 6 s},
--                           gaussian_noise{std = {0, 0.03}}})
--
-- with s = size / 256, so the warp moves the same share of the anatomy at
-- any size (alpha = 120, sigma = 6 at 256). opts = {crop = n, crop_positive
-- = 0.5}: train on n x n windows of the size x size image (a model trained
-- so still predicts whole images at size: the network is convolutional),
-- which costs what training at n costs and keeps size's detail. The image
-- stays single-channel in [0, 1]; add to_rgb and normalize after it for a
-- pretrained encoder.
function transforms.siim_train(size, opts)
  local name = "siim_train"
  if size == nil then size = 256 end
  if not (type(size) == "number" and math.tointeger(size) and size >= 1 and size <= 2147483647) then
    fail(name, 2, "size must be a positive integer, got %s", show(size))
  end
  size = math.tointeger(size)
  opts = options(name, opts, {"crop", "crop_positive"})
  local crop = opts.crop
  if crop ~= nil and not (math.tointeger(crop) and crop >= 1 and crop <= size) then
    fail(name, 2, "crop must be an integer from 1 to the size %d, got %s", size, show(crop))
  end
  local s = size / 256
  local T = transforms
  return T.compose {
    T.resize {size = size},
    crop and T.random_crop {size = crop, positive = opts.crop_positive} or T.compose {},
    T.hflip {p = 0.5},
    T.shift_scale_rotate {shift = 0.0625, scale = 0.1, rotate = 10, p = 0.5, border = "constant"},
    T.probability(0.5, T.one_of {
      T.brightness_contrast {brightness = 0.2, contrast = 0.2, p = 1},
      T.gamma {range = {0.8, 1.2}, p = 1},
    }),
    T.probability(0.2, T.one_of {
      T.elastic {alpha = 120 * s * s, sigma = 6 * s, p = 1},
      T.gaussian_noise {std = {0, 0.03}, p = 1},
    }),
  }
end

return transforms
