-- lpnx.report and the clinical outputs of examples/predict.lua: the review
-- page's data, images and mask layers, the CLI's --dicom-seg, --report and
-- --truth, and the page itself in a real headless browser (Debian's
-- chromium, tagged #chromium) checking itself (index.html#selftest) and
-- photographed. Specs needing an external program are pending without it.
local lpnx = require "lpnx"
local cjson = require "cjson"
local fs = require "lpnx.fs"
local h = require "spec.support.helpers"

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function have(program)
  return os.execute("command -v " .. program .. " >/dev/null 2>&1") == true
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The cases array a page carries.
local function page_cases(html)
  local json = html:match('<script type="application/json" id="lpnx%-cases">(.-)</script>')
  assert(json, "no case data in the page")
  return cjson.decode(json)
end

-- A 0/1 mask (H,W) with the rectangle rows r1..r2, columns c1..c2 set.
local function rect(hgt, wid, r1, r2, c1, c2)
  local m = lpnx.zeros(hgt, wid)
  m:narrow(1, r1, r2 - r1 + 1):narrow(2, c1, c2 - c1 + 1):fill_(1)
  return m
end

-- Headless Chromium on a local page without the sanitizer runtime, with
-- its own profile folder; returns stdout.
local function chromium(args, url)
  local profile = h.tmpdir()
  local cmd = ("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS timeout 60 chromium --headless --no-sandbox "
               .. "--disable-gpu --no-first-run --no-default-browser-check --hide-scrollbars "
               .. "--user-data-dir=%s %s %s 2>/dev/null"):format(quote(profile), args, quote(url))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  h.rmdir(profile)
  return out
end

describe("lpnx.report", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rmdir(dir) end)

  it("writes a self-contained page whose cases carry area, confidence, Dice and disagreement flags", function()
    local H, W = 20, 30
    local img = lpnx.rand(1, H, W)
    local pred = rect(H, W, 3, 10, 4, 15)              -- 8 x 12 = 96 pixels
    local truth = rect(H, W, 5, 12, 4, 15)             -- 96 pixels, 72 shared
    local masks = {
      {"both", pred, truth, {0.2, 0.5}},
      {"missed", lpnx.zeros(H, W), truth},
      {"false-positive", pred, lpnx.zeros(H, W)},
      {"clear", lpnx.zeros(H, W), lpnx.zeros(H, W)},
      {"unlabelled", pred, nil},
    }
    local entries = {}
    for _, m in ipairs(masks) do
      if m[3] then entries[m[1]] = {lpnx.rle.encode(m[3])} end
    end
    local rep = lpnx.report.new{out = dir, truth = entries, thumb_size = 16, title = "spec <page>"}
    for i, m in ipairs(masks) do
      rep:add({id = m[1], max_probability = i / 10, pixel_spacing = m[4], seg = "seg/" .. m[1] .. ".dcm"},
              img, m[2]:view(1, H, W))
    end
    local page, summary = rep:finish{segs = 3}
    assert.are.equal(dir .. "/index.html", page)
    assert.are.same({cases = 5, positive = 3, scored = 4, flagged = 2}, {cases = summary.cases,
                    positive = summary.positive, scored = summary.scored, flagged = summary.flagged})
    local dice = 2 * 72 / (96 + 96)
    assert.is_true(math.abs(summary.mean_dice - (dice + 0 + 0 + 1) / 4) < 1e-4)

    local html = slurp(page)
    for _, remote in ipairs {"http://", "https://", "<link", "<script src", "@import", "url("} do
      assert.is_falsy(html:find(remote, 1, true), "the page refers to something outside itself: " .. remote)
    end
    assert.is_truthy(html:find("<title>spec &lt;page&gt;</title>", 1, true))
    local cases = page_cases(html)
    assert.are.equal(5, #cases)
    local by = {}
    for _, c in ipairs(cases) do by[c.id] = c end
    local c = by.both
    assert.are.equal(96, c.area_px)
    assert.are.equal(0.1, c.area_cm2)                  -- 96 x 0.2 mm x 0.5 mm = 9.6 mm^2
    assert.are.equal(0.1, c.max_prob)
    assert.are.equal(math.floor(dice * 1e4 + 0.5) / 1e4, c.dice)
    assert.are.equal(96, c.truth_px)
    assert.is_nil(c.flag)
    assert.are.equal("seg/both.dcm", c.seg)
    assert.are.same({"missed", 0, false}, {by.missed.flag, by.missed.dice, by.missed.positive})
    assert.are.same({"false positive", 0}, {by["false-positive"].flag, by["false-positive"].dice})
    assert.are.same({1, true}, {by.clear.dice, by.clear.flag == nil})
    assert.is_true(by.unlabelled.no_truth)
    assert.is_nil(by.unlabelled.dice)
    assert.is_nil(by.missed.area_cm2)                  -- no pixel spacing: pixels only
    -- images: thumbnails fit 16 pixels, views keep the size, layers only where there is a mask
    assert.are.same({16, 11, 30, 20}, {c.tw, c.th, c.vw, c.vh})
    assert.are.same({1, 11, 16}, lpnx.png.read(dir .. "/" .. c.thumb):size())
    assert.are.same({1, 20, 30}, lpnx.png.read(dir .. "/" .. c.view):size())
    assert.is_nil(by.clear.thumb_layer)
    assert.is_true(exists(dir .. "/" .. by.missed.view_layer))   -- the truth's outline alone
    local layer = lpnx.png.read(dir .. "/" .. c.view_layer)
    assert.are.same({4, 20, 30}, layer:size())
    -- inside the prediction only: red at 0.3 alpha; on the truth's outline only: cyan, opaque; outside: clear
    local function px(r, col) return {layer:get(1, r, col), layer:get(2, r, col), layer:get(3, r, col),
                                      layer:get(4, r, col)} end
    local function near(a, b) for k = 1, 4 do if math.abs(a[k] - b[k]) > 0.01 then return false end end return true end
    assert.is_true(near(px(4, 8), {1, 0.15, 0.1, 0.3}), "prediction fill")
    assert.is_true(near(px(12, 8), {0, 0.85, 1, 1}), "truth outline")
    assert.is_true(near(px(3, 8), {1, 0.15, 0.1, 1}), "prediction outline")
    assert.is_true(near(px(18, 25), {0, 0, 0, 0}), "outside")
  end)

  it("refuses bad options and cases with clear messages", function()
    assert.has_error(function() lpnx.report.new{} end, "lpnx.report.new: expected out = DIR, got nil")
    assert.has_error(function() lpnx.report.new{out = dir, thumbsize = 3} end,
                     "lpnx.report.new: unknown option 'thumbsize' (expected one of low_dice, out, thumb_size, "
                     .. "title, truth, view_size)")
    assert.has_error(function() lpnx.report.new{out = dir, view_size = 0} end,
                     "lpnx.report.new: view_size must be a positive integer, got 0")
    local ok, err = pcall(lpnx.report.new, {out = dir, truth = dir .. "/missing.csv"})
    assert.is_false(ok)
    assert.matches("^lpnx.report.new: truth: .*missing.csv", err)
    local rep = lpnx.report.new{out = dir}
    assert.has_error(function() rep:add({}, lpnx.zeros(1, 4, 4), lpnx.zeros(1, 4, 4)) end,
                     "lpnx.report:add: expected a result with an id, got no id")
    assert.has_error(function() rep:add({id = "a"}, lpnx.zeros(2, 4, 4), lpnx.zeros(1, 4, 4)) end,
                     "lpnx.report:add: case a: expected an image (1,H,W) or (H,W), got (2,4,4)")
    assert.has_error(function() rep:add({id = "a"}, lpnx.zeros(1, 4, 4), lpnx.zeros(1, 4, 5)) end,
                     "lpnx.report:add: case a: expected a mask of the image's size 4x4, got (1,4,5)")
    rep:add({id = "a"}, lpnx.zeros(1, 4, 4), lpnx.zeros(1, 4, 4))
    assert.has_error(function() rep:add({id = "a"}, lpnx.zeros(1, 4, 4), lpnx.zeros(1, 4, 4)) end,
                     "lpnx.report:add: case a was added twice")
  end)

  it("reads its page template beside report.lua and names it when it is missing or not the template", function()
    -- a copy of the module in a folder of its own, as make install lays it out
    fs.mkdir_p(dir .. "/lpnx")
    local code = slurp(ROOT .. "/lua/lpnx/report.lua")
    local copy = assert(io.open(dir .. "/lpnx/report.lua", "wb"))
    copy:write(code)
    copy:close()
    local function load_copy()
      local chunk = assert(loadfile(dir .. "/lpnx/report.lua"))
      return chunk()
    end
    local ok, err = pcall(load_copy)
    assert.is_false(ok)
    assert.are.equal(("lpnx.report: cannot read the review page's template: %s/lpnx/report.html: "
                      .. "No such file or directory"):format(dir), err)
    local empty = assert(io.open(dir .. "/lpnx/report.html", "wb"))
    empty:close()
    ok, err = pcall(load_copy)
    assert.is_false(ok)
    assert.are.equal(("lpnx.report: %s/lpnx/report.html is not the review page's template (no @CASES@ in it)")
                     :format(dir), err)
    local template = assert(io.open(dir .. "/lpnx/report.html", "wb"))
    template:write(slurp(ROOT .. "/lua/lpnx/report.html"))
    template:close()
    local loaded = load_copy()
    local rep = loaded.new{out = dir .. "/out", thumb_size = 8}
    rep:add({id = "a", max_probability = 0.9}, lpnx.rand(1, 4, 4), rect(4, 4, 1, 2, 1, 2))
    local page = slurp((rep:finish()))
    assert.matches("^<!DOCTYPE html>", page)
    assert.matches("minmax%(44px, 1fr%)", page)
    assert.are.equal("a", page_cases(page)[1].id)
  end)
end)

describe("examples/predict.lua --dicom-seg --report --truth", function()
  local dir, data_dir, model_path, truth_csv, out, ids, text, code
  setup(function()
    dir = h.tmpdir()
    data_dir = dir .. "/data"
    local r = lpnx.synth.write{out = data_dir, count = 6, size = 64, seed = 3, positive = 0.5, test_fraction = 0}
    ids = r.train
    truth_csv = data_dir .. "/train-rle.csv"
    lpnx.manual_seed(5)
    model_path = dir .. "/model.safetensors"
    lpnx.models.save(model_path, lpnx.models.unet{encoder = "resnet18", encoder_width = 4,
                                                  decoder_channels = {8, 8, 8, 4, 4}}, {input_size = 64})
    out = dir .. "/pred"
    local args = {"lua5.4", ROOT .. "/examples/predict.lua", "--model", model_path, "--data", data_dir, "--out", out,
                  "--threshold", "0.5", "--quiet", "--dicom-seg", "--dicom-seg-empty", "--report", "--truth",
                  truth_csv, "--report-size", "48"}
    for i, a in ipairs(args) do args[i] = quote(a) end
    local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
    text = p:read("a")
    local _
    _, _, code = p:close()
  end)
  teardown(function() h.rmdir(dir) end)

  it("writes a segmentation per DICOM input that reads back as its PNG mask and refers to its source", function()
    assert.are.equal(0, code, text)
    assert.matches("wrote 6 DICOM Segmentations to .-/seg %(6 DICOM inputs%)", text)
    assert.matches("wrote the review page .-/index%.html: 6 cases, mean Dice %d%.%d+, %d+ flagged", text)
    assert.matches("\npredicted 6 images, %d with pneumothorax %(threshold 0.5%) in [%d.]+s: .-submission.csv\n$", text)
    local series = {}
    local sources = {}
    for _, p in ipairs(fs.walk(data_dir, {exts = {"dcm"}})) do sources[lpnx.data.image_id(p)] = p end
    for _, id in ipairs(ids) do
      local source = assert(sources[id], id)
      local _, meta = lpnx.dicom.read(source)
      local seg, info = lpnx.dicom.read_seg(out .. "/seg/" .. id .. ".dcm")
      local png = lpnx.png.read(out .. "/masks/" .. id .. ".png")
      assert.is_true(seg:equal(png), id)
      assert.are.equal(meta.study_instance_uid, info.study_instance_uid)
      assert.are.equal(meta.frame_of_reference_uid, info.frame_of_reference_uid)
      assert.are.same({sop_class_uid = meta.sop_class_uid, sop_instance_uid = meta.sop_instance_uid,
                       series_instance_uid = meta.series_instance_uid}, info.references[1])
      assert.are.equal("Pneumothorax", info.segment_label)
      assert.is_nil(series[info.series_instance_uid])   -- each study its own segmentation series
      series[info.series_instance_uid] = true
    end
  end)

  it("without --dicom-seg-empty, only images with a predicted mask get one", function()
    -- a threshold between the images' highest probabilities, so that some are positive and some not
    local first = lpnx.predict.run{model = model_path, inputs = data_dir, out = dir .. "/probe", threshold = 0.5,
                                   write_masks = false, write_overlays = false}
    local highest = {}
    for i, r in ipairs(first.results) do highest[i] = r.max_probability end
    table.sort(highest)
    local s = lpnx.predict.run{model = model_path, inputs = data_dir, out = dir .. "/only", dicom_seg = true,
                               threshold = (highest[3] + highest[4]) / 2, write_masks = false, write_overlays = false}
    local written = 0
    for _, r in ipairs(s.results) do
      assert.are.equal(r.positive, r.seg ~= nil, r.id)
      assert.are.equal(r.positive, exists(dir .. "/only/seg/" .. r.id .. ".dcm"), r.id)
      if r.seg then written = written + 1 end
    end
    assert.are.equal(s.positive, written)
    assert.are.equal(s.positive, s.segs)
    assert.is_true(s.positive > 0 and s.positive < 6, "the tiny model should find some but not all")
  end)

  it("the segmentations pass dciodvfy without errors #dciodvfy", function()
    if not have("dciodvfy") then return pending("dciodvfy is not installed (make deps installs dicom3tools)") end
    for _, id in ipairs(ids) do
      local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS dciodvfy "
                                .. quote(out .. "/seg/" .. id .. ".dcm") .. " 2>&1"))
      local report = p:read("a")
      p:close()
      assert.is_truthy(report:find("Segmentation", 1, true), report)
      assert.is_falsy(report:find("Error", 1, true), id .. ":\n" .. report)
    end
  end)

  it("the page lists every case with its Dice against --truth", function()
    local cases = page_cases(slurp(out .. "/index.html"))
    assert.are.equal(6, #cases)
    local truth = lpnx.siim.read_csv(truth_csv)
    for _, c in ipairs(cases) do
      local t = lpnx.siim.mask(truth[c.id], 64, 64, c.id)
      local p = lpnx.png.read(out .. "/masks/" .. c.id .. ".png"):view(64, 64)
      assert.is_true(math.abs(c.dice - lpnx.metrics.dice(p, t)) < 1e-4, c.id)
      assert.are.equal("seg/" .. c.id .. ".dcm", c.seg)
      assert.are.same({64, 64, 48, 48}, {c.w, c.h, c.vw, c.vh})
      assert.is_number(c.area_cm2)                     -- the synthetic files carry a pixel spacing
    end
  end)

  it("answers flags that do not fit together with one line and exit code 2", function()
    local cases = {
      {{"--dicom-seg-empty"}, "predict.lua: --dicom-seg-empty needs --dicom-seg"},
      {{"--truth", truth_csv}, "predict.lua: --truth is shown in the report: add --report"},
      {{"--report", "--truth", dir .. "/none.csv"}, "predict.lua: --truth " .. dir .. "/none.csv: no such file"},
      {{"--report", "--report-size", "8"}, "predict.lua: --report-size must be an integer >= 16"},
    }
    for _, case in ipairs(cases) do
      local args = {"lua5.4", ROOT .. "/examples/predict.lua", "--model", model_path, "--data", data_dir,
                    "--out", dir .. "/bad", table.unpack(case[1])}
      for i, a in ipairs(args) do args[i] = quote(a) end
      local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
      local said = p:read("a")
      local _, _, status = p:close()
      assert.are.equal(2, status, said)
      assert.are.equal(case[2] .. "\n", said)
    end
    assert.is_false(exists(dir .. "/bad"))
  end)

  it("renders every case in headless Chromium, every image loads and sorting reorders #chromium", function()
    if not have("chromium") then return pending("chromium is not installed (make deps installs it)") end
    local page = "file://" .. out .. "/index.html"
    local dom = chromium("--virtual-time-budget=10000 --dump-dom", page .. "#selftest&sort=confidence&dir=desc")
    local json = dom:match('<pre id="selftest" data%-done="1">(.-)</pre>')
    assert(json, "the self-check did not finish:\n" .. dom:sub(1, 2000))
    local r = cjson.decode(json)
    assert.are.equal(6, r.cases)
    assert.are.equal(6, r.cards)
    assert.are.equal(0, r.failed, table.concat(r.failed_images, ", "))
    assert.are.equal(r.images, r.loaded)
    assert.is_true(r.images >= 12)                     -- a thumbnail and a view per case, and the mask layers
    assert.are.equal("confidence", r.sort)
    assert.is_true(r.sorted)
    assert.is_true(r.reordered)
    for k = 2, #r.values_after do assert.is_true(r.values_after[k - 1] >= r.values_after[k]) end
    local sorted_ids = {table.unpack(ids)}
    table.sort(sorted_ids)
    assert.are.same(sorted_ids, r.order_before)       -- by image id before sorting

    -- a picture of the grid: the right size, not blank, with the red of the masks and badges
    local shot = dir .. "/shot.png"
    chromium(("--virtual-time-budget=10000 --window-size=1400,1000 --screenshot=%s"):format(quote(shot)), page)
    local img = lpnx.png.read(shot)
    assert.are.same({1000, 1400}, {img:size(2), img:size(3)})
    assert.is_true(img:max() - img:min() > 0.5, "the screenshot is blank")
    local red = (img[1]:gt(0.8) * img[2]:lt(0.4) * img[3]:lt(0.4)):sum()
    assert.is_true(red > 50, "no red on the page")
  end)
end)
