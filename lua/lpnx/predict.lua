-- lpnx.predict: inference with a trained U-Net, the SIIM-ACR
-- post-processing, submissions, and their scores.
--
--   probabilities(model, meta, images [, {tta = false}]) -> (N,1,H,W) sigmoid probabilities
--   triplet(prob [, {top = 0.75, min_area = 2000, bottom = 0.3, reference_area = 1024*1024}]) -> mask
--   threshold(prob, t) -> mask
--   probability_map(model, meta, image (1,H,W) [, {tta = false}]) -> (1,H,W) at the image's size
--   postprocess(prob [, {top, min_area, bottom, reference_area | threshold, min_component = 0}]) -> mask
--   run{model = FILE, inputs = DIR | FILE | {FILES}, out = DIR, ...} -> summary
--   chest_check(meta [, rules]) -> ok, reason: is this image a frontal chest X-ray?
--   area_spacing(meta) -> {row, column} (mm) | nil, source: the spacing areas are measured with
--   search{model = FILE, data = DIR, csv = CSV, tops, min_areas, bottoms, ...} -> best, dice, tried
--   evaluate{pred = CSV, truth = CSV, size = 1024 | sizes = fn(id) -> h, w} -> scores (and per image)
--
-- The model sees each image resized to its input size; its probabilities
-- are resized back to the image's own size before any threshold, so masks,
-- run-length strings and scores are all at the original resolution.
local lpnx = require "lpnx"
local data = require "lpnx.data"
local siim = require "lpnx.siim"
local metrics = require "lpnx.metrics"
local models = require "lpnx.models"
local util = require "lpnx.util"

local predict = {}

-- SIIM-ACR's images are 1024x1024: min_area is counted on that many pixels.
predict.REFERENCE_AREA = 1024 * 1024
predict.defaults = {top = 0.75, min_area = 2000, bottom = 0.3, min_component = 0, batch = 4, overlay_size = 1024}
-- The grid search() tries when none is given.
predict.search_grid = {
  tops = {0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9},
  min_areas = {0, 250, 500, 1000, 2000, 3000, 4000},
  bottoms = {0.2, 0.3, 0.4, 0.5},
}

---------------------------------------------------------------------------
-- argument checks

local shape = util.shape_tuple

-- Raises when opts has a key that is not in allowed (a typo such as
-- "min-area" would otherwise be ignored silently).
local check_keys = util.check_keys

-- Numbers: "predict.triplet: top must be a number in [0, 1], got 2",
-- "predict.search: tops[2] must be ...", "predict.run: batch must be at
-- least 1, got 0".
local number_in, number_list, integer_at_least = util.number_in, util.number_list, util.integer_at_least

-- The (H,W) plane of a probability map or mask given as (H,W) or (1,H,W).
local function check_plane(name, t)
  local d = lpnx.is_tensor(t) and t:dim()
  if not d or not (d == 2 or (d == 3 and t:size(1) == 1)) or t:numel() == 0 then
    error(("%s: expected a probability map (H,W) or (1,H,W), got %s")
          :format(name, d and shape(t) or type(t)), 3)
  end
  return t:size(d - 1), t:size(d)
end

---------------------------------------------------------------------------
-- the network

-- probabilities(model, meta, images (N,1,H,W) in [0,1] [, {tta = false}])
-- -> (N,1,H,W) sigmoid probabilities. images are at the model's input size;
-- meta (from models.load) says how to normalise them. With tta the
-- prediction is the mean of the one on the image and the one on its
-- horizontal mirror, flipped back. The model runs in eval mode (batch-norm
-- on its running statistics); a model in train mode is put back after.
function predict.probabilities(model, meta, images, opts)
  opts = check_keys("predict.probabilities", opts, {"tta"})
  if type(model) ~= "table" or type(model.forward) ~= "function" then
    error(("predict.probabilities: expected a model with a forward method, got %s"):format(type(model)), 2)
  end
  if not lpnx.is_tensor(images) or images:dim() ~= 4 or images:size(1) == 0 then
    error(("predict.probabilities: expected images (N,1,H,W), got %s")
          :format(lpnx.is_tensor(images) and shape(images) or type(images)), 2)
  end
  local was_training = model.training
  if was_training then model:eval() end
  local ok, prob = pcall(function()
    local x = data.prepare(images, meta)
    local p = model:forward(x):sigmoid()             -- a new tensor: the model reuses its output
    if opts.tta then
      local mirrored = model:forward(lpnx.image.hflip(x)):sigmoid()
      p:add_(lpnx.image.hflip(mirrored)):mul_(0.5)
    end
    return p
  end)
  if was_training then model:train() end
  if not ok then error(prob, 0) end
  return prob
end

---------------------------------------------------------------------------
-- post-processing

-- threshold(prob, t) -> mask: 1 where prob > t.
function predict.threshold(prob, t)
  check_plane("predict.threshold", prob)
  number_in("predict.threshold", "threshold", t, 0, 1)
  return prob:gt(t)
end

-- triplet(prob (H,W) or (1,H,W) at the image's own size, opts) -> 0/1 mask of
-- the same shape: the post-processing of the leading SIIM-ACR solutions. An
-- image is called positive only when at least min_area pixels are above
-- top; then its mask is every pixel above bottom, else it is empty.
-- min_area counts pixels of a reference_area-pixel image (1024x1024) and
-- is scaled by H*W / reference_area, so one setting holds at any size.
function predict.triplet(prob, opts)
  local name = "predict.triplet"
  opts = check_keys(name, opts, {"top", "min_area", "bottom", "reference_area"})
  local h, w = check_plane(name, prob)
  local d = predict.defaults
  local top = number_in(name, "top", opts.top or d.top, 0, 1)
  local bottom = number_in(name, "bottom", opts.bottom or d.bottom, 0, 1)
  local min_area = number_in(name, "min_area", opts.min_area or d.min_area, 0, math.huge)
  local reference = number_in(name, "reference_area", opts.reference_area or predict.REFERENCE_AREA, 1, math.huge)
  if prob:gt(top):sum() < min_area * (h * w) / reference then return lpnx.zeros(prob:size()) end
  return prob:gt(bottom)
end

local TRIPLET_KEYS = {"top", "min_area", "bottom"}

-- postprocess(prob, opts) -> mask: threshold when opts.threshold is set,
-- else triplet; then components under min_component pixels (at the
-- image's own size) are dropped.
function predict.postprocess(prob, opts)
  local name = "predict.postprocess"
  opts = check_keys(name, opts, {"top", "min_area", "bottom", "reference_area", "threshold", "min_component"})
  local mask
  if opts.threshold ~= nil then
    for _, k in ipairs(TRIPLET_KEYS) do
      if opts[k] ~= nil then error(("%s: give either threshold or top/min_area/bottom, not both (got threshold and %s)")
                                   :format(name, k), 2) end
    end
    check_plane(name, prob)
    mask = prob:gt(number_in(name, "threshold", opts.threshold, 0, 1))
  else
    mask = predict.triplet(prob, {top = opts.top, min_area = opts.min_area, bottom = opts.bottom,
                                  reference_area = opts.reference_area})
  end
  local min_component = integer_at_least(name, "min_component", opts.min_component or 0, 0)
  if min_component > 0 then mask = lpnx.image.remove_small(mask, min_component) end
  return mask
end

---------------------------------------------------------------------------
-- what is a chest X-ray

-- The rules chest_check applies to an image's meta (lpnx.dicom.read's
-- names). A site adjusts them in place (predict.chest_rules.body_parts.PORT
-- = true) or passes its own table. An absent or empty attribute passes its
-- rule (archives often leave them out), and so does a PNG, which has none.
--   modalities: Modality values taken as radiographs (a secondary capture,
--     SC or OT, qualifies by having an image);
--   body_parts: words of BodyPartExamined (upper case, its runs of letters)
--     any one of which makes it a chest ("PORT CHEST", "CHEST_PA" pass);
--   views: ViewPosition values and the kind of view each is; a value not
--     listed passes and is recorded as it is; accepted_views: the kinds that
--     pass;
--   max_frames, max_samples: NumberOfFrames and SamplesPerPixel (3 is colour).
predict.chest_rules = {
  modalities = {CR = true, DX = true, SC = true, OT = true},
  body_parts = {CHEST = true, THORAX = true, LUNG = true, LUNGS = true},
  views = {AP = "frontal", PA = "frontal", AP_PA = "frontal", LL = "lateral", RL = "lateral", LAT = "lateral",
           LATERAL = "lateral", LLD = "lateral decubitus", RLD = "lateral decubitus"},
  accepted_views = {frontal = true},
  max_frames = 1,
  max_samples = 1,
}

local function keys_of(set)
  local list = {}
  for k, v in pairs(set) do if v then list[#list + 1] = k end end
  table.sort(list)
  return table.concat(list, ", ")
end

local function attribute(meta, key)
  local v = meta[key]
  if type(v) ~= "string" then return nil end
  v = v:match("^%s*(.-)%s*$"):upper()
  return v ~= "" and v or nil
end

-- chest_check(meta [, rules = predict.chest_rules]) -> true | false, reason:
-- whether an image with this meta is a single-frame, gray, frontal chest
-- radiograph by rules (above); reason says which attribute decided, e.g.
-- "Modality CT is not a radiograph (accepted: CR, DX, OT, SC)" or
-- "ViewPosition LL is a lateral view, not a frontal chest".
function predict.chest_check(meta, rules)
  rules = rules or predict.chest_rules
  if type(meta) ~= "table" then error(("predict.chest_check: expected a meta table, got %s"):format(type(meta)), 2) end
  local modality = attribute(meta, "modality")
  if modality and rules.modalities and not rules.modalities[modality] then
    return false, ("Modality %s is not a radiograph (accepted: %s)"):format(modality, keys_of(rules.modalities))
  end
  local frames = tonumber(meta.number_of_frames)
  if frames and rules.max_frames and frames > rules.max_frames then
    return false, ("%d frames (NumberOfFrames), not a single radiograph"):format(frames)
  end
  local samples = tonumber(meta.samples_per_pixel)
  if samples and rules.max_samples and samples > rules.max_samples then
    return false, ("a colour image (SamplesPerPixel %d), not a gray radiograph"):format(samples)
  end
  local part = attribute(meta, "body_part_examined")
  if part and rules.body_parts then
    local chest = false
    for word in part:gmatch("%a+") do chest = chest or rules.body_parts[word] == true end
    if not chest then
      return false, ("BodyPartExamined %s is not a chest (accepted: %s)"):format(part, keys_of(rules.body_parts))
    end
  end
  local view = attribute(meta, "view_position")
  local kind = view and rules.views and rules.views[view]
  if kind and rules.accepted_views and not rules.accepted_views[kind] then
    return false, ("ViewPosition %s is a %s view, not a frontal chest"):format(view, kind)
  end
  return true
end

-- area_spacing(meta) -> {row, column} in mm | nil, source: the spacing an
-- area in cm^2 is computed with, and where it came from: "PixelSpacing"
-- (calibrated at the patient); "ImagerPixelSpacing / magnification F" (the
-- detector's spacing divided by EstimatedRadiographicMagnificationFactor,
-- PS3.3 C.8.11.7.1.1); "ImagerPixelSpacing (detector, not corrected for
-- magnification)" (areas then come out too large by about F^2, typically
-- 1.1 to 1.2 for a chest); nil, "no pixel spacing" (areas in pixels).
function predict.area_spacing(meta)
  local ps = meta and meta.pixel_spacing
  if type(ps) == "table" and ps[1] and ps[2] and not meta.pixel_spacing_from_imager then
    return {ps[1], ps[2]}, "PixelSpacing"
  end
  local imager = meta and (meta.imager_pixel_spacing or (meta.pixel_spacing_from_imager and ps))
  if type(imager) == "table" and imager[1] and imager[2] then
    local factor = tonumber(meta.magnification_factor)
    if factor and factor > 0 then
      return {imager[1] / factor, imager[2] / factor}, ("ImagerPixelSpacing / magnification %g"):format(factor)
    end
    return {imager[1], imager[2]}, "ImagerPixelSpacing (detector, not corrected for magnification)"
  end
  return nil, "no pixel spacing"
end

---------------------------------------------------------------------------
-- running over files

-- Wall-clock seconds: lpnx.sys.now where the build has it, else whole seconds.
local function now()
  local sys = lpnx.sys
  return sys and sys.now and sys.now() or os.time()
end

local mkdir = util.make_folder

-- An image (1,H,W) at size x size: area averaging when it shrinks,
-- bilinear when it grows.
local function to_model_size(img, size)
  local h, w = img:size(2), img:size(3)
  if h == size and w == size then return img end
  return lpnx.image.resize(img, size, size, (h >= size and w >= size) and "area" or "bilinear")
end

-- The model and its meta from opts.model: a model file, or a model
-- object with opts.meta.
local function load_model(name, opts)
  if type(opts.model) == "string" then return models.load(opts.model) end
  if type(opts.model) == "table" and opts.model.forward then
    local meta = opts.meta or {}
    if not meta.input_size then error(("%s: a model object needs meta = {input_size = ...}"):format(name), 0) end
    return opts.model, meta
  end
  error(("%s: expected model = FILE (an lpnx model file), got %s"):format(name, type(opts.model)), 0)
end

-- The model's input size from its meta: a multiple of 32.
local function model_size(name, meta)
  local size = math.tointeger(meta.input_size)
  if not size or size < 32 or size % 32 ~= 0 then
    error(("%s: the model's input_size must be a multiple of 32, got %s"):format(name, tostring(meta.input_size)), 0)
  end
  return size
end

-- The first class of probabilities p (C,S,S) at h x w.
local function to_image_size(p, h, w)
  p = p:narrow(1, 1, 1)
  local size = p:size(2)
  return (h == size and w == size) and p:clone() or lpnx.image.resize(p, h, w, "bilinear")
end

-- probability_map(model, meta, image (1,H,W) in [0,1] [, {tta = false}])
-- -> (1,H,W): one image's probabilities at its own size, as run computes
-- them (the image resized to the model's input size, the probabilities
-- resized back).
function predict.probability_map(model, meta, img, opts)
  local name = "predict.probability_map"
  if not lpnx.is_tensor(img) or img:dim() ~= 3 or img:size(1) ~= 1 then
    error(("%s: expected an image (1,H,W), got %s"):format(name, lpnx.is_tensor(img) and shape(img) or type(img)), 2)
  end
  local size = model_size(name, meta or {})
  local probs = predict.probabilities(model, meta, lpnx.stack {to_model_size(img, size)}, opts)
  return to_image_size(probs[1], img:size(2), img:size(3))
end

-- Runs the model over count images in batches of the images load gives.
-- load(i) -> image (1,H,W) in [0,1], item, or nil, reason to leave image i
-- out (skip(i, reason) is then called); each(i, prob (1,H,W) at the
-- image's size, image, item).
local function sweep(name, model, meta, count, load, opts, each, skip)
  local size = model_size(name, meta)
  local batch = opts.batch
  local i = 1
  while i <= count do
    local images, items, inputs, index = {}, {}, {}, {}
    while #images < batch and i <= count do
      local img, item = load(i)
      if img then
        images[#images + 1], items[#items + 1], index[#index + 1] = img, item, i
        inputs[#inputs + 1] = to_model_size(img, size)
      else
        skip(i, item)
      end
      i = i + 1
    end
    if #images > 0 then
      local probs = predict.probabilities(model, meta, lpnx.stack(inputs), {tta = opts.tta})
      for k, img in ipairs(images) do
        each(index[k], to_image_size(probs[k], img:size(2), img:size(3)), img, items[k])
      end
    end
  end
end

-- Sets lpnx's threads for the length of fn, then puts the old count back.
local function with_threads(threads, fn)
  if threads == nil then return fn() end
  local before = lpnx.get_num_threads()
  lpnx.set_num_threads(threads)
  local result = table.pack(pcall(fn))
  lpnx.set_num_threads(before)
  if not result[1] then error(result[2], 0) end
  return table.unpack(result, 2, result.n)
end

local RUN_KEYS = {"model", "meta", "inputs", "out", "tta", "batch", "top", "min_area", "bottom", "reference_area",
                  "threshold", "min_component", "write_masks", "write_overlays", "overlay_size", "progress",
                  "threads", "keep_probabilities", "dicom_seg", "dicom_seg_empty", "each", "any_image",
                  "chest_rules", "on_skip", "on_warning"}

local function common_numbers(name, opts)
  local d = predict.defaults
  local batch = integer_at_least(name, "batch", opts.batch or d.batch, 1)
  if opts.threads ~= nil then integer_at_least(name, "threads", opts.threads, 1) end
  return batch
end

-- The DICOM Segmentation of one image: OUT/seg/ID.dcm, a new series per
-- source study (images of one study share it, numbered in order). Returns
-- the path relative to OUT, or nil when nothing is written (an empty mask
-- without dicom_seg_empty). series: study UID -> {uid, count}, kept by run.
local function write_seg(out, id, mask, meta, empty_too, series)
  local positive = mask:max() > 0
  if not positive and not empty_too then return nil end
  local s = series[meta.study_instance_uid]
  local opts = {series_instance_uid = s and s.uid, instance_number = s and tostring(s.count + 1)}
  if not positive then
    opts.description = "No pneumothorax predicted by lpnx (empty segment)"
  end
  local rel = ("seg/%s.dcm"):format(id)
  local uids = lpnx.dicom.write_seg(("%s/%s"):format(out, rel), mask, meta, opts)
  if s then s.count = s.count + 1 else series[meta.study_instance_uid] = {uid = uids.series_instance_uid, count = 1} end
  return rel, uids.warnings
end

-- Text without the "file.lua:12: " a Lua error starts with.
local function reason_of(err)
  return (tostring(err):gsub("^[^:\n]*%.lua:%d+: ", ""))
end

-- Views as the outputs record them: the ViewPosition, upper case, "" when none.
local function view_of(info)
  return attribute(info, "view_position") or ""
end

-- run{model = FILE, inputs = DIR | FILE | {FILES}, out = DIR, tta = false,
--     batch = 4, top = 0.75, min_area = 2000, bottom = 0.3 | threshold = t,
--     min_component = 0, write_masks = true, write_overlays = true,
--     overlay_size = 1024, threads, progress = fn(i, n, id, positive),
--     keep_probabilities = false, dicom_seg = false, dicom_seg_empty = false,
--     any_image = false, chest_rules = predict.chest_rules,
--     each = fn(result, image, mask, prob), on_skip = fn(skipped),
--     on_warning = fn(id, message)}
-- Writes OUT/submission.csv (one row per predicted image, "-1" when
-- empty), OUT/images.csv (one row per predicted image: image_id, path,
-- view, rows, columns, positive, area_px, area_cm2, area_source,
-- max_probability, seg), OUT/skipped.csv (one row per input left out:
-- path, image_id, reason; only the header when none was), OUT/masks/ID.png
-- (0/255) and OUT/overlays/ID.png (the image with its mask; images larger
-- than overlay_size on their long side are shrunk for it). With
-- dicom_seg, OUT/seg/ID.dcm: a DICOM Segmentation of each DICOM input with
-- a predicted mask (of every DICOM input with dicom_seg_empty; PNG inputs
-- have no DICOM identity to refer to and get none).
-- One bad input never stops the batch: a file that cannot be read, and an
-- image chest_check(meta, chest_rules) refuses (unless any_image), is left
-- out with its reason (on_skip gets {path, id, reason} at once, progress
-- too, with positive nil). A segmentation that cannot be written leaves its
-- image predicted without one; that, and what write_seg could not copy
-- from the source as it was, go to on_warning (and the summary's
-- warnings). each is called once per predicted image, in input order, with
-- its result (below), the image (1,H,W) in [0,1], its mask and its
-- probabilities (1,H,W).
-- Returns {inputs = n given, images = n predicted, positive = k, seconds = s,
-- out = DIR, submission = PATH, skipped_csv = PATH, images_csv = PATH,
-- ids = {...} (predicted), rows = {{id, rle}, ...},
-- skipped = {{path, id, reason}, ...}, warnings = {{id, message}, ...},
-- results = {{id, path, height, width, area, max_probability, positive,
-- view = "PA" | "" ..., pixel_spacing = {row, column} (mm, as areas use it)
-- | nil, area_source (predict.area_spacing's), area_cm2 | nil,
-- seg = "seg/ID.dcm" | nil}, ...}, segs = number written,
-- probabilities = {(1,H,W), ...} when keep_probabilities}.
function predict.run(opts)
  local name = "predict.run"
  if type(opts) ~= "table" then error(("%s: expected {model = FILE, inputs = DIR, out = DIR, ...}"):format(name), 2) end
  check_keys(name, opts, RUN_KEYS)
  if type(opts.out) ~= "string" then error(("%s: expected out = DIR, got %s"):format(name, type(opts.out)), 2) end
  if opts.inputs == nil then error(("%s: expected inputs = DIR, a file or a list of files"):format(name), 2) end
  local batch = common_numbers(name, opts)
  local post = {top = opts.top, min_area = opts.min_area, bottom = opts.bottom, reference_area = opts.reference_area,
                threshold = opts.threshold, min_component = opts.min_component}
  predict.postprocess(lpnx.zeros(1, 1), post)      -- checks the settings before any work
  local overlay_size = integer_at_least(name, "overlay_size", opts.overlay_size or predict.defaults.overlay_size, 1)
  local write_masks, write_overlays = opts.write_masks ~= false, opts.write_overlays ~= false
  for _, k in ipairs {"each", "on_skip", "on_warning"} do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error(("%s: %s must be a function, got %s"):format(name, k, type(opts[k])), 2)
    end
  end
  if opts.chest_rules ~= nil and type(opts.chest_rules) ~= "table" then
    error(("%s: chest_rules must be a table (as predict.chest_rules), got %s"):format(name, type(opts.chest_rules)), 2)
  end
  local ok, paths = pcall(data.list_images, opts.inputs)
  if not ok then error(("%s: %s"):format(name, (tostring(paths):gsub("^[^:]*:%d+: ", ""))), 2) end
  if #paths == 0 then error(("%s: no DICOM or PNG images in %s"):format(name, tostring(opts.inputs)), 2) end
  local ids, seen = {}, {}
  for i, path in ipairs(paths) do
    local id = data.image_id(path)
    if seen[id] then
      error(("%s: image id %s names two files: %s and %s"):format(name, id, paths[seen[id]], path), 2)
    end
    seen[id], ids[i] = i, id
  end

  return with_threads(opts.threads, function()
    local start = now()
    local model, meta = load_model(name, opts)
    mkdir(opts.out)
    if write_masks then mkdir(opts.out .. "/masks") end
    if write_overlays then mkdir(opts.out .. "/overlays") end
    if opts.dicom_seg then mkdir(opts.out .. "/seg") end
    local rows, kept, results, positive, segs, series = {}, {}, {}, 0, 0, {}
    local skipped, warnings = {}, {}
    local function warn(id, message)
      warnings[#warnings + 1] = {id, message}
      if opts.on_warning then opts.on_warning(id, message) end
    end
    local function load(i)
      local read, img, info = pcall(data.read_image, paths[i])
      if not read then                                 -- the reason without "lpnx.dicom.read: PATH: "
        local why = reason_of(img)
        local at = why:find(paths[i] .. ": ", 1, true)
        return nil, at and why:sub(at + #paths[i] + 2) or why
      end
      if not opts.any_image then
        local chest, why = predict.chest_check(info, opts.chest_rules)
        if not chest then return nil, why end
      end
      return img, {id = ids[i], meta = info}
    end
    local function skip(i, reason)
      local entry = {paths[i], ids[i], reason}
      skipped[#skipped + 1] = entry
      if opts.on_skip then opts.on_skip(entry) end
      if opts.progress then opts.progress(i, #paths, ids[i], nil) end
    end
    sweep(name, model, meta, #paths, load, {batch = batch, tta = opts.tta}, function(i, prob, img, item)
      local id, info = item.id, item.meta
      local mask = predict.postprocess(prob, post)       -- (1,H,W)
      local rle = lpnx.rle.encode(mask)
      rows[#rows + 1] = {id, rle}
      if rle ~= "-1" then positive = positive + 1 end
      local spacing, source = predict.area_spacing(info)
      local area = mask:sum()
      local result = {id = id, path = paths[i], height = img:size(2), width = img:size(3), area = area,
                      max_probability = prob:max(), positive = rle ~= "-1", pixel_spacing = spacing,
                      area_source = source, view = view_of(info),
                      area_cm2 = spacing and area * spacing[1] * spacing[2] / 100 or nil}
      if opts.dicom_seg and info.format == "dicom" then
        local written, rel, seg_warnings = pcall(write_seg, opts.out, id, mask, info, opts.dicom_seg_empty, series)
        if written then
          result.seg = rel
          if rel then segs = segs + 1 end
          for _, w in ipairs(seg_warnings or {}) do warn(id, "DICOM Segmentation: " .. w) end
        else
          warn(id, "no DICOM Segmentation: " .. reason_of(rel):gsub("^lpnx%.dicom%.write_seg: [^\n]-%.dcm: ", ""))
        end
      end
      results[#results + 1] = result
      if opts.keep_probabilities then kept[#kept + 1] = prob end
      if write_masks then lpnx.png.write(("%s/masks/%s.png"):format(opts.out, id), mask) end
      if write_overlays then
        local h, w = img:size(2), img:size(3)
        local view, view_mask = img, mask
        if math.max(h, w) > overlay_size then
          local scale = overlay_size / math.max(h, w)
          local oh, ow = math.max(1, math.floor(h * scale + 0.5)), math.max(1, math.floor(w * scale + 0.5))
          view = lpnx.image.resize(img, oh, ow, "area")
          view_mask = lpnx.image.resize(mask, oh, ow, "bilinear"):gt(0.5)
        end
        lpnx.png.write(("%s/overlays/%s.png"):format(opts.out, id), lpnx.image.overlay(view, view_mask))
      end
      if opts.each then opts.each(result, img, mask, prob) end
      if opts.progress then opts.progress(i, #paths, id, rle ~= "-1") end
    end, skip)
    local submission = opts.out .. "/submission.csv"
    siim.write_submission(submission, rows)
    local skipped_csv = opts.out .. "/skipped.csv"
    lpnx.csv.write(skipped_csv, {"path", "image_id", "reason"}, skipped)
    local images_csv = opts.out .. "/images.csv"
    local lines = {}
    for k, r in ipairs(results) do
      lines[k] = {r.id, r.path, r.view, tostring(r.height), tostring(r.width), r.positive and "1" or "0",
                  ("%d"):format(math.floor(r.area + 0.5)), r.area_cm2 and ("%.2f"):format(r.area_cm2) or "",
                  r.area_source, ("%.9g"):format(r.max_probability), r.seg or ""}
    end
    lpnx.csv.write(images_csv, {"image_id", "path", "view", "rows", "columns", "positive", "area_px", "area_cm2",
                                "area_source", "max_probability", "seg"}, lines)
    local predicted = {}
    for k, r in ipairs(results) do predicted[k] = r.id end
    return {inputs = #paths, images = #results, positive = positive, seconds = now() - start, out = opts.out,
            submission = submission, skipped_csv = skipped_csv, images_csv = images_csv, ids = predicted,
            rows = rows, results = results, segs = segs, skipped = skipped, warnings = warnings,
            probabilities = opts.keep_probabilities and kept or nil}
  end)
end

---------------------------------------------------------------------------
-- choosing the triplet on labelled images

local SEARCH_KEYS = {"model", "meta", "data", "csv", "tops", "min_areas", "bottoms", "reference_area",
                     "min_component", "tta", "batch", "threads", "progress"}

-- search{model = FILE, data = DIR, csv = CSV, tops = {...}, min_areas = {...},
--        bottoms = {...}, reference_area = 1024*1024, min_component = 0,
--        tta = false, batch = 4, threads, progress = fn(i, n, id)}
-- -> best {top, min_area, bottom, dice, iou}, best dice, tried
-- The labelled images are the CSV's images found under DIR (as
-- lpnx.data.siim finds them). Each image's probabilities are computed once
-- and every combination is scored on them at the image's own size; Dice
-- and IoU are means over images with the SIIM rule (an empty prediction on
-- an empty truth scores 1). tried lists every combination with its scores,
-- tops outermost, bottoms innermost; ties go to the first tried.
function predict.search(opts)
  local name = "predict.search"
  if type(opts) ~= "table" then error(("%s: expected {model = FILE, data = DIR, csv = CSV, ...}"):format(name), 2) end
  check_keys(name, opts, SEARCH_KEYS)
  local batch = common_numbers(name, opts)
  local grid = predict.search_grid
  local tops = number_list(name, "tops", opts.tops or grid.tops, 0, 1)
  local min_areas = number_list(name, "min_areas", opts.min_areas or grid.min_areas, 0, math.huge)
  local bottoms = number_list(name, "bottoms", opts.bottoms or grid.bottoms, 0, 1)
  local reference = number_in(name, "reference_area", opts.reference_area or predict.REFERENCE_AREA, 1, math.huge)
  local min_component = integer_at_least(name, "min_component", opts.min_component or 0, 0)
  if type(opts.data) ~= "string" then error(("%s: expected data = DIR, got %s"):format(name, type(opts.data)), 2) end
  if type(opts.csv) ~= "string" then
    error(("%s: expected csv = CSV (the true masks), got %s"):format(name, type(opts.csv)), 2)
  end
  local ok, ds = pcall(data.siim, {root = opts.data, csv = opts.csv, cache = false})
  if not ok then error((tostring(ds):gsub("^[^:]*:%d+: ", "")), 2) end

  return with_threads(opts.threads, function()
    local model, meta = load_model(name, opts)
    local tried = {}
    for _, top in ipairs(tops) do
      for _, min_area in ipairs(min_areas) do
        for _, bottom in ipairs(bottoms) do
          tried[#tried + 1] = {top = top, min_area = min_area, bottom = bottom, dice = 0, iou = 0}
        end
      end
    end
    local n = #ds.ids
    local function load(i)
      local img, mask, info = ds:load(i)
      return img, {mask = mask, id = info.id}
    end
    sweep(name, model, meta, n, load, {batch = batch, tta = opts.tta}, function(i, prob, _, item)
      local truth = item.mask:view(prob:size())
      local h, w = prob:size(2), prob:size(3)
      local truth_area = truth:sum()
      local confident = {}                             -- pixels above each top
      for a, top in ipairs(tops) do confident[a] = prob:gt(top):sum() end
      local inter, area = {}, {}                       -- |P n T| and |P| of each bottom's mask
      for b, bottom in ipairs(bottoms) do
        local m = prob:gt(bottom)
        if min_component > 0 then m = lpnx.image.remove_small(m, min_component) end
        inter[b], area[b] = (m * truth):sum(), m:sum()
      end
      local empty_score = truth_area == 0 and 1 or 0
      local c = 0
      for a = 1, #tops do
        for _, min_area in ipairs(min_areas) do
          local positive = confident[a] >= min_area * (h * w) / reference
          for b = 1, #bottoms do
            c = c + 1
            local d, j = empty_score, empty_score
            if positive then
              local total, union = area[b] + truth_area, area[b] + truth_area - inter[b]
              d = total == 0 and 1 or 2 * inter[b] / total
              j = union == 0 and 1 or inter[b] / union
            end
            tried[c].dice, tried[c].iou = tried[c].dice + d, tried[c].iou + j
          end
        end
      end
      if opts.progress then opts.progress(i, n, item.id) end
    end, function(_, reason) error(reason, 0) end)
    local best
    for _, t in ipairs(tried) do
      t.dice, t.iou = t.dice / n, t.iou / n
      if not best or t.dice > best.dice then best = t end
    end
    return {top = best.top, min_area = best.min_area, bottom = best.bottom, dice = best.dice, iou = best.iou,
            images = n, missing = #ds.missing}, best.dice, tried
  end)
end

---------------------------------------------------------------------------
-- scoring a submission

-- evaluate{pred = CSV, truth = CSV, size = 1024 | sizes = fn(id) -> h, w}
-- -> {dice, iou, dice_positive, iou_positive, images, positives, missing,
--     extra}: mean Dice and IoU over the truth's images (SIIM rule: empty
-- on empty scores 1) and over its positive images only (nan when there
-- are none). An image of the truth absent from the prediction counts as an
-- empty prediction (missing counts them); images only in the prediction
-- are not scored (extra counts them). per_image lists the truth's images
-- in order: {id, dice, iou, truth_area, pred_area, pixels} (areas in
-- pixels, pixels = height * width), what lpnx.evaluation builds on.
function predict.evaluate(opts)
  local name = "predict.evaluate"
  if type(opts) ~= "table" then error(("%s: expected {pred = CSV, truth = CSV, size = 1024}"):format(name), 2) end
  check_keys(name, opts, {"pred", "truth", "size", "sizes"})
  for _, k in ipairs {"pred", "truth"} do
    if type(opts[k]) ~= "string" then error(("%s: expected %s = CSV, got %s"):format(name, k, type(opts[k])), 2) end
  end
  local sizes = opts.sizes
  if sizes == nil then
    local s = integer_at_least(name, "size", opts.size or 1024, 1)
    sizes = function() return s, s end
  elseif type(sizes) ~= "function" then
    error(("%s: sizes must be a function(id) -> height, width, got %s"):format(name, type(sizes)), 2)
  end
  local truth, ids = siim.read_csv(opts.truth)
  local pred, pred_ids = siim.read_csv(opts.pred)
  if #ids == 0 then error(("%s: %s lists no images"):format(name, opts.truth), 2) end
  local r = {dice = 0, iou = 0, dice_positive = 0, iou_positive = 0, images = #ids, positives = 0,
             missing = 0, extra = 0, per_image = {}}
  for _, id in ipairs(ids) do
    local h, w = sizes(id)
    local t = siim.mask(truth[id], h, w, id)
    local p
    if pred[id] then
      p = siim.mask(pred[id], h, w, id)
    else
      p = lpnx.zeros(h, w)
      r.missing = r.missing + 1
    end
    local d, j = metrics.dice(p, t), metrics.iou(p, t)
    r.dice, r.iou = r.dice + d, r.iou + j
    local truth_area = t:sum()
    r.per_image[#r.per_image + 1] = {id = id, dice = d, iou = j, truth_area = truth_area, pred_area = p:sum(),
                                     pixels = h * w}
    if truth_area > 0 then
      r.positives = r.positives + 1
      r.dice_positive, r.iou_positive = r.dice_positive + d, r.iou_positive + j
    end
  end
  for _, id in ipairs(pred_ids) do
    if not truth[id] then r.extra = r.extra + 1 end
  end
  r.dice, r.iou = r.dice / r.images, r.iou / r.images
  local nan = 0 / 0
  r.dice_positive = r.positives > 0 and r.dice_positive / r.positives or nan
  r.iou_positive = r.positives > 0 and r.iou_positive / r.positives or nan
  return r
end

return predict
