-- lpnx.report: one self-contained HTML page for reviewing a batch of
-- predictions, OUT/index.html, with its images in OUT/report/.
--
--   local rep = lpnx.report.new{out = "pred", truth = "test-rle.csv"}
--   rep:add(result, image, mask)     -- result as lpnx.predict.run passes it to each
--   local page, summary = rep:finish()
--
-- The page has no network access and loads nothing but its own images: CSS
-- and JavaScript are inline, the cases are an inline JSON array from which
-- the grid is built. Each case shows the X-ray's thumbnail beside the same
-- thumbnail under the mask (prediction filled red, truth outlined cyan), the
-- predicted area (cm^2 where the pixel spacing is known, else pixels), the
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
local fs = require "lpnx.fs"
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

local function mkdir(path)
  if not pcall(fs.mkdir_p, path) then error(("cannot create folder %s"):format(path), 3) end
end

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
-- pixel_spacing = {row, column} (mm) | nil, seg = relative path | nil,
-- path = source file | nil} (lpnx.predict.run's results fit); image (1,H,W)
-- or (H,W) in [0,1]; mask of the same size, 0/1.
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
  end

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

-- The page's HTML: head, styles, body and script, with the cases and the
-- page's meta data as inline JSON.
local PAGE = [==[<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
:root { --bg: #101418; --panel: #1a2027; --line: #2c353f; --text: #e6e9ec; --dim: #9aa5b1; --accent: #ff4a32;
        --truth: #00d9ff; --warn: #ffb020; --ok: #3ecf8e; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text);
       font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { position: sticky; top: 0; z-index: 2; background: var(--panel); border-bottom: 1px solid var(--line);
         padding: 10px 16px; display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; }
h1 { font-size: 17px; margin: 0; font-weight: 600; }
#summary { color: var(--dim); }
#summary b { color: var(--text); font-weight: 600; }
.controls { display: flex; gap: 8px; align-items: center; margin-left: auto; flex-wrap: wrap; }
select, button { background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 6px;
                 padding: 4px 8px; font: inherit; cursor: pointer; }
button:hover, select:hover { border-color: var(--dim); }
.legend { color: var(--dim); font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px;
            vertical-align: -1px; }
main { padding: 14px 16px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(@CARD@px, 1fr)); gap: 12px; }
.case { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 8px; cursor: pointer;
        content-visibility: auto; contain-intrinsic-size: @CARD@px @CARDH@px; }
.case:hover, .case:focus { border-color: var(--dim); outline: none; }
.case.flagged { border-color: var(--warn); }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.pair > div { position: relative; background: #000; aspect-ratio: var(--ar); border-radius: 4px; overflow: hidden; }
.pair img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
.caption { display: flex; justify-content: space-between; gap: 6px; margin-top: 6px; font-size: 12px; }
.caption .id { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--dim); }
.badge { flex: none; border-radius: 4px; padding: 0 5px; font-size: 11px; font-weight: 600; }
.badge.pos { background: var(--accent); color: #fff; }
.badge.neg { background: var(--line); color: var(--dim); }
.badge.flag { background: var(--warn); color: #000; }
.numbers { font-size: 12px; color: var(--text); margin-top: 2px; font-variant-numeric: tabular-nums; }
.numbers span + span::before { content: " · "; color: var(--dim); }
#empty { color: var(--dim); padding: 40px; text-align: center; }
#detail { position: fixed; inset: 0; z-index: 5; background: #05080a; display: flex;
          flex-direction: column; }
#detail[hidden] { display: none; }
#detail .bar { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; padding: 10px 16px;
               border-bottom: 1px solid var(--line); background: var(--panel); }
#detail .bar .spacer { margin-left: auto; }
#detail .views { flex: 1; display: grid; grid-template-columns: 1fr 1fr; gap: 12px; padding: 12px; min-height: 0; }
#detail figure { margin: 0; display: flex; flex-direction: column; min-height: 0; }
#detail figure > div { position: relative; flex: 1; min-height: 0; }
#detail figure img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
#detail figcaption { color: var(--dim); text-align: center; padding-top: 6px; font-size: 12px; }
#detail .layer.off { visibility: hidden; }
#d-stats span + span::before { content: " · "; color: var(--dim); }
#selftest { display: none; }
</style>
</head>
<body>
<header>
  <h1>@TITLE@</h1>
  <div id="summary"></div>
  <div class="controls">
    <label>Sort <select id="sort">
      <option value="id">image id</option>
      <option value="confidence">confidence</option>
      <option value="area">area</option>
      <option value="dice">Dice</option>
    </select></label>
    <button id="dir" title="reverse the order">&darr; descending</button>
    <label>Show <select id="filter">
      <option value="all">all cases</option>
      <option value="positive">predicted pneumothorax</option>
      <option value="flagged" title="prediction and truth disagree">flagged</option>
    </select></label>
    <span class="legend"><i style="background: var(--accent)"></i>prediction<span class="truth-only"><i
      style="background: var(--truth)"></i>truth</span></span>
  </div>
</header>
<main>
  <noscript>This page builds its grid with JavaScript; please enable it.</noscript>
  <div id="grid"></div>
  <div id="empty" hidden>No cases to show.</div>
</main>
<div id="detail" hidden>
  <div class="bar">
    <b id="d-title"></b>
    <span id="d-stats"></span>
    <span class="spacer"></span>
    <button id="d-mask" title="show or hide the mask (M)">mask on (M)</button>
    <button id="d-prev" title="previous case">&larr;</button>
    <button id="d-next" title="next case">&rarr;</button>
    <button id="d-close" title="back to the grid (Esc)">close</button>
  </div>
  <div class="views">
    <figure><div><img id="d-orig" alt="X-ray"></div><figcaption>X-ray</figcaption></figure>
    <figure><div><img id="d-base" alt="X-ray under the mask"><img id="d-layer" class="layer" alt=""></div>
      <figcaption id="d-caption">prediction (red)</figcaption></figure>
  </div>
</div>
<pre id="selftest"></pre>
<script type="application/json" id="lpnx-meta">@META@</script>
<script type="application/json" id="lpnx-cases">@CASES@</script>
<script>
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("lpnx-meta").textContent);
  const cases = JSON.parse(document.getElementById("lpnx-cases").textContent);
  const $ = (id) => document.getElementById(id);
  const grid = $("grid");
  const link = (path) => path.split("/").map(encodeURIComponent).join("/");
  const hasTruth = meta.truth !== null;
  const allSpacing = cases.length > 0 && cases.every((c) => c.area_cm2 !== undefined);
  const fmtArea = (c) => c.area_cm2 !== undefined ? c.area_cm2.toFixed(2) + " cm\u00b2" : c.area_px + " px";
  // Sort keys; a missing value sorts after every present one, whichever the direction.
  const keys = {
    id: (c) => c.id,
    confidence: (c) => c.max_prob,
    area: (c) => allSpacing ? c.area_cm2 : c.area_px,
    dice: (c) => c.dice,
  };
  const state = {sort: "id", desc: false, filter: "all", order: [], current: -1, mask: true};

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function image(src, cls) {
    const img = el("img", cls);
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = "";
    img.src = link(src);
    return img;
  }
  function numbers(c) {
    const parts = [fmtArea(c)];
    if (c.max_prob !== undefined) parts.push("max p " + c.max_prob.toFixed(3));
    if (c.dice !== undefined) parts.push("Dice " + c.dice.toFixed(3));
    else if (c.no_truth) parts.push("no truth row");
    return parts;
  }

  // One card per case, made once; sorting and filtering only move them.
  const cards = cases.map((c, i) => {
    const card = el("article", "case" + (c.flag ? " flagged" : ""));
    card.tabIndex = 0;
    card.dataset.index = i;
    card.dataset.id = c.id;
    const pair = el("div", "pair");
    pair.style.setProperty("--ar", c.tw + " / " + c.th);
    const plain = el("div");
    plain.appendChild(image(c.thumb));
    const masked = el("div");
    masked.appendChild(image(c.thumb));
    if (c.thumb_layer) masked.appendChild(image(c.thumb_layer));
    pair.append(plain, masked);
    const caption = el("div", "caption");
    caption.title = c.src || c.id;
    caption.appendChild(el("span", "id", c.id));
    if (c.flag) caption.appendChild(el("span", "badge flag", c.flag));
    else caption.appendChild(el("span", c.positive ? "badge pos" : "badge neg", c.positive ? "pneumothorax" : "clear"));
    const nums = el("div", "numbers");
    for (const p of numbers(c)) nums.appendChild(el("span", null, p));
    card.append(pair, caption, nums);
    card.addEventListener("click", () => open(state.order.indexOf(i)));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") open(state.order.indexOf(i)); });
    return card;
  });

  function compare(a, b) {
    const k = keys[state.sort];
    const va = k(cases[a]), vb = k(cases[b]);
    if (va === undefined || vb === undefined) {
      if (va === vb) return a - b;
      return va === undefined ? 1 : -1;
    }
    let r = typeof va === "string" ? va.localeCompare(vb) : va - vb;
    if (state.desc) r = -r;
    return r !== 0 ? r : a - b;
  }
  function apply() {
    const keep = (c) => state.filter === "all" || (state.filter === "positive" ? c.positive : !!c.flag);
    state.order = cases.map((_, i) => i).filter((i) => keep(cases[i])).sort(compare);
    const frag = document.createDocumentFragment();
    for (const i of state.order) frag.appendChild(cards[i]);
    grid.replaceChildren(frag);
    $("empty").hidden = state.order.length > 0;
    $("dir").innerHTML = state.desc ? "&darr; descending" : "&uarr; ascending";
  }
  function summary() {
    const s = $("summary");
    const positive = cases.filter((c) => c.positive).length;
    const parts = [["cases", cases.length], ["predicted pneumothorax", positive]];
    if (meta.segs) parts.push(["DICOM SEG", meta.segs]);
    if (hasTruth) {
      const scored = cases.filter((c) => c.dice !== undefined);
      const mean = scored.reduce((a, c) => a + c.dice, 0) / Math.max(1, scored.length);
      if (scored.length) parts.push(["mean Dice over " + scored.length + " with truth", mean.toFixed(3)]);
      parts.push(["flagged", cases.filter((c) => c.flag).length]);
    }
    s.replaceChildren();
    parts.forEach(([label, value], k) => {
      if (k) s.append(" · ");
      s.append(el("b", null, String(value)), " " + label);
    });
    s.dataset.cases = cases.length;
  }

  // the detail view
  function open(k) {
    if (k < 0 || k >= state.order.length) return;
    state.current = k;
    const c = cases[state.order[k]];
    $("d-title").textContent = c.id;
    const stats = $("d-stats");
    stats.replaceChildren();
    const parts = numbers(c);
    parts.push(c.flag ? c.flag : c.positive ? "pneumothorax" : "clear");
    if (c.src) parts.push(c.src);
    for (const p of parts) stats.appendChild(el("span", null, p));
    if (c.seg) {
      const a = el("a", null, "DICOM SEG");
      a.href = link(c.seg);
      a.style.color = "var(--truth)";
      stats.appendChild(el("span")).appendChild(a);
    }
    $("d-orig").src = link(c.view);
    $("d-base").src = link(c.view);
    const layer = $("d-layer");
    if (c.view_layer) layer.src = link(c.view_layer); else layer.removeAttribute("src");
    layer.hidden = !c.view_layer;
    $("d-caption").textContent = c.view_layer
      ? (hasTruth ? "prediction (red), truth (cyan outline)" : "prediction (red)")
      : "no mask predicted" + (hasTruth ? ", none in the truth" : "");
    $("detail").hidden = false;
    history.replaceState(null, "", "#case=" + encodeURIComponent(c.id));
  }
  function close() {
    $("detail").hidden = true;
    history.replaceState(null, "", "#");
    const card = cards[state.order[state.current]];
    if (card) card.focus();
  }
  function toggleMask() {
    state.mask = !state.mask;
    $("d-layer").classList.toggle("off", !state.mask);
    $("d-mask").textContent = state.mask ? "mask on (M)" : "mask off (M)";
  }
  $("d-close").onclick = close;
  $("d-mask").onclick = toggleMask;
  $("d-prev").onclick = () => open(state.current - 1);
  $("d-next").onclick = () => open(state.current + 1);
  document.addEventListener("keydown", (e) => {
    if ($("detail").hidden) return;
    if (e.key === "Escape") close();
    else if (e.key === "m" || e.key === "M") toggleMask();
    else if (e.key === "ArrowLeft") open(state.current - 1);
    else if (e.key === "ArrowRight") open(state.current + 1);
  });

  $("sort").onchange = (e) => {
    state.sort = e.target.value;
    state.desc = state.sort !== "id";
    apply();
  };
  $("dir").onclick = () => { state.desc = !state.desc; apply(); };
  $("filter").onchange = (e) => { state.filter = e.target.value; apply(); };
  if (!hasTruth) {
    document.querySelector('option[value="dice"]').remove();
    document.querySelector('option[value="flagged"]').remove();
    document.querySelector(".truth-only").remove();
  }

  // #selftest[&sort=KEY][&dir=asc|desc]: load every image, sort, report.
  function selftest(params) {
    const sources = new Set();
    for (const c of cases) for (const k of ["thumb", "thumb_layer", "view", "view_layer"]) if (c[k]) sources.add(c[k]);
    const before = state.order.map((i) => cases[i].id);
    let loaded = 0;
    const failed = [];
    const probes = [...sources].map((src) => new Promise((done) => {
      const img = new Image();
      img.onload = () => { loaded++; done(); };
      img.onerror = () => { failed.push(src); done(); };
      img.src = link(src);
    }));
    Promise.all(probes).then(() => {
      state.sort = $("sort").value = keys[params.get("sort")] ? params.get("sort") : "area";
      state.desc = params.get("dir") !== "asc";
      state.filter = $("filter").value = "all";
      apply();
      const after = [...grid.children].map((card) => card.dataset.id);
      const values = state.order.map((i) => keys[state.sort](cases[i]) ?? null);
      let sorted = true;
      for (let k = 1; k < values.length; k++) {
        const a = values[k - 1], b = values[k];
        if (b === null) continue;
        if (a === null || (state.desc ? a < b : a > b)) sorted = false;
      }
      const out = {cases: cases.length, cards: grid.querySelectorAll(".case").length, images: sources.size,
                   loaded: loaded, failed: failed.length, failed_images: failed.slice(0, 10), sort: state.sort,
                   desc: state.desc, order_before: before, order_after: after, values_after: values,
                   sorted: sorted, reordered: before.join() !== after.join()};
      const pre = $("selftest");
      pre.textContent = JSON.stringify(out);
      pre.dataset.done = "1";
    });
  }

  // #sort=KEY&dir=asc|desc&filter=all|positive|flagged start the grid that way
  const params = new URLSearchParams(location.hash.slice(1));
  if (keys[params.get("sort")] && !params.has("selftest")) {
    state.sort = $("sort").value = params.get("sort");
    state.desc = state.sort !== "id";
  }
  if (params.has("dir") && !params.has("selftest")) state.desc = params.get("dir") === "desc";
  if ([...$("filter").options].some((o) => o.value === params.get("filter"))) {
    state.filter = $("filter").value = params.get("filter");
  }
  summary();
  apply();
  if (params.has("selftest")) selftest(params);
  if (params.has("case")) {
    const k = state.order.findIndex((i) => cases[i].id === params.get("case"));
    if (k >= 0) open(k);
  }
})();
</script>
</body>
</html>
]==]

-- rep:finish([{segs = n}]) -> path of index.html, summary {cases, positive,
-- scored, mean_dice, flagged}. Writes OUT/index.html (atomically).
function Report:finish(extra)
  extra = extra or {}
  local positive, scored, dice_sum, flagged = 0, 0, 0, 0
  for _, c in ipairs(self.cases) do
    if c.positive then positive = positive + 1 end
    if c.dice then scored, dice_sum = scored + 1, dice_sum + c.dice end
    if c.flag then flagged = flagged + 1 end
  end
  local meta = {title = self.title, truth = self.truth_name or cjson.null, segs = extra.segs,
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
