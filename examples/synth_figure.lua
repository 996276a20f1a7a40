-- Draws docs/synth_examples.png, the README's figure of the harder
-- synthetic set: one row per kind of image, two examples a row, each
-- image beside itself with its pneumothorax mask outlined in red.
--   lua5.4 examples/synth_figure.lua [--out docs/synth_examples.png]
local argparse = require "argparse"
local lpnx = require "lpnx"
local synth = require "lpnx.synth"

local parser = argparse("synth_figure.lua", "Draw the figure of the harder synthetic set.")
parser:option("--out", "PNG to write.", "docs/synth_examples.png")
parser:option("--tile", "Side of one tile in pixels.", "224"):convert(tonumber)
local args = parser:parse()

local RENDER, TILE = 512, math.floor(args.tile)

-- Each row: what to render, and what an example must show to be picked.
local ROWS = {
  {"plain PA, no pneumothorax", {positive = false}, function(info) return info.patient.view == "PA" end},
  {"small apical rim", {positive = true, size_distribution = {rim = 1}},
   function(info) return info.regions[1] and info.regions[1].kind == "apical" end},
  {"large pneumothorax", {positive = true, size_distribution = {large = 1}},
   function(info) return #info.regions == 1 end},
  {"supine AP, deep sulcus", {positive = true, supine = 1, size_distribution = {moderate = 1}},
   function(info) return info.regions[1] and info.regions[1].kind == "sulcus" end},
  {"skin fold look-alike (negative)", {positive = false, skin_folds = 1, markers = 1}},
  {"drain, lines, ECG leads, markers", {positive = true, drains = 1, central_lines = 1, et_tubes = 1, ecg = 1,
                                        markers = 1, text = 1, size_distribution = {small = 1}}},
  {"16-bit MONOCHROME1 DX, presented", {positive = true, dx16 = 1, exposure = 1, grid_lines = 1,
                                        size_distribution = {moderate = 1}}},
}

-- The mask's outline: mask pixels with a neighbour outside the mask.
local function outline(mask)
  local h, w = mask:size(1), mask:size(2)
  local inner = mask:clone()
  inner:narrow(1, 2, h - 1):mul_(mask:narrow(1, 1, h - 1))
  inner:narrow(1, 1, h - 1):mul_(mask:narrow(1, 2, h - 1))
  inner:narrow(2, 2, w - 1):mul_(mask:narrow(2, 1, w - 1))
  inner:narrow(2, 1, w - 1):mul_(mask:narrow(2, 2, w - 1))
  return mask - inner
end

local function tile(img, mask, with_outline)
  local small = lpnx.image.resize(img:view(1, RENDER, RENDER), TILE, TILE, "area")
  local rgb = lpnx.cat({small, small, small}, 1)
  if with_outline then
    local m = lpnx.image.resize(mask:view(1, RENDER, RENDER), TILE, TILE, "bilinear"):gt(0.5)[1]
    local o = outline(m)
    o = o:maximum(outline(o:eq(0) * m)) -- two pixels wide
    local keep = 1 - o
    rgb[1]:mul_(keep):add_(o)
    rgb[2]:mul_(keep):add_(o * 0.15)
    rgb[3]:mul_(keep):add_(o * 0.15)
  end
  return rgb
end

local tmp = os.tmpname()
local rows = {}
for r, row in ipairs(ROWS) do
  local tiles, seed = {}, 100 * r
  while #tiles < 4 do
    seed = seed + 1
    local opts = {size = RENDER, generator = lpnx.Generator(seed)}
    for k, v in pairs(row[2]) do opts[k] = v end
    local img, mask, info = synth.render(opts)
    if not row[3] or row[3](info) then
      if info.dx16 then
        -- through the file: stored values, MONOCHROME1 and the window
        lpnx.dicom.write(tmp, synth.dx16_pixels(img, info.dx16), {modality = "DX"},
                         {jpeg = false, bits = info.dx16.bits, photometric = "MONOCHROME1", dx = true,
                          window = info.dx16.window})
        local stored, meta = lpnx.dicom.read(tmp, {stored = true})
        img = lpnx.dicom.present(stored, meta)[1]
      end
      tiles[#tiles + 1] = tile(img, mask, false)
      tiles[#tiles + 1] = tile(img, mask, true)
    end
  end
  rows[#rows + 1] = lpnx.cat(tiles, 3)
  io.stderr:write(("row %d: %s\n"):format(r, row[1]))
end
os.remove(tmp)
lpnx.png.write(args.out, lpnx.cat(rows, 2))
print("wrote " .. args.out)
