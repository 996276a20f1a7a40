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
local function pneumothorax_region(outline, side, kind, g)
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
  local depth = math.min(g:uniform(0.015, 0.075), arc_len * 0.3)
  local inner = {}
  for k, q in ipairs(arc) do
    local t = (k - 1) / (#arc - 1)
    local a = arc[math.max(k - 1, 1)]
    local b = arc[math.min(k + 1, #arc)]
    local tx, ty = b[1] - a[1], b[2] - a[2]
    local len = math.sqrt(tx * tx + ty * ty) + 1e-12
    local nx, ny = -ty / len, tx / len
    if (cx - q[1]) * nx + (cy - q[2]) * ny < 0 then nx, ny = -nx, -ny end -- point into the lung
    local taper = math.sin(math.pi * t) ^ 0.45
    local d = depth * taper
    inner[k] = {q[1] + nx * d, q[2] + ny * d}
  end
  local polygon = {}
  for _, q in ipairs(arc) do polygon[#polygon + 1] = q end
  for k = #inner, 1, -1 do polygon[#polygon + 1] = inner[k] end
  return {polygon = polygon, line = inner, kind = kind, depth = depth}
end

---------------------------------------------------------------------------

-- render{size=1024, positive=bool, generator=g} -> image (H,W) in [0,1],
-- mask (H,W) 0/1, info {regions = {...}, patient = p}
function synth.render(opts)
  opts = opts or {}
  local S = opts.size or 1024
  local g = opts.generator or lpnx.Generator(opts.seed or 1)
  local p = patient(g)
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
  local regions = {}
  if opts.positive then
    local sides = {{right[1], -1}, {left[1], 1}}
    local count = g:uniform() < 0.12 and 2 or 1  -- sometimes both lungs
    local pick = g:random(1, 2)
    for r = 1, count do
      if r == 2 then pick = 3 - pick end
      local outline, side = sides[pick][1], sides[pick][2]
      local kind = g:uniform() < 0.55 and "apical" or "lateral"
      local reg = pneumothorax_region(outline, side, kind, g)
      if reg then
        regions[#regions + 1] = reg
        local one = lpnx.zeros(S, S)
        c:fill(one, reg.polygon, 1, 0.01, "max")
        mask:copy_(mask:maximum(one:gt(0.5)))
        c:fill(P, reg.polygon, 1, 3, "max")
      end
    end
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
  local soft = draw.noise(S, S, {scale = 180 * S / 1024, octaves = 3, persistence = 0.5}, g)
  D:add_(soft * 0.04):clamp_(0, nil)
  -- detector: attenuation to brightness, exposure, blur, quantum noise
  local img = (D * (-1.7 * p.contrast)):exp_():mul_(-1):add_(1 + p.brightness):clamp_(0, 1):pow_(p.gamma)
  local blur = lpnx.image and lpnx.image.gaussian_blur
  if blur then img = blur(img:view(1, S, S), p.blur * S / 1024):view(S, S) end
  img:add_(lpnx.randn(S, S, g) * p.noise):clamp_(0, 1)
  return img, mask, {regions = regions, patient = p}
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

-- write{out=DIR, count=N, seed=S, positive=0.4, size=1024, test_fraction=0.1,
--       jpeg=true, quality=95, progress=function(i, n, id, positive)}
-- Writes DIR/dicom-images-train/STUDY/SERIES/IMAGEID.dcm, DIR/train-rle.csv
-- and, for the held-out share, DIR/dicom-images-test/... and DIR/test-rle.csv.
-- Returns {train = {ids}, test = {ids}, positives = n}.
function synth.write(opts)
  assert(type(opts) == "table" and opts.out, "synth.write: expected {out = DIR, count = N, ...}")
  local count, seed = opts.count or 100, opts.seed or 1
  local positive, size = opts.positive or 0.4, opts.size or 1024
  local test_fraction = opts.test_fraction or 0.1
  if math.type(count) ~= "integer" or count < 1 then error("synth.write: count must be a positive integer", 2) end
  if not (positive >= 0 and positive <= 1) then error("synth.write: positive must be in [0, 1]", 2) end
  if not (test_fraction >= 0 and test_fraction < 1) then error("synth.write: test_fraction must be in [0, 1)", 2) end
  local ntest = math.floor(count * test_fraction + 0.5)
  -- exactly round(count * positive) images get a pneumothorax, spread by a
  -- permutation drawn from the seed (and so are the test images' share)
  local npositive = math.floor(count * positive + 0.5)
  local order = lpnx.randperm(count, lpnx.Generator(seed + 0x5eed))
  local result = {train = {}, test = {}, positives = 0}
  local rows = {train = {}, test = {}}
  for i = 1, count do
    local split = i > count - ntest and "test" or "train"
    local g = image_generator(seed, i)
    local is_positive = order[i] <= npositive
    local img, mask, info = synth.render{size = size, positive = is_positive, generator = g}
    local meta = dicom_meta(g, info.patient)
    local id = meta.sop_instance_uid
    local dir = ("%s/dicom-images-%s/%s/%s"):format(opts.out, split, meta.study_instance_uid, meta.series_instance_uid)
    mkdir(dir)
    lpnx.dicom.write(("%s/%s.dcm"):format(dir, id), (img * 255):round_(), meta,
                     {jpeg = opts.jpeg ~= false, quality = opts.quality or 95})
    -- one row per region, as the SIIM-ACR CSV lists separate parts
    -- separately, in its style: ", " then the run-length string
    local written = 0
    if #info.regions > 0 then
      local labels, areas = lpnx.image.components(mask)
      for k = 1, #areas do
        rows[split][#rows[split] + 1] = {id, " " .. lpnx.rle.encode(labels:eq(k))}
        written = written + 1
      end
    end
    if written == 0 then rows[split][#rows[split] + 1] = {id, " -1"} end
    if written > 0 then result.positives = result.positives + 1 end
    local list = result[split]
    list[#list + 1] = id
    if opts.progress then opts.progress(i, count, id, written > 0) end
  end
  local function csv(name, list)
    lpnx.csv.write(("%s/%s"):format(opts.out, name), {"ImageId", " EncodedPixels"}, list)
  end
  csv("train-rle.csv", rows.train)
  if ntest > 0 then csv("test-rle.csv", rows.test) end
  return result
end

return synth
