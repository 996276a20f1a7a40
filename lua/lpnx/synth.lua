-- lpnx.synth: procedural chest radiographs (PA/AP phantoms) with and
-- without pneumothorax, and a writer of whole data sets in the SIIM-ACR
-- layout (DICOM files + run-length CSV), reproducible from a seed.
--
-- A phantom is built as a density map, brighter where more tissue
-- attenuates the beam: the body and its soft tissue, the mediastinum,
-- spine and heart, minus the air of the lungs, plus the vessels that make
-- the lung markings, the ribs (hollow cortical shells), clavicles,
-- scapular borders and humeral heads. A pneumothorax is a crescent of
-- free air between the chest wall and the collapsed lung, at the apex or
-- along the lateral pleura: darker than lung, without markings, bounded
-- medially by the thin white visceral pleural line. Exposure, contrast,
-- noise, patient size, position and anatomy vary per image.
--
-- A harder, SIIM-like set: options of render and write, each a rate (the
-- chance an image has the feature); preset = "siim" sets them all, with the
-- rates below, and explicit options override it. Without a preset or an
-- option the output is the plain phantom, byte for byte. With the size
-- classes (size_distribution, which the preset sets), the free air of every
-- pneumothorax reaches the chest wall with a sharp edge, so that a rim of a
-- few millimetres is darker than the lung beside it. Each feature
-- draws from a generator of its own, seeded from the image's, so turning
-- one on shifts no other's draws; only the pneumothorax is in the mask.
--   positive (write)   0.22   share of images with a pneumothorax
--   size_distribution         weights of the size classes, by the depth of
--                              free air as a share of the field's width
--                              (about 400 mm): rim 0.004-0.012 (2-5 mm, 75%
--                              apical) 0.25, small 0.012-0.03 0.35, moderate
--                              0.03-0.06 0.25, large 0.06-0.12 (apex and
--                              whole lateral wall) 0.15; median mask areas
--                              0.22, 0.5, 1.0 and 3.6% of the image
--   supine             0.3    supine AP film; 80% of its non-large
--                              pneumothoraces in the deep sulcus
--   skin_folds         0.12   a skin fold across the lateral lung and past it
--   scapulae           0.15   a scapula's lateral border over the upper lung
--   breasts            0.2    breast shadows with sharper lower margins
--   bullae             0.05   thin-walled lucent bullae without markings
--   drains             {positive = 0.45, negative = 0.04}  a chest drain
--   ecg                0.3    ECG electrodes and leads
--   et_tubes           0.12   an endotracheal tube
--   central_lines      0.2    a subclavian or jugular central line
--   markers            0.8    a burned-in R or L marker
--   text               0.4    burned-in text (view, PORTABLE, a time)
--   exposure           0.5    a wider spread of contrast, gamma and noise
--   rotation           0.3    3-8 degrees of rotation, off-centring
--   inspiration        0.3    poor (2/3) or deep (1/3) inspiration
--   grid_lines         0.1    anti-scatter grid lines
--   dx16               0.15   written as a 12-16-bit MONOCHROME1 DX file
--                              with a VOI window (else 8-bit JPEG, SIIM's form)
local lpnx = require "lpnx"
local util = require "lpnx.util"

local draw = lpnx.draw
local synth = {}

---------------------------------------------------------------------------
-- geometry helpers (normalised coordinates: x, y in [0, 1] of the field)

-- Appends per_segment points of the Catmull-Rom segment from p1 to p2
-- (p0 and p3 its neighbours), p1 included, p2 not.
local function segment(out, p0, p1, p2, p3, per_segment)
  for s = 0, per_segment - 1 do
    local t = s / per_segment
    local t2, t3 = t * t, t * t * t
    local function f(a, b, c, d)
      return 0.5 * (2 * b + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t2 + (-a + 3 * b - 3 * c + d) * t3)
    end
    out[#out + 1] = {f(p0[1], p1[1], p2[1], p3[1]), f(p0[2], p1[2], p2[2], p3[2])}
  end
end

-- Closed Catmull-Rom spline through control points {{x, y}, ...}.
local function closed_spline(ctrl, per_segment)
  local out, n = {}, #ctrl
  for i = 1, n do
    local p0, p1 = ctrl[(i - 2) % n + 1], ctrl[i]
    local p2, p3 = ctrl[i % n + 1], ctrl[(i + 1) % n + 1]
    segment(out, p0, p1, p2, p3, per_segment)
  end
  return out
end

-- Open Catmull-Rom spline (end points repeated).
local function open_spline(ctrl, per_segment)
  local out, n = {}, #ctrl
  for i = 1, n - 1 do
    local p0, p1, p2, p3 = ctrl[math.max(i - 1, 1)], ctrl[i], ctrl[i + 1], ctrl[math.min(i + 2, n)]
    segment(out, p0, p1, p2, p3, per_segment)
  end
  out[#out + 1] = {ctrl[n][1], ctrl[n][2]}
  return out
end

local function ellipse(cx, cy, rx, ry, angle, n)
  local pts = {}
  local ca, sa = math.cos(angle or 0), math.sin(angle or 0)
  for i = 0, (n or 48) - 1 do
    local t = 2 * math.pi * i / (n or 48)
    local x, y = rx * math.cos(t), ry * math.sin(t)
    pts[#pts + 1] = {cx + x * ca - y * sa, cy + x * sa + y * ca}
  end
  return pts
end

---------------------------------------------------------------------------
-- the patient: random anatomy and acquisition for one image

local function uniform(g, a, b) return g:uniform(a, b) end

local function patient(g)
  local p = {
    scale = uniform(g, 0.86, 1.02),             -- body size in the field
    cx = 0.5 + g:normal(0, 0.012), cy = g:normal(0, 0.015),
    angle = math.rad(g:normal(0, 1.5)),
    lung_h = uniform(g, 0.9, 1.08), lung_w = uniform(g, 0.93, 1.06),
    heart = uniform(g, 0.85, 1.22),
    dome_r = uniform(g, -0.02, 0.03), dome_l = uniform(g, 0.0, 0.04),
    soft = uniform(g, 0.5, 0.62),               -- soft-tissue density
    air = uniform(g, 0.4, 0.5),                 -- lung air (subtracted)
    bone = uniform(g, 0.8, 1.2),
    vessels = uniform(g, 0.8, 1.25),
    rib_step = uniform(g, 0.054, 0.062),
    rib_y0 = uniform(g, 0.095, 0.12),
    female = g:uniform() < 0.45,
    view = g:uniform() < 0.6 and "PA" or "AP",
    contrast = uniform(g, 0.85, 1.2), brightness = uniform(g, -0.06, 0.06),
    gamma = uniform(g, 0.8, 1.25), noise = uniform(g, 0.006, 0.018),
    blur = uniform(g, 0.6, 1.4),
  }
  return p
end

-- Lung outline control points (image left = patient's right lung).
local RIGHT_LUNG = {
  {0.345, 0.112}, {0.395, 0.135}, {0.428, 0.215}, {0.435, 0.33}, {0.428, 0.45}, {0.415, 0.56},
  {0.405, 0.645}, {0.36, 0.628}, {0.29, 0.612}, {0.22, 0.64}, {0.168, 0.705}, {0.15, 0.625},
  {0.145, 0.5}, {0.153, 0.38}, {0.178, 0.262}, {0.228, 0.168}, {0.29, 0.124},
}
local LEFT_LUNG = {
  {0.655, 0.118}, {0.605, 0.14}, {0.572, 0.22}, {0.566, 0.33}, {0.582, 0.44}, {0.64, 0.53},
  {0.69, 0.64}, {0.72, 0.655}, {0.78, 0.64}, {0.835, 0.715}, {0.85, 0.63},
  {0.855, 0.5}, {0.847, 0.38}, {0.822, 0.262}, {0.772, 0.168}, {0.71, 0.128},
}

-- The lungs of this patient, as normalised outlines (before the pose).
local function lungs(p)
  local function shape(ctrl, dome, side)
    local out = {}
    for i, q in ipairs(ctrl) do
      local x = 0.5 + (q[1] - 0.5) * p.lung_w
      local y = 0.11 + (q[2] - 0.11) * p.lung_h
      if q[2] > 0.58 then y = y + dome end -- the diaphragm's level
      out[i] = {x, y}
    end
    return closed_spline(out, 10), side
  end
  return {shape(RIGHT_LUNG, p.dome_r, -1)}, {shape(LEFT_LUNG, p.dome_l, 1)}
end

---------------------------------------------------------------------------
-- the canvas: normalised shapes posed (scale, shift, rotation) into pixels

local Canvas = {}
Canvas.__index = Canvas

local function canvas(size, p)
  local c = setmetatable({size = size, p = p}, Canvas)
  c.scratch = lpnx.zeros(size, size)
  c.ca, c.sa = math.cos(p.angle), math.sin(p.angle)
  return c
end

-- Flat pixel coordinates {x1, y1, ...} of normalised points.
function Canvas:pixels(pts)
  local out, p, S = {}, self.p, self.size
  for _, q in ipairs(pts) do
    local u, v = (q[1] - 0.5) * p.scale, (q[2] - 0.5) * p.scale
    out[#out + 1] = S * (p.cx + u * self.ca - v * self.sa) - 0.5
    out[#out + 1] = S * (0.5 + p.cy + u * self.sa + v * self.ca) - 0.5
  end
  return out
end

function Canvas:fill(img, pts, value, feather, mode)
  draw.polygon(img, self:pixels(pts), value, {feather = feather * self.size / 1024, mode = mode or "add",
                                              scratch = self.scratch})
end

function Canvas:stroke(img, pts, width, value, opts)
  opts = opts or {}
  draw.stroke(img, self:pixels(pts), width * self.size * self.p.scale, value,
              {feather = (opts.feather or 1) * self.size / 1024, mode = opts.mode or "add",
               profile = opts.profile or "flat", inner = opts.inner, scratch = self.scratch})
end

---------------------------------------------------------------------------
-- anatomy

local TORSO = {
  {0.40, -0.06}, {0.60, -0.06}, {0.625, 0.05}, {0.76, 0.085}, {0.9, 0.13}, {0.975, 0.22}, {0.965, 0.45},
  {0.95, 0.75}, {0.945, 1.08}, {0.055, 1.08}, {0.05, 0.75}, {0.035, 0.45}, {0.025, 0.22}, {0.1, 0.13},
  {0.24, 0.085}, {0.375, 0.05},
}

local function draw_body(c, D, p)
  c:fill(D, closed_spline(TORSO, 6), p.soft, 40)
  c:fill(D, ellipse(0.5, 0.58, 0.33, 0.55), 0.12, 200)          -- thicker centre
  for side = -1, 1, 2 do                                         -- shoulders and arms at the edges
    c:fill(D, ellipse(0.5 + side * 0.52, 0.13, 0.075, 0.085), 0.12 * p.bone, 30) -- humeral head
    c:fill(D, closed_spline({{0.5 + side * 0.44, 0.02}, {0.5 + side * 0.52, 0.0}, {0.5 + side * 0.56, 0.6},
                             {0.5 + side * 0.48, 0.62}}, 6), 0.22, 40)
  end
  if p.female then                                               -- breast shadows over the lower zones
    for side = -1, 1, 2 do
      c:fill(D, ellipse(0.5 + side * 0.25, 0.7, 0.18, 0.13, side * 0.25), 0.16, 80)
    end
  end
  c:fill(D, {{0.0, 0.68}, {1.0, 0.68}, {1.0, 1.1}, {0.0, 1.1}}, 0.25, 140) -- abdomen under the diaphragm
end

local function draw_mediastinum(c, D, p)
  c:fill(D, closed_spline({{0.455, 0.0}, {0.545, 0.0}, {0.56, 0.22}, {0.575, 0.38}, {0.5, 0.62}, {0.425, 0.38},
                           {0.44, 0.22}}, 8), 0.28, 30)
  c:stroke(D, {{0.5, -0.05}, {0.5, 1.08}}, 0.07, 0.22 * p.bone, {profile = "tube", feather = 8}) -- spine
  for k = 0, 22 do                                               -- vertebral end plates and pedicles
    local y = 0.02 + k * 0.046
    c:stroke(D, {{0.47, y}, {0.53, y}}, 0.005, 0.04 * p.bone, {feather = 4})
    for side = -1, 1, 2 do
      c:fill(D, ellipse(0.5 + side * 0.021, y + 0.02, 0.007, 0.01), 0.035 * p.bone, 4)
    end
  end
  c:stroke(D, open_spline({{0.5, -0.02}, {0.5, 0.2}, {0.503, 0.31}}, 6), 0.03, -0.22, {profile = "tube", feather = 4})
  for _, end_point in ipairs {{{0.47, 0.355}, {0.445, 0.39}}, {{0.54, 0.36}, {0.56, 0.395}}} do -- main bronchi
    c:stroke(D, open_spline({{0.503, 0.31}, end_point[1], end_point[2]}, 6), 0.018, -0.15,
             {profile = "tube", feather = 3})
  end
  local h = p.heart
  local function hx(x) return 0.5 + (x - 0.5) * h end
  local function hy(y) return 0.66 - (0.66 - y) * math.sqrt(h) end
  c:fill(D, closed_spline({{hx(0.47), hy(0.4)}, {hx(0.53), hy(0.38)}, {hx(0.6), hy(0.44)}, {hx(0.665), hy(0.55)},
                           {hx(0.68), hy(0.64)}, {hx(0.62), hy(0.69)}, {hx(0.5), hy(0.69)}, {hx(0.43), hy(0.66)},
                           {hx(0.415), hy(0.56)}, {hx(0.43), hy(0.46)}}, 8), 0.3, 18)
  c:fill(D, ellipse(0.562, 0.3, 0.04, 0.033), 0.2, 10)           -- aortic knob
  c:fill(D, ellipse(0.635, 0.715, 0.04, 0.026), -0.2, 12)         -- gastric air bubble
  for side = -1, 1, 2 do                                         -- hila
    c:fill(D, ellipse(0.5 + side * 0.085, 0.43, 0.035, 0.055), 0.1, 20)
  end
end

-- Lung air and the parenchymal texture of the lungs.
local function draw_lungs(c, L, right, left)
  c:fill(L, right, 1, 12, "max")
  c:fill(L, left, 1, 12, "max")
end

-- Branching vessels from a hilum (x, y), fading outwards.
local function vessel_tree(c, V, g, x, y, side, strength)
  local function branch(px, py, angle, len, width, depth)
    if depth == 0 or width < 0.0016 then return end
    local pts = {{px, py}}
    local a = angle
    for _ = 1, 4 do
      a = a + g:normal(0, 0.18)
      px, py = px + math.cos(a) * len / 4, py + math.sin(a) * len / 4
      pts[#pts + 1] = {px, py}
    end
    c:stroke(V, pts, width, strength * width / 0.012, {profile = "tube", feather = 1.2})
    local n = g:uniform() < 0.75 and 2 or 3
    for k = 1, n do
      local spread = (k - (n + 1) / 2) * g:uniform(0.3, 0.55)
      branch(px, py, a + spread, len * g:uniform(0.72, 0.9), width * g:uniform(0.66, 0.8), depth - 1)
    end
  end
  local dirs = {-1.5, -1.2, -0.9, -0.6, -0.3, 0.0, 0.3, 0.6, 0.9, 1.2, 1.45}
  for _, d in ipairs(dirs) do
    local a = side > 0 and d or math.pi - d
    local sx, sy = x + side * g:uniform(0.0, 0.025), y + g:normal(0, 0.03)
    branch(sx, sy, a + g:normal(0, 0.1), g:uniform(0.05, 0.08), g:uniform(0.008, 0.013), 7)
  end
end

local function draw_ribs(c, B, p, g)
  for side = -1, 1, 2 do
    local function X(dx) return 0.5 + side * dx end
    for i = 1, 11 do
      local y0 = p.rib_y0 + ((i - 1) * p.rib_step + (i - 1) * (i - 2) * 0.0009) * p.lung_h
      local lateral = math.min(0.36, 0.22 + 0.045 * i)
      local jitter = g:normal(0, 0.003)
      local post = open_spline({{X(0.03), y0 - 0.005}, {X(0.11), y0 - 0.032 + jitter}, {X(0.22), y0 - 0.028},
                                {X(lateral - 0.02), y0 + 0.012}, {X(lateral + 0.018), y0 + 0.07},
                                {X(lateral + 0.02), y0 + 0.11}}, 8)
      local w = 0.016 + 0.0012 * math.min(i, 6)
      c:stroke(B, post, w, g:uniform(0.08, 0.12) * p.bone, {profile = "shell", inner = 0.8, feather = 2})
      if i <= 9 then
        local ant = open_spline({{X(lateral + 0.02), y0 + 0.11}, {X(lateral - 0.04), y0 + 0.175},
                                 {X(0.2), y0 + 0.235}, {X(0.13), y0 + 0.255}}, 8)
        c:stroke(B, ant, 0.021, 0.045 * p.bone, {profile = "shell", inner = 0.7, feather = 4})
      end
    end
    -- clavicle
    c:stroke(B, open_spline({{X(0.04), 0.168}, {X(0.12), 0.152}, {X(0.22), 0.125}, {X(0.31), 0.112},
                             {X(0.36), 0.122}}, 10), 0.026, 0.16 * p.bone,
             {profile = "shell", inner = 0.6, feather = 2})
    -- medial border of the scapula over the upper lung
    c:stroke(B, open_spline({{X(0.34), 0.12}, {X(0.31), 0.25}, {X(0.3), 0.38}, {X(0.33), 0.45}}, 8),
             0.02, 0.045 * p.bone, {profile = "tube", feather = 4})
  end
end

---------------------------------------------------------------------------
-- pneumothorax

-- A region of free air along one lung's outline: {outer arc, inner line}
-- in normalised coordinates, or nil. kind: "apical" or "lateral".
local function pneumothorax_region(outline, side, kind, g, depth_override)
  local n = #outline
  local cx, cy = 0, 0
  for _, q in ipairs(outline) do cx, cy = cx + q[1] / n, cy + q[2] / n end
  local miny, maxy = math.huge, -math.huge
  for _, q in ipairs(outline) do
    miny, maxy = math.min(miny, q[2]), math.max(maxy, q[2])
  end
  local h = maxy - miny
  local select
  if kind == "apical" then
    local extent = g:uniform(0.18, 0.45) * h
    select = function(q) return q[2] < miny + extent end
  elseif kind == "large" then        -- apex and the whole lateral wall
    local bottom = miny + g:uniform(0.6, 0.8) * h
    select = function(q) return q[2] < bottom and ((q[1] - cx) * side > -0.01 or q[2] < miny + 0.2 * h) end
  elseif kind == "sulcus" then       -- supine: basal and lateral, into the costophrenic angle
    local top = miny + g:uniform(0.45, 0.6) * h
    select = function(q) return q[2] > top and (q[1] - cx) * side > -0.02 end
  else
    local top = miny + g:uniform(0.1, 0.35) * h
    local bottom = top + g:uniform(0.25, 0.5) * h
    select = function(q) return q[2] > top and q[2] < bottom and (q[1] - cx) * side > 0.02 end
  end
  -- the longest run of consecutive selected outline points (cyclic)
  local best_s, best_len = nil, 0
  for s = 1, n do
    local prev = outline[(s - 2) % n + 1]
    if select(outline[s]) and not select(prev) then
      local len = 0
      while len < n and select(outline[(s + len - 1) % n + 1]) do len = len + 1 end
      if len > best_len then best_s, best_len = s, len end
    end
  end
  if not best_s or best_len < 6 then return nil end
  local arc = {}
  for k = 0, best_len - 1 do arc[#arc + 1] = outline[(best_s + k - 1) % n + 1] end
  local arc_len = 0
  for k = 2, #arc do
    arc_len = arc_len + math.sqrt((arc[k][1] - arc[k - 1][1]) ^ 2 + (arc[k][2] - arc[k - 1][2]) ^ 2)
  end
  local depth = math.min(depth_override or g:uniform(0.015, 0.075), arc_len * 0.3)
  local inner = {}
  for k, q in ipairs(arc) do
    local t = (k - 1) / (#arc - 1)
    local a = arc[math.max(k - 1, 1)]
    local b = arc[math.min(k + 1, #arc)]
    local tx, ty = b[1] - a[1], b[2] - a[2]
    local len = math.sqrt(tx * tx + ty * ty) + 1e-12
    local nx, ny = -ty / len, tx / len
    if (cx - q[1]) * nx + (cy - q[2]) * ny < 0 then nx, ny = -nx, -ny end -- point into the lung
    if kind == "sulcus" then -- towards the centre: no fold at the sharp costophrenic angle
      local rx, ry = cx - q[1], cy - q[2]
      local r = math.sqrt(rx * rx + ry * ry) + 1e-12
      nx, ny = rx / r, ry / r
    end
    local taper = math.sin(math.pi * t) ^ 0.45
    local d = depth * taper
    inner[k] = {q[1] + nx * d, q[2] + ny * d}
  end
  if kind == "sulcus" then
    -- the deep sulcus: free air deepens the lateral costophrenic angle
    -- below the lung's outline
    local corner, best = arc[1], -math.huge
    for _, q in ipairs(arc) do
      local score = (q[1] - cx) * side + (q[2] - cy)
      if score > best then corner, best = q, score end
    end
    local deepen = g:uniform(0.02, 0.045)
    local deep = {}
    for k, q in ipairs(arc) do
      local d2 = (q[1] - corner[1]) ^ 2 + (q[2] - corner[2]) ^ 2
      local w = math.exp(-d2 / 0.008)
      deep[k] = {q[1] + side * 0.3 * deepen * w, q[2] + deepen * w}
    end
    arc = deep
  end
  local polygon = {}
  for _, q in ipairs(arc) do polygon[#polygon + 1] = q end
  for k = #inner, 1, -1 do polygon[#polygon + 1] = inner[k] end
  return {polygon = polygon, line = inner, kind = kind, depth = depth, side = side}
end

---------------------------------------------------------------------------
-- the harder, SIIM-like set: options of render and write, each a rate
-- (the chance an image has the feature), set together by preset = "siim"

-- Each option, in the order of features.csv's columns, with the rate the
-- "siim" preset gives it and the tag that seeds its generator.
local OPTIONS = {
  {"supine", 0.3, 1},          -- supine AP film; a positive one shows a deep sulcus (basal, anterior air)
  {"skin_folds", 0.12, 2},     -- a skin fold: a curved edge across the lung, no pleural line behind it
  {"scapulae", 0.15, 3},       -- a scapula's lateral border projected over the upper lung
  {"breasts", 0.2, 4},         -- dense breast shadows with sharp lower margins (one side or both)
  {"bullae", 0.05, 5},         -- thin-walled lucent bullae without lung markings
  {"drains", {positive = 0.45, negative = 0.04}, 6}, -- a chest drain, on the pneumothorax's side when there is one
  {"ecg", 0.3, 7},             -- ECG electrodes and their leads
  {"et_tubes", 0.12, 8},       -- an endotracheal tube
  {"central_lines", 0.2, 9},   -- a central venous line
  {"markers", 0.8, 10},        -- a burned-in laterality marker (R or L)
  {"text", 0.4, 11},           -- burned-in text (PORTABLE, AP SUPINE, a time)
  {"exposure", 0.5, 12},       -- a wider spread of exposure, contrast, gamma and noise
  {"rotation", 0.3, 13},       -- rotation and off-centring (up to about 8 degrees)
  {"inspiration", 0.3, 14},    -- a poor (two thirds) or deep (one third) inspiration
  {"grid_lines", 0.1, 15},     -- anti-scatter grid lines
  {"dx16", 0.15, 16},          -- written as a 12-16-bit MONOCHROME1 DX file with a VOI window
}
synth.options = {}
for _, o in ipairs(OPTIONS) do synth.options[#synth.options + 1] = o[1] end

-- The size classes of a pneumothorax: the depth of free air between the
-- chest wall and the lung, as a share of the field's width (a chest film
-- is about 400 mm across, so 0.0025 is about a millimetre).
local SIZE_CLASSES = {
  {"rim", 0.004, 0.012},       -- a few millimetres of rim: subtle, mostly apical
  {"small", 0.012, 0.03},
  {"moderate", 0.03, 0.06},
  {"large", 0.06, 0.12},       -- apex and the whole lateral wall, the lung collapsing
}
synth.size_classes = {}
for _, k in ipairs(SIZE_CLASSES) do synth.size_classes[#synth.size_classes + 1] = k[1] end

synth.presets = {
  siim = {positive = 0.22, size_distribution = {rim = 0.25, small = 0.35, moderate = 0.25, large = 0.15}},
}
for _, o in ipairs(OPTIONS) do synth.presets.siim[o[1]] = o[2] end

-- The options of one render: the preset's, overridden by explicit ones;
-- nil when none is given (the plain phantom, byte for byte as before).
local function resolve(opts)
  local preset
  if opts.preset ~= nil then
    preset = synth.presets[opts.preset]
    if not preset then error(("synth: unknown preset %q (known: siim)"):format(tostring(opts.preset)), 3) end
  end
  local out, any = {}, preset ~= nil
  for _, name in ipairs(synth.options) do
    local v = opts[name]
    if v == nil and preset then v = preset[name] end
    if v ~= nil then
      local ok = type(v) == "number" and v >= 0 and v <= 1
      if type(v) == "table" then
        ok = true
        for _, key in ipairs {"positive", "negative"} do
          ok = ok and type(v[key]) == "number" and v[key] >= 0 and v[key] <= 1
        end
      end
      if not ok then
        error(("synth: %s must be a rate in [0, 1] or {positive = rate, negative = rate}"):format(name), 3)
      end
      any = true
      out[name] = v
    end
  end
  local sd = opts.size_distribution
  if sd == nil and preset then sd = preset.size_distribution end
  if sd ~= nil then
    local total = 0
    for _, k in ipairs(SIZE_CLASSES) do
      local w = sd[k[1]] or 0
      if type(w) ~= "number" or w < 0 then error("synth: size_distribution weights must be numbers >= 0", 3) end
      total = total + w
    end
    if total <= 0 then error("synth: size_distribution needs a positive weight", 3) end
    any = true
    out.size_distribution = sd
  end
  return any and out or nil
end
synth.resolve = function(opts) return resolve(opts or {}) end

local TAGS = {regions = 97}
for _, o in ipairs(OPTIONS) do TAGS[o[1]] = o[3] end

-- Generators of their own, one per feature, all from one draw of a copy of
-- the image's generator: g itself is not advanced, and turning a feature
-- on or off shifts no other feature's draws.
local function feature_generators(g)
  local base = lpnx.Generator(0):set_state(g:state()):random(1, 2 ^ 52)
  return function(name) return lpnx.Generator(base ~ (TAGS[name] * 0x9E3779B1)) end
end

-- Which features this image has: {name = generator or false}.
local function decide(F, gen, positive)
  local on = {}
  for _, name in ipairs(synth.options) do
    local rate = F[name]
    if type(rate) == "table" then rate = positive and rate.positive or rate.negative end
    local fg = gen(name)
    on[name] = (rate and rate > 0 and fg:uniform() < rate) and fg or false
  end
  return on
end

-- features{generator = g, positive = bool, preset =, option = rate, ...}
-- -> {name = true|false}: which features render gives this image, without
-- drawing it (g is not advanced); nil without a preset or option.
function synth.features(opts)
  local F = resolve(opts)
  if not F then return nil end
  local on = decide(F, feature_generators(opts.generator or lpnx.Generator(opts.seed or 1)), opts.positive)
  local out = {}
  for _, name in ipairs(synth.options) do out[name] = on[name] and true or false end
  return out
end

-- The acquisition and pose of a harder image: changes p before drawing.
local function adjust_patient(p, on)
  if on.supine then
    local g = on.supine
    p.view = "AP"
    p.heart = p.heart * g:uniform(1.05, 1.15)      -- magnified, the film behind the patient
    p.lung_h = p.lung_h * g:uniform(0.9, 0.97)     -- the abdomen pushes the diaphragm up
    p.scale = p.scale * g:uniform(1.0, 1.05)
  end
  if on.inspiration then
    local g = on.inspiration
    if g:uniform() < 2 / 3 then
      p.lung_h = p.lung_h * g:uniform(0.8, 0.9)
      p.heart = p.heart * g:uniform(1.05, 1.15)
    else
      p.lung_h = p.lung_h * g:uniform(1.05, 1.1)
    end
  end
  if on.rotation then
    local g = on.rotation
    p.angle = math.rad(g:uniform(3, 8) * (g:uniform() < 0.5 and -1 or 1))
    p.cx = p.cx + g:normal(0, 0.03)
    p.cy = p.cy + g:normal(0, 0.02)
  end
  if on.exposure then
    local g = on.exposure
    p.contrast, p.brightness = g:uniform(0.65, 1.45), g:uniform(-0.16, 0.12)
    p.gamma, p.noise = g:uniform(0.65, 1.5), g:uniform(0.004, 0.035)
    p.blur = g:uniform(0.5, 2.2)
  end
end

-- A pneumothorax size class drawn from the weights.
local function size_class(sd, g)
  local total = 0
  for _, k in ipairs(SIZE_CLASSES) do total = total + (sd[k[1]] or 0) end
  local u = g:uniform() * total
  for _, k in ipairs(SIZE_CLASSES) do
    u = u - (sd[k[1]] or 0)
    if u < 0 then return k end
  end
  return SIZE_CLASSES[#SIZE_CLASSES]
end

-- Offsets a polyline by d (normalised) along its left normal, times
-- taper(t) at the point a share t along it when taper is given.
local function offset(pts, d, taper)
  local out = {}
  for k, q in ipairs(pts) do
    local a, b = pts[math.max(k - 1, 1)], pts[math.min(k + 1, #pts)]
    local tx, ty = b[1] - a[1], b[2] - a[2]
    local len = math.sqrt(tx * tx + ty * ty) + 1e-12
    local dk = taper and d * taper((k - 1) / (#pts - 1)) or d
    out[k] = {q[1] - ty / len * dk, q[2] + tx / len * dk}
  end
  return out
end

-- A band of density beside a curve that rises towards the curve and stops
-- there with a sharp edge (a skin fold's, or a bone's margin): steps
-- polygons between the curve and its offsets.
local function edge_band(c, D, curve, width, value, steps, taper)
  for k = 1, steps do
    local far = offset(curve, width * k / steps, taper)
    local poly = {}
    for _, q in ipairs(curve) do poly[#poly + 1] = q end
    for i = #far, 1, -1 do poly[#poly + 1] = far[i] end
    c:fill(D, poly, value / steps, 2.5)
  end
end

local function draw_skin_fold(c, D, g)
  local side = g:uniform() < 0.5 and -1 or 1
  local function X(dx) return 0.5 + side * dx end
  -- from the axilla down across the lateral lung, past the lung's base:
  -- a pleural edge would stop at the lung's outline, a skin fold does not
  local x0, bulge = g:uniform(0.15, 0.28), g:uniform(0.02, 0.06)
  local y0, y1 = g:uniform(0.06, 0.2), g:uniform(0.78, 0.98)
  local slant = g:uniform(-0.08, 0.04)
  local ctrl = {}
  for k = 0, 4 do
    local t = k / 4
    ctrl[#ctrl + 1] = {X(x0 + slant * (t - 0.5) + bulge * math.sin(math.pi * t) + g:normal(0, 0.006)),
                       y0 + (y1 - y0) * t}
  end
  -- downwards, so the left normal points to the image's left: the denser
  -- side is lateral (the fold of skin and fat ends in the edge), and both
  -- ends fade out
  edge_band(c, D, open_spline(ctrl, 12), -side * g:uniform(0.07, 0.13), g:uniform(0.12, 0.2), 10,
            function(t) return math.sin(math.pi * t) ^ 0.6 end)
end

local function draw_scapula(c, D, g, p)
  local side = g:uniform() < 0.5 and -1 or 1
  local function X(dx) return 0.5 + side * dx end
  local curve = open_spline({{X(g:uniform(0.3, 0.36)), 0.1}, {X(g:uniform(0.33, 0.38)), 0.26},
                             {X(g:uniform(0.33, 0.4)), 0.42}, {X(0.42), 0.5}}, 8)
  local sign = side -- the blade lies laterally of its border
  edge_band(c, D, curve, -sign * g:uniform(0.06, 0.1), g:uniform(0.05, 0.08) * p.bone, 6)
  c:stroke(D, curve, 0.008, 0.05 * p.bone, {profile = "shell", inner = 0.5, feather = 2})
end

local function draw_breasts(c, D, g)
  local both = g:uniform() < 0.8
  local first = g:uniform() < 0.5 and -1 or 1
  for side = -1, 1, 2 do
    if both or side == first then
      c:fill(D, ellipse(0.5 + side * g:uniform(0.22, 0.3), g:uniform(0.66, 0.76), g:uniform(0.16, 0.22),
                        g:uniform(0.11, 0.15), side * g:uniform(0.15, 0.4)), g:uniform(0.07, 0.13), 30)
    end
  end
end

-- Bullae: coverage into Bu (no markings there), dark air, a hairline wall.
local function draw_bullae(c, Bu, D, g)
  local side = g:uniform() < 0.5 and -1 or 1
  for _ = 1, g:random(1, 3) do
    local x, y = 0.5 + side * g:uniform(0.2, 0.32), g:uniform(0.17, 0.36)
    local r = g:uniform(0.018, 0.045)
    local outline = ellipse(x, y, r, r * g:uniform(0.75, 1.0), g:uniform(0, math.pi))
    c:fill(Bu, outline, 1, 3, "max")
    outline[#outline + 1] = outline[1]
    c:stroke(D, outline, 0.0022, 0.06, {profile = "tube", feather = 1.2})
  end
end

-- A tube along a polyline: a faint plastic wall and a dense radio-opaque
-- stripe along one side (cut by side holes near the tip when holes).
local function draw_tube(c, D, pts, width, stripe, holes)
  c:stroke(D, pts, width, 0.16, {profile = "shell", inner = 0.6, feather = 1.5})
  local line = offset(pts, width * 0.3)
  if holes then
    local n = #line
    local cut = math.floor(n * 0.88)
    local head = {}
    for k = 1, cut do head[k] = line[k] end
    c:stroke(D, head, width * 0.28, stripe, {profile = "tube", feather = 1})
    for k = cut + 2, n - 1, 3 do c:stroke(D, {line[k], line[k + 1]}, width * 0.28, stripe, {profile = "tube"}) end
  else
    c:stroke(D, line, width * 0.28, stripe, {profile = "tube", feather = 1})
  end
end

local function draw_drain(c, D, g, side)
  local function X(dx) return 0.5 + side * dx end
  -- in through the lateral chest wall (about the fifth intercostal space),
  -- then up and in over the lung towards the apex, or down to the base
  local entry_y = g:uniform(0.5, 0.62)
  local wall = {X(g:uniform(0.42, 0.46)), entry_y}
  local outside = {X(0.6), entry_y + g:uniform(0.08, 0.2)}
  local apical = g:uniform() < 0.75
  local tip = {X(g:uniform(0.12, 0.22)), apical and g:uniform(0.14, 0.22) or g:uniform(0.5, 0.58)}
  local inside = {X(g:uniform(0.32, 0.36)), entry_y - g:uniform(0.02, 0.05)}
  local mid = apical and {X(g:uniform(0.24, 0.3)), (entry_y + tip[2]) / 2} or {X(0.26), entry_y - 0.03}
  local width = g:uniform(0.012, 0.018)
  draw_tube(c, D, open_spline({outside, wall, inside, mid, tip}, 14), width, g:uniform(0.4, 0.6), true)
end

local function draw_ecg(c, D, g)
  local spots = {{0.22, 0.16}, {0.78, 0.16}, {0.26, 0.78}, {0.76, 0.78}, {0.66, 0.62}, {0.5, 0.08}}
  for _, s in ipairs(spots) do
    if g:uniform() < 0.6 then
      local x, y = s[1] + g:normal(0, 0.03), s[2] + g:normal(0, 0.03)
      c:fill(D, ellipse(x, y, 0.018, 0.018), 0.03, 3)                   -- the pad
      c:fill(D, ellipse(x, y, 0.0045, 0.0045, 0, 16), 0.5, 1.5)         -- the metal snap
      -- the lead, looping off the field
      local out = {{x, y}}
      local a = g:uniform(0, 2 * math.pi)
      local px, py = x, y
      for _ = 1, 4 do
        a = a + g:normal(0, 0.7)
        px, py = px + math.cos(a) * 0.14, py + math.sin(a) * 0.14
        out[#out + 1] = {px, py}
      end
      local ex = px < 0.5 and -0.2 or 1.2
      out[#out + 1] = {ex, py + g:normal(0, 0.2)}
      c:stroke(D, open_spline(out, 10), 0.0028, 0.22, {profile = "tube", feather = 1})
    end
  end
end

local function draw_et_tube(c, D, g)
  local tip = g:uniform(0.2, 0.28)                 -- above the carina (about 0.31)
  local x = 0.5 + g:normal(0, 0.004)
  draw_tube(c, D, open_spline({{x + g:normal(0, 0.02), -0.05}, {x, 0.08}, {x + 0.002, tip}}, 10),
            g:uniform(0.02, 0.026), 0.35, false)
end

local function draw_central_line(c, D, g)
  local side = g:uniform() < 0.7 and -1 or 1        -- mostly the right (image left)
  local function X(dx) return 0.5 + side * dx end
  local pts
  if g:uniform() < 0.5 then                         -- subclavian
    pts = {{X(0.42), 0.08}, {X(0.3), 0.14}, {X(0.12), 0.19}, {X(0.05), 0.25}, {X(0.045), g:uniform(0.3, 0.4)}}
  else                                              -- internal jugular
    pts = {{X(0.1), -0.05}, {X(0.08), 0.1}, {X(0.05), 0.2}, {X(0.045), g:uniform(0.3, 0.4)}}
  end
  c:stroke(D, open_spline(pts, 10), 0.005, 0.3, {profile = "tube", feather = 1})
end

-- A stroke font on a 4x6 grid (y down): polylines per character.
local FONT = {
  A = {{0, 6, 0, 2, 2, 0, 4, 2, 4, 6}, {0, 3.5, 4, 3.5}},
  B = {{0, 0, 0, 6, 3, 6, 4, 5, 4, 4, 3, 3, 0, 3}, {0, 0, 3, 0, 4, 1, 4, 2, 3, 3}},
  C = {{4, 1, 3, 0, 1, 0, 0, 1, 0, 5, 1, 6, 3, 6, 4, 5}},
  E = {{4, 0, 0, 0, 0, 6, 4, 6}, {0, 3, 3, 3}},
  I = {{1, 0, 3, 0}, {2, 0, 2, 6}, {1, 6, 3, 6}},
  L = {{0, 0, 0, 6, 4, 6}},
  N = {{0, 6, 0, 0, 4, 6, 4, 0}},
  O = {{1, 0, 3, 0, 4, 1, 4, 5, 3, 6, 1, 6, 0, 5, 0, 1, 1, 0}},
  P = {{0, 6, 0, 0, 3, 0, 4, 1, 4, 2, 3, 3, 0, 3}},
  R = {{0, 6, 0, 0, 3, 0, 4, 1, 4, 2, 3, 3, 0, 3}, {2, 3, 4, 6}},
  S = {{4, 1, 3, 0, 1, 0, 0, 1, 0, 2, 1, 3, 3, 3, 4, 4, 4, 5, 3, 6, 1, 6, 0, 5}},
  T = {{0, 0, 4, 0}, {2, 0, 2, 6}},
  U = {{0, 0, 0, 5, 1, 6, 3, 6, 4, 5, 4, 0}},
  ["0"] = {{1, 0, 3, 0, 4, 1, 4, 5, 3, 6, 1, 6, 0, 5, 0, 1, 1, 0}},
  ["1"] = {{1, 1, 2, 0, 2, 6}, {1, 6, 3, 6}},
  ["2"] = {{0, 1, 1, 0, 3, 0, 4, 1, 4, 2, 0, 6, 4, 6}},
  ["3"] = {{0, 0, 4, 0, 2, 2.5, 3, 2.5, 4, 3.5, 4, 5, 3, 6, 1, 6, 0, 5}},
  ["4"] = {{3, 6, 3, 0, 0, 4, 4, 4}},
  ["5"] = {{4, 0, 0, 0, 0, 2.5, 3, 2.5, 4, 3.5, 4, 5, 3, 6, 0, 6}},
  ["6"] = {{3, 0, 1, 0, 0, 1, 0, 5, 1, 6, 3, 6, 4, 5, 4, 3.5, 3, 2.5, 0, 2.5}},
  ["7"] = {{0, 0, 4, 0, 1.5, 6}},
  ["8"] = {{1, 3, 0, 2, 0, 1, 1, 0, 3, 0, 4, 1, 4, 2, 3, 3, 1, 3, 0, 4, 0, 5, 1, 6, 3, 6, 4, 5, 4, 4, 3, 3}},
  ["9"] = {{4, 3, 1, 3, 0, 2, 0, 1, 1, 0, 3, 0, 4, 1, 4, 5, 3, 6, 1, 6}},
  [":"] = {{2, 1.5, 2, 2}, {2, 4.5, 2, 5}},
  ["-"] = {{0.5, 3, 3.5, 3}},
}

-- Burned-in text on the image (pixels): x, y its top left, h the height.
local function draw_text(img, text, x, y, h, value)
  local u = h / 6
  local scratch = lpnx.zeros(img:size(1), img:size(2))
  for i = 1, #text do
    local glyph = FONT[text:sub(i, i)]
    for _, line in ipairs(glyph or {}) do
      local pts = {}
      for k = 1, #line, 2 do
        pts[#pts + 1] = x + (i - 1) * 6 * u + line[k] * u
        pts[#pts + 1] = y + line[k + 1] * u
      end
      draw.stroke(img, pts, math.max(1, 0.9 * u), value, {feather = 1, mode = "max", scratch = scratch})
    end
  end
  return #text * 6 * u
end

local function draw_marker(img, g, S)
  local right = g:uniform() < 0.5                 -- the patient's right is the image's left
  local h = S * g:uniform(0.03, 0.045)
  local x = right and S * g:uniform(0.03, 0.12) or S * g:uniform(0.86, 0.95) - h
  local y = S * g:uniform(0.03, 0.14)
  local box = {x - 0.4 * h, y - 0.3 * h, x + 1.1 * h, y - 0.3 * h, x + 1.1 * h, y + 1.3 * h, x - 0.4 * h, y + 1.3 * h}
  draw.polygon(img, box, 0.15, {feather = 1, mode = "set"})
  draw_text(img, right and "R" or "L", x, y, h, g:uniform(0.9, 1.0))
end

local function draw_burned_text(img, g, S, supine, marker)
  local lines = {supine and "AP SUPINE" or (g:uniform() < 0.5 and "PA ERECT" or "AP ERECT")}
  if g:uniform() < 0.6 then lines[#lines + 1] = "PORTABLE" end
  lines[#lines + 1] = ("%02d:%02d"):format(g:random(0, 23), g:random(0, 59))
  local h = S * g:uniform(0.016, 0.024)
  local right = g:uniform() < 0.5
  local top = g:uniform() < 0.5 and not marker -- the marker keeps to the top corners
  local y = top and S * 0.03 or S * 0.97 - #lines * 1.6 * h
  for k, line in ipairs(lines) do
    local w = #line * h
    local x = right and S * 0.97 - w or S * 0.03
    draw_text(img, line, x, y + (k - 1) * 1.6 * h, h, g:uniform(0.85, 1.0))
  end
end

-- Anti-scatter grid lines: a fine periodic pattern across the image.
local function draw_grid_lines(img, g, S)
  local period, amp = g:uniform(2.2, 4.5), g:uniform(0.012, 0.03)
  local phase = g:uniform(0, 2 * math.pi)
  local row = {}
  for k = 1, S do row[k] = amp * math.sin(2 * math.pi * k / period + phase) end
  local t = lpnx.tensor(row)
  if g:uniform() < 0.75 then img:add_(t:view(1, S)) else img:add_(t:view(S, 1)) end
end

---------------------------------------------------------------------------

-- render{size=1024, positive=bool, generator=g [, preset = "siim", option = rate, ...]}
-- -> image (H,W) in [0,1], mask (H,W) 0/1, info {regions = {...}, patient = p,
-- features = {name = true|false} (only with options), size_class, dx16 = {bits, window}}
function synth.render(opts)
  opts = opts or {}
  local S = opts.size or 1024
  local g = opts.generator or lpnx.Generator(opts.seed or 1)
  local F = resolve(opts)                      -- nil: the plain phantom
  local gen = F and feature_generators(g)
  local p = patient(g)
  local on = F and decide(F, gen, opts.positive) or {}
  if F then adjust_patient(p, on) end
  local c = canvas(S, p)
  local D = lpnx.zeros(S, S)   -- density
  local L = lpnx.zeros(S, S)   -- lung coverage
  local V = lpnx.zeros(S, S)   -- vessels
  local P = lpnx.zeros(S, S)   -- pneumothorax coverage
  local mask = lpnx.zeros(S, S)
  draw_body(c, D, p)
  draw_mediastinum(c, D, p)
  local right, left = lungs(p)
  draw_lungs(c, L, right[1], left[1])
  vessel_tree(c, V, g, 0.415, 0.43, -1, 0.07 * p.vessels)
  vessel_tree(c, V, g, 0.585, 0.42, 1, 0.07 * p.vessels)
  local regions, size = {}, nil
  if opts.positive then
    local sides = {{right[1], -1}, {left[1], 1}}
    local count = g:uniform() < 0.12 and 2 or 1  -- sometimes both lungs
    local pick = g:random(1, 2)
    local rg = F and gen("regions")
    if F and F.size_distribution then size = size_class(F.size_distribution, rg) end
    for r = 1, count do
      if r == 2 then pick = 3 - pick end
      local outline, side = sides[pick][1], sides[pick][2]
      local kind = g:uniform() < 0.55 and "apical" or "lateral"
      local reg = pneumothorax_region(outline, side, kind, g)
      if F and (size or on.supine) then
        -- the same draws from g as the plain phantom, the region from a
        -- generator of its own
        local depth
        if size then
          depth = rg:uniform(size[2], size[3])
          if size[1] == "large" then kind = "large"
          elseif size[1] == "rim" then kind = rg:uniform() < 0.75 and "apical" or "lateral" end
        end
        if on.supine and (size == nil or size[1] ~= "large") and rg:uniform() < 0.8 then kind = "sulcus" end
        reg = pneumothorax_region(outline, side, kind, rg, depth)
      end
      if reg then
        regions[#regions + 1] = reg
        local one = lpnx.zeros(S, S)
        c:fill(one, reg.polygon, 1, 0.01, "max")
        mask:copy_(mask:maximum(one:gt(0.5)))
        c:fill(P, reg.polygon, 1, 3, "max")
        -- the free air fills its region up to the chest wall with a sharp
        -- edge: the lung's outline is feathered over 12 pixels, which, left
        -- alone, would fade a rim of a few pixels into the wall's grey. Done
        -- where the size classes are in use (the siim preset); the plain
        -- phantom keeps its edge, byte for byte. A deep sulcus reaches below
        -- the outline, so it always needs it.
        if reg.kind == "sulcus" or size then c:fill(L, reg.polygon, 1, 3, "max") end
      end
    end
  end
  if on.bullae then
    local Bu = lpnx.zeros(S, S)
    draw_bullae(c, Bu, D, on.bullae)
    V:mul_(1 - Bu)
    D:add_(Bu * L * (-0.07))
  end
  -- markings only in aerated lung, none in the pneumothorax
  local noise = draw.noise(S, S, {scale = 40 * S / 1024, octaves = 5, persistence = 0.6}, g)
  V:mul_(L):mul_(1 - P)
  -- soft tissue over the lower zones: lungs brighten towards the bases
  local ramp = ((lpnx.arange(S) / S - 0.3) * 2.2):clamp_(0, 1):view(S, 1)
  D:add_(L * (-p.air) + L * ramp * 0.08)
  D:add_(L * (1 - P) * noise * 0.05)               -- parenchymal texture
  D:add_(V)
  D:add_(P * (-0.12))                              -- free air, darker than lung
  for _, reg in ipairs(regions) do                 -- the visceral pleural line
    c:stroke(D, reg.line, 0.0026, 0.16, {profile = "tube", feather = 1.2})
    c:stroke(D, reg.line, 0.014, 0.04, {profile = "tube", feather = 5}) -- the denser collapsed lung edge
  end
  local B = lpnx.zeros(S, S)
  draw_ribs(c, B, p, g)
  D:add_(B)
  -- look-alikes and devices: density only, never the mask
  if on.skin_folds then draw_skin_fold(c, D, on.skin_folds) end
  if on.scapulae then draw_scapula(c, D, on.scapulae, p) end
  if on.breasts then draw_breasts(c, D, on.breasts) end
  if on.drains then
    draw_drain(c, D, on.drains, regions[1] and regions[1].side or (on.drains:uniform() < 0.5 and -1 or 1))
  end
  if on.et_tubes then draw_et_tube(c, D, on.et_tubes) end
  if on.central_lines then draw_central_line(c, D, on.central_lines) end
  if on.ecg then draw_ecg(c, D, on.ecg) end
  local soft = draw.noise(S, S, {scale = 180 * S / 1024, octaves = 3, persistence = 0.5}, g)
  D:add_(soft * 0.04):clamp_(0, nil)
  -- detector: attenuation to brightness, exposure, blur, quantum noise
  local img = (D * (-1.7 * p.contrast)):exp_():mul_(-1):add_(1 + p.brightness):clamp_(0, 1):pow_(p.gamma)
  local blur = lpnx.image and lpnx.image.gaussian_blur
  if blur then img = blur(img:view(1, S, S), p.blur * S / 1024):view(S, S) end
  if on.grid_lines then draw_grid_lines(img, on.grid_lines, S) end
  img:add_(lpnx.randn(S, S, g) * p.noise):clamp_(0, 1)
  if on.markers then draw_marker(img, on.markers, S) end
  if on.text then draw_burned_text(img, on.text, S, on.supine, on.markers) end
  local info = {regions = regions, patient = p}
  if F then
    info.features = {}
    for _, name in ipairs(synth.options) do info.features[name] = on[name] and true or false end
    info.size_class = size and #regions > 0 and size[1] or nil
    if on.dx16 then
      local dg = on.dx16
      local bits = ({12, 14, 16})[dg:random(1, 3)]
      local top = 2 ^ bits - 1
      -- stored = low + (1 - image) * span (MONOCHROME1: low values white);
      -- the window spans the image's range, the raw values a wider one
      local low, span = top * dg:uniform(0.03, 0.15), top * dg:uniform(0.6, 0.8)
      local window = {center = math.floor(low + span / 2 + 0.5), width = math.floor(span * dg:uniform(0.95, 1.1))}
      info.dx16 = {bits = bits, low = low, span = span, window = window}
    end
  end
  return img, mask, info
end

-- The stored values of a dx16 image (see render's info.dx16).
function synth.dx16_pixels(img, dx16)
  return (img * (-dx16.span)):add_(dx16.low + dx16.span):round_():clamp_(0, 2 ^ dx16.bits - 1)
end

---------------------------------------------------------------------------
-- data sets in the SIIM-ACR layout

-- A DICOM UID under 2.25 (the UUID arc) made from the generator: the same
-- seed gives the same UIDs.
local function uid(g)
  local digits = {tostring(g:random(1, 9))}
  for _ = 1, 37 do digits[#digits + 1] = tostring(g:random(0, 9)) end
  return "2.25." .. table.concat(digits)
end

-- The generator of image i of a data set made with seed: a pure function
-- of (seed, i), so any image can be remade alone.
local function image_generator(seed, i)
  local mix = lpnx.Generator(seed):random(1, 2 ^ 52)
  return lpnx.Generator(mix ~ (i * 0x9E3779B1))
end

-- Metadata of one image, as the SIIM-ACR files carry it (anonymised: the
-- patient's name is the patient id, the study dated 1 January 1901).
local function dicom_meta(g, p)
  local age = g:random(18, 88)
  local anon_id = uid(g):sub(-12)
  local meta = {
    patient_id = anon_id,
    patient_name = anon_id,
    study_date = "19010101",
    study_time = "000000.00",
    patient_sex = g:uniform() < (p.female and 1 or 0) and "F" or "M",
    patient_age = ("%03dY"):format(age),
    view_position = p.view,
    body_part_examined = "CHEST",
    modality = "CR",
    series_description = "view: " .. p.view,
    study_instance_uid = uid(g),
    series_instance_uid = uid(g),
    sop_instance_uid = uid(g),
    pixel_spacing = g:uniform() < 0.5 and {0.14, 0.14} or {0.168, 0.168},
  }
  -- from a generator of its own, seeded by the image's UID: no draw from g
  meta.frame_of_reference_uid = uid(lpnx.Generator(math.tointeger(meta.sop_instance_uid:sub(-15))))
  return meta
end

local mkdir = util.make_folder

-- Iterates i, fn(i) for i = 1..count in order. With workers > 1, forked
-- processes compute them (process k takes i = k, k + workers, ...; one
-- thread each) and send each record back as JSON; the order, and so every
-- output, is the same as with one process. A worker's error is raised here.
local function each_record(count, workers, fn)
  if workers <= 1 or count <= 1 then
    local i = 0
    return function()
      i = i + 1
      if i <= count then return i, fn(i) end
    end
  end
  local sys, cjson = lpnx.sys, require "cjson"
  workers = math.min(workers, count)
  local procs = {}
  for k = 1, workers do
    local r, w = sys.pipe()
    local pid = sys.fork()
    if pid == 0 then
      sys.close(r)
      lpnx.set_num_threads(1)
      local ok, err = pcall(function()
        for i = k, count, workers do sys.write_message(w, cjson.encode(fn(i))) end
      end)
      if not ok then sys.write_message(w, cjson.encode {error = tostring(err)}) end
      sys.exit(ok and 0 or 1)
    end
    sys.close(w)
    procs[k] = {pid = pid, fd = r}
  end
  local function stop()
    for _, p in ipairs(procs) do
      if p.fd then sys.close(p.fd) p.fd = nil end
      if p.pid then
        sys.kill(p.pid, "KILL")
        sys.waitpid(p.pid)
        p.pid = nil
      end
    end
  end
  local i = 0
  return function()
    i = i + 1
    if i > count then
      for _, p in ipairs(procs) do
        sys.close(p.fd)
        p.fd = nil
        local how, code = sys.waitpid(p.pid)
        p.pid = nil
        if how ~= "exited" or code ~= 0 then error(("synth.write: a worker %s %s"):format(how, tostring(code)), 0) end
      end
      return nil
    end
    local p = procs[(i - 1) % workers + 1]
    local text = sys.read_message(p.fd)
    local record = text and cjson.decode(text)
    if not record or record.error then
      stop()
      error(("synth.write: image %d: %s"):format(i, record and record.error or "its worker ended early"), 0)
    end
    return i, record
  end
end

-- write{out=DIR, count=N, seed=S, positive=0.4, size=1024, test_fraction=0.1,
--       jpeg=true, quality=95, progress=function(i, n, id, positive),
--       workers = 1 [, preset = "siim", option = rate, ...]}
-- Writes DIR/dicom-images-train/STUDY/SERIES/IMAGEID.dcm, DIR/train-rle.csv
-- and, for the held-out share, DIR/dicom-images-test/... and DIR/test-rle.csv.
-- The split is stratified: of round(count * test_fraction) held-out images,
-- round(that * positive) have a pneumothorax.
-- With a preset or an option of render (see the top of this file), the
-- images are the harder kind, positive defaults to the preset's share,
-- dx16 images are 12-16-bit MONOCHROME1 DX files with a VOI window
-- (uncompressed), and DIR/features.csv lists each image's features:
-- ImageId, positive (0/1), size_class, then one 0/1 column per option.
-- Returns {train = {ids}, test = {ids}, positives = n}.
function synth.write(opts)
  assert(type(opts) == "table" and opts.out, "synth.write: expected {out = DIR, count = N, ...}")
  local count, seed = opts.count or 100, opts.seed or 1
  local F = resolve(opts)     -- nil: the plain phantoms, as before
  local preset = opts.preset and synth.presets[opts.preset]
  local positive, size = opts.positive or (preset and preset.positive) or 0.4, opts.size or 1024
  local test_fraction = opts.test_fraction or 0.1
  if math.type(count) ~= "integer" or count < 1 then error("synth.write: count must be a positive integer", 2) end
  if not (positive >= 0 and positive <= 1) then error("synth.write: positive must be in [0, 1]", 2) end
  if not (test_fraction >= 0 and test_fraction < 1) then error("synth.write: test_fraction must be in [0, 1)", 2) end
  local workers = opts.workers or 1
  if math.type(workers) ~= "integer" or workers < 1 then
    error(("synth.write: workers must be an integer of at least 1, got %s"):format(tostring(opts.workers)), 2)
  end
  local ntest = math.floor(count * test_fraction + 0.5)
  -- exactly round(count * positive) images get a pneumothorax, and the split
  -- is stratified: round(ntest * positive) of them are held out. Within each
  -- split, which images are positive is a permutation drawn from the seed.
  local npositive = math.floor(count * positive + 0.5)
  local ntrain = count - ntest
  local ntest_positive = math.min(npositive, math.floor(ntest * positive + 0.5))
  local ntrain_positive = npositive - ntest_positive   -- at most ntrain: round(a) - round(b) < a - b + 1
  local split_g = lpnx.Generator(seed + 0x5eed)
  local train_order = ntrain > 0 and lpnx.randperm(ntrain, split_g) or {}
  local test_order = ntest > 0 and lpnx.randperm(ntest, split_g) or {}
  -- image i: its files written, and what the CSVs say of it
  local function write_one(i)
    local split = i > ntrain and "test" or "train"
    local g = image_generator(seed, i)
    local is_positive
    if split == "train" then is_positive = train_order[i] <= ntrain_positive
    else is_positive = test_order[i - ntrain] <= ntest_positive end
    local ropts = {size = size, positive = is_positive, generator = g}
    if F then
      for k, v in pairs(F) do ropts[k] = v end
    end
    local img, mask, info = synth.render(ropts)
    local meta = dicom_meta(g, info.patient)
    local id = meta.sop_instance_uid
    local dir = ("%s/dicom-images-%s/%s/%s"):format(opts.out, split, meta.study_instance_uid, meta.series_instance_uid)
    mkdir(dir)
    if info.dx16 then
      meta.modality = "DX"
      lpnx.dicom.write(("%s/%s.dcm"):format(dir, id), synth.dx16_pixels(img, info.dx16), meta,
                       {jpeg = false, bits = info.dx16.bits, photometric = "MONOCHROME1", dx = true,
                        window = info.dx16.window})
    else
      lpnx.dicom.write(("%s/%s.dcm"):format(dir, id), (img * 255):round_(), meta,
                       {jpeg = opts.jpeg ~= false, quality = opts.quality or 95})
    end
    local record = {id = id, split = split, rows = {}}
    if F then
      local row = {id, #info.regions > 0 and "1" or "0", info.size_class or ""}
      for _, name in ipairs(synth.options) do row[#row + 1] = info.features[name] and "1" or "0" end
      record.features = row
    end
    -- one row per region, as the SIIM-ACR CSV lists separate parts
    -- separately, in its style: ", " then the run-length string
    if #info.regions > 0 then
      local labels, areas = lpnx.image.components(mask)
      for k = 1, #areas do record.rows[#record.rows + 1] = {id, " " .. lpnx.rle.encode(labels:eq(k))} end
    end
    if #record.rows == 0 then record.rows[1] = {id, " -1"} end
    record.positive = record.rows[1][2] ~= " -1"
    return record
  end

  local result = {train = {}, test = {}, positives = 0}
  local features = {}          -- rows of features.csv (with options only)
  local rows = {train = {}, test = {}}
  for i, record in each_record(count, workers, write_one) do
    for _, row in ipairs(record.rows) do rows[record.split][#rows[record.split] + 1] = row end
    if record.features then features[#features + 1] = record.features end
    if record.positive then result.positives = result.positives + 1 end
    local list = result[record.split]
    list[#list + 1] = record.id
    if opts.progress then opts.progress(i, count, record.id, record.positive) end
  end
  local function csv(name, list)
    lpnx.csv.write(("%s/%s"):format(opts.out, name), {"ImageId", " EncodedPixels"}, list)
  end
  csv("train-rle.csv", rows.train)
  if ntest > 0 then csv("test-rle.csv", rows.test) end
  if F then
    local header = {"ImageId", "positive", "size_class"}
    for _, name in ipairs(synth.options) do header[#header + 1] = name end
    lpnx.csv.write(("%s/features.csv"):format(opts.out), header, features)
  end
  return result
end

return synth
