-- lpnx.present: the policy of lpnx.dicom.present, which window a DICOM
-- image is shown through. The per-pixel chain (Modality LUT, VOI LUT or
-- window, polarity; DICOM PS3.3 C.11) is lpnx.image.present, in C.
--
--   local img, meta = lpnx.dicom.read(path, {stored = true})
--   local x, how = lpnx.dicom.present(img, meta)              -- (1,H,W) in [0, 1]
--   lpnx.dicom.present(img, meta, {window = 2})               -- the file's 2nd window / VOI LUT
--   lpnx.dicom.present(img, meta, {window = {-600, 1500}})    -- center, width of the caller's
--   lpnx.dicom.present(img, meta, {window = "auto"})          -- from the image's values
local lpnx = require "lpnx"

local present = {}

-- VOI LUT Function (0028,1056) -> the kernel's name.
local FUNCTIONS = {LINEAR = "linear", LINEAR_EXACT = "linear_exact", SIGMOID = "sigmoid"}

-- The quantiles of the "auto" window.
present.AUTO_QUANTILES = {0.01, 0.99}

local function fail(msg) error("lpnx.dicom.present: " .. msg, 3) end

local function plural(n, word) return ("%d %s%s"):format(n, word, n == 1 and "" or "s") end

-- The Modality LUT step of the chain, as lpnx.image.present options: the
-- Modality LUT Sequence when the file has one (it wins over a rescale, as
-- in pydicom), else RescaleSlope / RescaleIntercept (1 and 0 when absent).
local function modality_of(meta)
  if meta.modality_lut then return {modality_lut = meta.modality_lut} end
  return {slope = meta.rescale_slope or 1, intercept = meta.rescale_intercept or 0}
end

-- The range of the modality values: the LUT's output range, else the
-- stored range (signed or not) through the rescale.
local function modality_range(meta)
  if meta.modality_lut then return 0, 2 ^ meta.modality_lut.bits - 1 end
  local bits = meta.bits_stored or 8
  local lo, hi = 0, 2 ^ bits - 1
  if meta.pixel_representation == 1 then lo, hi = -2 ^ (bits - 1), 2 ^ (bits - 1) - 1 end
  local slope, intercept = meta.rescale_slope or 1, meta.rescale_intercept or 0
  lo, hi = lo * slope + intercept, hi * slope + intercept
  if lo > hi then lo, hi = hi, lo end
  return lo, hi
end

local function function_of(name)
  local f = FUNCTIONS[(name or "LINEAR"):upper()]
  if not f then fail(("unknown VOI LUT Function '%s' (LINEAR, LINEAR_EXACT or SIGMOID)"):format(name)) end
  return f
end

-- auto_window(modality_values) -> center, width: a LINEAR_EXACT window
-- from the 1st to the 99th percentile (nearest rank) of the values, the
-- values equal to the image's smallest or largest left out first (padding,
-- collimation, saturated air), unless nothing else is left; width 1 when
-- the two percentiles are equal.
function present.auto_window(values)
  local q = lpnx.image.quantiles(values, present.AUTO_QUANTILES, {exclude_extremes = true})
  local lo, hi = q[1], q[2]
  if hi <= lo then return lo, 1 end
  return (lo + hi) / 2, hi - lo
end

-- present(image, meta [, {window = n | "auto" | {center, width},
--                         ["function"] = "LINEAR" | "LINEAR_EXACT" | "SIGMOID"}])
--   -> (same shape) in [0, 1], how
-- image: the stored values of a monochrome image, as
-- lpnx.dicom.read(path, {stored = true}) returns them with meta. The
-- chain: Modality LUT; then the VOI step:
--   window = n: the file's n-th VOI LUT when it has a VOI LUT Sequence,
--     else its n-th WindowCenter / WindowWidth through its VOI LUT Function
--     (LINEAR when absent);
--   window = {center, width}: the caller's window through opts["function"],
--     else the file's VOI LUT Function, else LINEAR;
--   window = "auto": present.auto_window of the modality values;
--   no window: the file's first VOI LUT or window when it has one; else,
--     up to 8 bits stored, the modality range (the stored range through the
--     rescale) onto [0, 1] (an 8-bit SIIM image gives x / 255), and "auto"
--     above 8 bits;
-- then 1 - y for MONOCHROME1 or Presentation LUT Shape INVERSE (one
-- inversion when both: the DX module pairs them). how tells what was
-- applied: {voi = "lut" | "window" | "range", index =, center =, width =,
-- ["function"] =, explanation =, low =, high =, auto = true, invert =}.
function present.present(image, meta, opts)
  if not lpnx.is_tensor(image) then fail("expected the image tensor first, got " .. type(image)) end
  if type(meta) ~= "table" then fail("expected the meta table second, got " .. type(meta)) end
  if opts ~= nil and type(opts) ~= "table" then fail("expected a table of options third, got " .. type(opts)) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "window" and k ~= "function" then fail(("unknown option '%s' (window, function)"):format(tostring(k))) end
  end
  if meta.stored_values ~= true then
    fail("expected stored values (read the file with lpnx.dicom.read(path, {stored = true}))")
  end
  if meta.samples_per_pixel == 3 then
    fail(("a colour image (%s) has no grayscale presentation"):format(meta.photometric or "RGB"))
  end
  local o = modality_of(meta)
  local how = {}
  local window = opts.window
  local luts, windows = meta.voi_luts or {}, meta.windows or {}
  if window == nil then
    if #luts > 0 or #windows > 0 then window = 1
    elseif (meta.bits_stored or 8) <= 8 then window = "range"
    else window = "auto" end
  end
  if math.type(window) == "integer" then
    if window < 1 then fail(("window must be 1 or more, got %d"):format(window)) end
    if #luts > 0 then
      if window > #luts then fail(("no VOI LUT %d (the file has %s)"):format(window, plural(#luts, "VOI LUT"))) end
      local lut = luts[window]
      o.voi, o.voi_lut = "table", lut
      how = {voi = "lut", index = window, explanation = lut.explanation}
    else
      if window > #windows then
        fail(("no window %d (the file has %s)"):format(window, #windows == 0 and "none" or plural(#windows, "window")))
      end
      local w = windows[window]
      o.voi, o.center, o.width = function_of(meta.voi_lut_function), w.center, w.width
      how = {voi = "window", index = window, center = w.center, width = w.width,
             ["function"] = o.voi:upper(), explanation = w.explanation}
    end
  elseif type(window) == "table" then
    local c, w = window[1], window[2]
    if type(c) ~= "number" or type(w) ~= "number" then
      fail("window must be {center, width} as two numbers")
    end
    o.voi, o.center, o.width = function_of(opts["function"] or meta.voi_lut_function), c, w
    how = {voi = "window", center = c, width = w, ["function"] = o.voi:upper()}
  elseif window == "auto" then
    local values = lpnx.image.present(image, o)
    local c, w = present.auto_window(values)
    o.voi, o.center, o.width = "linear_exact", c, w
    how = {voi = "window", center = c, width = w, ["function"] = "LINEAR_EXACT", auto = true}
  elseif window == "range" and opts.window == nil then
    local lo, hi = modality_range(meta)
    o.voi, o.low, o.high = "range", lo, lo + math.max(hi - lo, 1e-12)
    how = {voi = "range", low = lo, high = hi}
  else
    fail(("window must be an integer, \"auto\" or {center, width}, got %s"):format(
      type(window) == "string" and ('"' .. window .. '"') or tostring(window)))
  end
  o.invert = meta.photometric == "MONOCHROME1" or meta.presentation_lut_shape == "INVERSE"
  how.invert = o.invert
  local ok, out = pcall(lpnx.image.present, image, o)
  if not ok then fail(tostring(out):gsub("^bad argument #2 to '[^']*' %((.*)%)$", "%1")) end
  return out, how
end

return present
