-- lpnx.report: one self-contained HTML page for reviewing a batch of
-- predictions, OUT/index.html, with its images in OUT/report/.
--
--   local rep = lpnx.report.new{out = "pred", truth = "test-rle.csv"}
--   rep:add(result, image, mask)     -- result as lpnx.predict.run passes it to each
--   local page, summary = rep:finish()
--
-- The page has no network access and loads nothing but its own images: CSS
-- and JavaScript are inline, the cases are an inline JSON array from which
-- the grid is built. Its HTML, CSS and JavaScript are report.html, beside
-- this file. Each case shows the X-ray's thumbnail beside the same
-- thumbnail under the mask (prediction filled red, truth outlined cyan), the
-- predicted area (cm^2 where the pixel spacing is known, with where the
-- spacing came from in the detail view and the header, else pixels), the
-- highest probability and, with truth, the Dice score and a flag where
-- prediction and truth disagree. The grid sorts by confidence, area or Dice
-- and filters to the positive or the flagged cases; a click opens the X-ray
-- beside the X-ray under its mask (M toggles the mask, arrows step through
-- the cases, Esc closes). Images load lazily, so a page of 3,000 cases
-- stays quick.
--
-- Opened as index.html#selftest (optionally &sort=area|confidence|dice|id
-- &dir=asc|desc) the page checks itself: it loads every image it refers
-- to, sorts, and writes what it found as JSON into <pre id="selftest">.
-- index.html#case=ID opens one case; #sort=area&dir=desc&filter=positive starts
-- the grid sorted and filtered that way.
local lpnx = require "lpnx"
local cjson = require "cjson"
local siim = require "lpnx.siim"
local util = require "lpnx.util"

local report = {}

report.defaults = {title = "lpnx: pneumothorax predictions", thumb_size = 160, view_size = 1024, low_dice = 0.5}

-- Colours of the mask layers: the prediction (as the overlays and the DICOM
-- Segmentation) and the truth's outline.
local PREDICTION = {1, 0.15, 0.1}
local TRUTH = {0, 0.85, 1}
local FILL_ALPHA = 0.3

local NEW_KEYS = {"out", "truth", "title", "thumb_size", "view_size", "low_dice"}

---------------------------------------------------------------------------
-- helpers

local check_keys, positive_integer, shape = util.check_keys, util.positive_integer, util.shape_tuple

local mkdir = util.make_folder

-- (h,w) of an image (1,H,W) or (H,W) scaled to fit size on its long side
-- (never enlarged).
local function fit(h, w, size)
  local scale = math.min(1, size / math.max(h, w))
  return math.max(1, math.floor(h * scale + 0.5)), math.max(1, math.floor(w * scale + 0.5))
end

local function resized(t, h, w, mode)
  if t:size(2) == h and t:size(3) == w then return t end
  return lpnx.image.resize(t, h, w, mode)
end

-- The mask (h,w) with its outermost pixels cleared (4-neighbourhood; the
-- outside of the image counts as empty).
local function erode(m)
  local h, w = m:size(1), m:size(2)
  local e = m:clone()
  if h > 1 then
    e:narrow(1, 2, h - 1):mul_(m:narrow(1, 1, h - 1))
    e:narrow(1, 1, h - 1):mul_(m:narrow(1, 2, h - 1))
  end
  if w > 1 then
    e:narrow(2, 2, w - 1):mul_(m:narrow(2, 1, w - 1))
    e:narrow(2, 1, w - 1):mul_(m:narrow(2, 2, w - 1))
  end
  e:narrow(1, 1, 1):zero_()
  e:narrow(1, h, 1):zero_()
  e:narrow(2, 1, 1):zero_()
  e:narrow(2, w, 1):zero_()
  return e
end

-- The outline of a 0/1 mask (h,w), width pixels wide, inside the mask.
local function outline(m, width)
  local inner = m
  for _ = 1, width do inner = erode(inner) end
  return m - inner
end

-- An RGBA layer (4,h,w) for 0/1 masks (h,w): the prediction filled and
-- outlined, the truth (or nil) outlined on top.
local function layer(pred, truth, width)
  local edge_p = outline(pred, width)
  local edge_t = truth and outline(truth, width) or lpnx.zeros(pred:size())
  local p = pred * (1 - edge_t)
  local alpha = pred * FILL_ALPHA
  alpha = alpha + edge_p * (1 - alpha)
  alpha = alpha + edge_t * (1 - alpha)
  local planes = {}
  for c = 1, 3 do planes[c] = p * PREDICTION[c] + edge_t * TRUTH[c] end
  planes[4] = alpha
  return lpnx.stack(planes)
end

local function round(v, digits)
  if v == nil or v ~= v then return nil end
  local k = 10 ^ digits
  return math.floor(v * k + 0.5) / k
end

local function escape_html(s)
  return (tostring(s):gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                        ["'"] = "&#39;"}))
end

-- Writes text to path through a temp file renamed over it.
local function write_atomic(path, text)
  local temp = path .. ".tmp"
  local f, err = io.open(temp, "wb")
  if not f then error(("cannot write %s: %s"):format(path, err), 3) end
  local ok, werr = f:write(text)
  local closed, cerr = f:close()
  if not ok or not closed then
    os.remove(temp)
    error(("cannot write %s: %s"):format(path, tostring(werr or cerr)), 3)
  end
  local renamed, rerr = os.rename(temp, path)
  if not renamed then
    os.remove(temp)
    error(("cannot write %s: %s"):format(path, tostring(rerr)), 3)
  end
end

---------------------------------------------------------------------------
-- the report object

local Report = {}
Report.__index = Report

-- new{out = DIR, truth = CSV | entries, title, thumb_size = 160,
--     view_size = 1024, low_dice = 0.5} -> report
-- truth: a SIIM-form CSV (or what lpnx.siim.read_csv returns) with the true
-- masks; each case then gets its Dice score and a flag when prediction and
-- truth disagree: "false positive", "missed" (a predicted empty mask on a
-- positive image) or "low overlap" (both positive, Dice below low_dice).
-- Images are shrunk to thumb_size (grid) and view_size (detail) on their
-- long side.
function report.new(opts)
  local name = "lpnx.report.new"
  if type(opts) ~= "table" then error(("%s: expected {out = DIR, ...}, got %s"):format(name, type(opts)), 2) end
  check_keys(name, opts, NEW_KEYS)
  if type(opts.out) ~= "string" then error(("%s: expected out = DIR, got %s"):format(name, type(opts.out)), 2) end
  local d = report.defaults
  local self = setmetatable({
    out = opts.out,
    title = opts.title or d.title,
    thumb_size = positive_integer(name, "thumb_size", opts.thumb_size or d.thumb_size),
    view_size = positive_integer(name, "view_size", opts.view_size or d.view_size),
    low_dice = opts.low_dice or d.low_dice,
    cases = {},
    seen = {},
  }, Report)
  if type(self.title) ~= "string" then
    error(("%s: title must be a string, got %s"):format(name, type(self.title)), 2)
  end
  util.number_in(name, "low_dice", self.low_dice, 0, 1, 3)
  if type(opts.truth) == "string" then
    local ok, entries = pcall(siim.read_csv, opts.truth)
    if not ok then error(("%s: truth: %s"):format(name, (tostring(entries):gsub("^[^:]*:%d+: ", ""))), 2) end
    self.truth, self.truth_name = entries, opts.truth:match("([^/]+)$")
  elseif type(opts.truth) == "table" then
    self.truth, self.truth_name = opts.truth, "given masks"
  elseif opts.truth ~= nil then
    error(("%s: truth must be a CSV path or the table lpnx.siim.read_csv returns, got %s")
          :format(name, type(opts.truth)), 2)
  end
  for _, sub in ipairs {"thumbs", "thumb-layers", "views", "view-layers"} do mkdir(self.out .. "/report/" .. sub) end
  return self
end

-- rep:add(result, image, mask): one case. result: {id, max_probability,
-- pixel_spacing = {row, column} (mm) | nil, area_source = where the
-- spacing came from | nil, view = ViewPosition | nil, seg = relative path
-- | nil, path = source file | nil} (lpnx.predict.run's results fit); image
-- (1,H,W) or (H,W) in [0,1]; mask of the same size, 0/1.
function Report:add(result, image, mask)
  local name = "lpnx.report:add"
  if type(result) ~= "table" or type(result.id) ~= "string" or result.id == "" then
    error(("%s: expected a result with an id, got %s")
          :format(name, type(result) == "table" and "no id" or type(result)), 2)
  end
  local id = result.id
  if self.seen[id] then error(("%s: case %s was added twice"):format(name, id), 2) end
  if not lpnx.is_tensor(image) or not (image:dim() == 2 or (image:dim() == 3 and image:size(1) == 1)) then
    error(("%s: case %s: expected an image (1,H,W) or (H,W), got %s")
          :format(name, id, lpnx.is_tensor(image) and shape(image) or type(image)), 2)
  end
  local h, w = image:size(image:dim() - 1), image:size(image:dim())
  image = image:contiguous():view(1, h, w)
  if not lpnx.is_tensor(mask) or mask:numel() ~= h * w or mask:size(mask:dim()) ~= w then
    error(("%s: case %s: expected a mask of the image's size %dx%d, got %s")
          :format(name, id, h, w, lpnx.is_tensor(mask) and shape(mask) or type(mask)), 2)
  end
  mask = mask:contiguous():view(1, h, w)
  local spacing = result.pixel_spacing
  local area = mask:sum()
  local case = {id = id, w = w, h = h, area_px = math.floor(area + 0.5), positive = area > 0,
                max_prob = round(result.max_probability, 4), seg = result.seg,
                src = result.path and result.path:match("([^/]+)$") or nil}
  if type(spacing) == "table" and spacing[1] and spacing[2] then
    case.area_cm2 = round(area * spacing[1] * spacing[2] / 100, 2)
    case.area_source = type(result.area_source) == "string" and result.area_source or "given pixel spacing"
  end
  if type(result.view) == "string" and result.view ~= "" then case.view_position = result.view end

  local truth
  if self.truth then
    local entry = self.truth[id]
    if entry then
      truth = siim.mask(entry, h, w, id):view(1, h, w)
      local t_area = truth:sum()
      local inter = (truth * mask):sum()
      case.truth_px = math.floor(t_area + 0.5)
      case.dice = round((t_area + area == 0) and 1 or 2 * inter / (t_area + area), 4)
      if case.positive and t_area == 0 then case.flag = "false positive"
      elseif not case.positive and t_area > 0 then case.flag = "missed"
      elseif case.positive and case.dice < self.low_dice then case.flag = "low overlap" end
    else
      case.no_truth = true
    end
  end

  -- the images: thumbnail and view of the X-ray, each with its mask layer
  local file = id .. ".png"
  local base = self.out .. "/report/"
  local show_layer = area > 0 or (truth ~= nil and truth:max() > 0)
  local th, tw = fit(h, w, self.thumb_size)
  local vh, vw = fit(h, w, self.view_size)
  case.tw, case.th, case.vw, case.vh = tw, th, vw, vh
  lpnx.png.write(base .. "thumbs/" .. file, resized(image, th, tw, "area"))
  lpnx.png.write(base .. "views/" .. file, resized(image, vh, vw, "area"))
  case.thumb, case.view = "report/thumbs/" .. file, "report/views/" .. file
  if show_layer then
    -- any coverage shows in a thumbnail, so that a small region stays visible
    local function at(m, hh, ww, any)
      local r = resized(m, hh, ww, "area")
      return (any and r:gt(0) or r:ge(0.5)):view(hh, ww)
    end
    lpnx.png.write(base .. "thumb-layers/" .. file,
                   layer(at(mask, th, tw, true), truth and at(truth, th, tw, true), 1))
    local width = math.max(vh, vw) >= 512 and 2 or 1
    lpnx.png.write(base .. "view-layers/" .. file,
                   layer(at(mask, vh, vw, false), truth and at(truth, vh, vw, false), width))
    case.thumb_layer, case.view_layer = "report/thumb-layers/" .. file, "report/view-layers/" .. file
  end
  self.seen[id] = true
  self.cases[#self.cases + 1] = case
  return case
end

-- The page's HTML: head, styles, body and script, in report.html beside
-- this file (make install copies it with the modules). finish fills in
-- @TITLE@, @META@ and @CASES@ (the page's meta data and the cases as
-- inline JSON) and @CARD@, @CARDH@ (a card's width and height in pixels).
-- It is read when the module loads, so that an installation without it
-- fails before a batch is predicted rather than after.
local function read_page()
  local source = debug.getinfo(1, "S").source
  local file = source:match("^@(.+)$") or package.searchpath("lpnx.report", package.path)
  local path = (file and file:match("^(.*)/[^/]*$") or ".") .. "/report.html"
  local f, err = io.open(path, "rb")
  if not f then error(("lpnx.report: cannot read the review page's template: %s"):format(err), 0) end
  local page = f:read("a")
  f:close()
  if not (page and page:find("@CASES@", 1, true)) then
    error(("lpnx.report: %s is not the review page's template (no @CASES@ in it)"):format(path), 0)
  end
  return page
end
local PAGE = read_page()

-- rep:finish([{segs = n, skipped = n}]) -> path of index.html, summary
-- {cases, positive, scored, mean_dice, flagged}. Writes OUT/index.html
-- (atomically); skipped is the number of inputs predict left out.
function Report:finish(extra)
  extra = extra or {}
  local positive, scored, dice_sum, flagged = 0, 0, 0, 0
  for _, c in ipairs(self.cases) do
    if c.positive then positive = positive + 1 end
    if c.dice then scored, dice_sum = scored + 1, dice_sum + c.dice end
    if c.flag then flagged = flagged + 1 end
  end
  local meta = {title = self.title, truth = self.truth_name or cjson.null, segs = extra.segs, skipped = extra.skipped,
                generated = os.date("!%Y-%m-%dT%H:%M:%SZ")}
  local cases_json = #self.cases == 0 and "[]" or cjson.encode(self.cases)
  local card = self.thumb_size * 2 + 28
  local fields = {TITLE = escape_html(self.title), META = cjson.encode(meta), CASES = cases_json,
                  CARD = tostring(card), CARDH = tostring(self.thumb_size + 70)}
  local html = PAGE:gsub("@(%u+)@", function(k) return fields[k] end)
  local path = self.out .. "/index.html"
  write_atomic(path, html)
  return path, {cases = #self.cases, positive = positive, scored = scored,
                mean_dice = scored > 0 and dice_sum / scored or nil, flagged = flagged}
end

return report
