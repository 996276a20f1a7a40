-- lpnx.png against PNGs from an independent writer (a Python stdlib script,
-- spec/fixtures/gen/make_png_fixtures.py). Every fixture's samples follow
-- (a*x + b*y + m*c + k) mod M with parameters from manifest.txt, which this
-- spec recomputes.
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"

local dir = helpers.fixture("png")

-- x rounded to float32, as the reader stores it.
local function f32(x)
  return (string.unpack("<f", string.pack("<f", x)))
end

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function manifest()
  local list = {}
  for line in io.lines(dir .. "/manifest.txt") do
    if not line:match("^#") and line:match("%S") then
      local f = {}
      for word in line:gmatch("%S+") do f[#f + 1] = word end
      local n = function(i) return math.tointeger(tonumber(f[i])) end
      list[#list + 1] = {name = f[1], width = n(2), height = n(3), color = f[4], bits = n(5),
                         interlaced = n(6) == 1, a = n(7), b = n(8), m = n(9), k = n(10),
                         palette = n(11), trns = n(12)}
    end
  end
  return list
end

local CHANNELS = {gray = 1, gray_alpha = 2, rgb = 3, rgba = 4}

-- The expected (C,H,W) values of a fixture as nested tables.
local function expected(fx)
  local channels = CHANNELS[fx.color] or (fx.trns > 0 and 4 or 3)
  local out = {}
  for c = 0, channels - 1 do
    local plane = {}
    for y = 0, fx.height - 1 do
      local row = {}
      for x = 0, fx.width - 1 do
        local v
        if fx.color == "palette" then
          local i = (fx.a * x + fx.b * y + fx.k) % fx.palette
          local entry = {(37 * i + 11) % 256, (91 * i + 3) % 256, (53 * i + 200) % 256,
                         i < fx.trns and (67 * i + 5) % 256 or 255}
          v = entry[c + 1] / 255
        else
          local levels = (1 << fx.bits) - 1
          v = ((fx.a * x + fx.b * y + fx.m * c + fx.k) % (levels + 1)) / levels
        end
        row[x + 1] = f32(v)
      end
      plane[y + 1] = row
    end
    out[c + 1] = plane
  end
  return out
end

describe("lpnx.png.read", function()
  local fixtures = manifest()

  it("reads every fixture kind exactly (gray 1-16 bit, GA, RGB, RGBA 8/16, palette 1-8 bit, Adam7)", function()
    assert.is_true(#fixtures >= 90)
    local seen = {}
    for _, fx in ipairs(fixtures) do
      local t, info = lpnx.png.read(dir .. "/" .. fx.name)
      local want = expected(fx)
      assert.are.same({#want, fx.height, fx.width}, t:size(), fx.name)
      assert.are.same({width = fx.width, height = fx.height, bit_depth = fx.bits, color_type = fx.color,
                       interlaced = fx.interlaced}, info, fx.name)
      local got = t:totable()
      -- exact equality, reported by place so that a failure is readable
      for c = 1, #want do
        for y = 1, fx.height do
          for x = 1, fx.width do
            if got[c][y][x] ~= want[c][y][x] then
              error(("%s: (%d,%d,%d) is %.9g, expected %.9g"):format(fx.name, c, y, x, got[c][y][x], want[c][y][x]))
            end
          end
        end
      end
      seen[fx.color .. fx.bits .. (fx.interlaced and "i" or "")] = true
    end
    for _, kind in ipairs {"gray1", "gray2", "gray4", "gray8", "gray16", "gray_alpha8", "gray_alpha16", "rgb8",
                           "rgb16", "rgba8", "rgba16", "palette1", "palette2", "palette4", "palette8"} do
      assert.is_true(seen[kind], kind)
      assert.is_true(seen[kind .. "i"], kind .. " interlaced")
    end
  end)

  it("scales sub-8-bit gray by 2^bits - 1 and 16-bit by 65535 without losing precision", function()
    -- gray2_1x1: sample k = 2 -> 2/3; gray4_1x1: k = 1 -> 1/15
    assert.are.equal(f32(2 / 3), lpnx.png.read(dir .. "/gray2_1x1.png"):get(1, 1, 1))
    assert.are.equal(f32(1 / 15), lpnx.png.read(dir .. "/gray4_1x1.png"):get(1, 1, 1))
    -- gray16_full_range: 16383*x + 16384*y mod 65536; (x=1,y=3) = 65535, (x=0,y=0) = 0,
    -- (x=1,y=0) = 16383 which no 8-bit value can express
    local t = lpnx.png.read(dir .. "/gray16_full_range.png")
    assert.are.equal(1, t:get(1, 4, 2))
    assert.are.equal(0, t:get(1, 1, 1))
    assert.are.equal(f32(16383 / 65535), t:get(1, 1, 2))
    assert.are_not.equal(f32(64 / 255), t:get(1, 1, 2))
  end)

  it("ignores gamma, chromaticity, sBIT and text chunks, and tRNS on gray and RGB", function()
    local t = lpnx.png.read(dir .. "/rgb8_colour_chunks.png")
    -- (a, b, m, k) = (37, 101, 59, 13): pixel (x=2, y=1), green = (74 + 101 + 59 + 13) % 256 = 247
    assert.are.equal(f32(247 / 255), t:get(2, 2, 3))
    assert.are.same({1, 5, 7}, lpnx.png.read(dir .. "/gray8_trns.png"):size())
    assert.are.same({3, 5, 7}, lpnx.png.read(dir .. "/rgb8_trns.png"):size())
  end)

  it("expands a palette to RGB, or RGBA when tRNS is present (alpha 255 past its entries)", function()
    local t, info = lpnx.png.read(dir .. "/palette4_trns.png")
    assert.are.equal("palette", info.color_type)
    assert.are.same({4, 5, 7}, t:size())
    -- (a, b, k) = (3, 5, 1), 16 entries, 9 with alpha: pixel (x=0,y=0) is entry 1:
    -- RGB (48, 94, 253), alpha 72
    assert.are.same({f32(48 / 255), f32(94 / 255), f32(253 / 255), f32(72 / 255)},
                    {t:get(1, 1, 1), t:get(2, 1, 1), t:get(3, 1, 1), t:get(4, 1, 1)})
    -- pixel (x=2, y=1): entry (6 + 5 + 1) % 16 = 12, past the 9 alpha entries -> 255
    assert.are.equal(1, t:get(4, 2, 3))
    assert.are.same({3, 11, 13}, lpnx.png.read(dir .. "/palette8.png"):size())
  end)
end)

describe("lpnx.png.write", function()
  local tmp
  before_each(function() tmp = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(tmp) end)

  -- A (C,H,W) tensor of levels k / max with k from a fixed formula.
  local function levels(c, h, w, max)
    local t = lpnx.empty(c, h, w)
    for i = 1, c do
      for y = 1, h do
        for x = 1, w do t:set((i * 7919 + y * 104729 + x * 1299709) % (max + 1) / max, i, y, x) end
      end
    end
    return t
  end

  local COLOR = {"gray", "gray_alpha", "rgb", "rgba"}
  local TYPE_CODE = {0, 4, 2, 6}

  it("round-trips 1, 2, 3 and 4 channels at 8 and 16 bits exactly", function()
    for _, bits in ipairs {8, 16} do
      local max = (1 << bits) - 1
      for c = 1, 4 do
        local t = levels(c, 5, 7, max)
        local path = tmp .. "/img.png"
        lpnx.png.write(path, t, bits == 16 and {bit_depth = 16} or nil)
        local back, info = lpnx.png.read(path)
        assert.are.same({width = 7, height = 5, bit_depth = bits, color_type = COLOR[c], interlaced = false}, info)
        assert.are.same(t:totable(), back:totable())
        -- the header as written, read byte by byte
        local bytes = read_bytes(path)
        assert.are.equal("\137PNG\r\n\26\n", bytes:sub(1, 8))
        local len, kind, w, h, depth, color, compression, filter, interlace = string.unpack(">I4c4I4I4BBBBB", bytes, 9)
        assert.are.same({13, "IHDR", 7, 5, bits, TYPE_CODE[c], 0, 0, 0},
                        {len, kind, w, h, depth, color, compression, filter, interlace})
      end
    end
  end)

  it("writes (H,W) as one gray channel, 8-bit by default", function()
    local t = levels(1, 3, 4, 255)[1]
    local path = tmp .. "/hw.png"
    lpnx.png.write(path, t)
    local back, info = lpnx.png.read(path)
    assert.are.same({1, 3, 4}, back:size())
    assert.are.equal(8, info.bit_depth)
    assert.are.same(t:totable(), back[1]:totable())
  end)

  it("clamps to [0, 1] and rounds to the nearest level", function()
    local inf = math.huge
    local t = lpnx.tensor{{{-0.5, -inf, 0, 0.5, 1, 1.5, inf, 0.1, 0.30196, 0.998}}}
    lpnx.png.write(tmp .. "/c.png", t)
    local back = lpnx.png.read(tmp .. "/c.png")
    -- 0.5 * 255 = 127.5 -> 128; 0.1 * 255 = 25.5 -> 26; 0.30196 * 255 = 76.9998 -> 77; 0.998 * 255 = 254.49 -> 254
    local want = {0, 0, 0, 128, 255, 255, 255, 26, 77, 254}
    for i, k in ipairs(want) do want[i] = f32(k / 255) end
    assert.are.same({{want}}, back:totable())
    lpnx.png.write(tmp .. "/c16.png", t, {bit_depth = 16})
    -- 0.5 * 65535 = 32767.5 -> 32768 (0.5 is exact in float32)
    assert.are.equal(f32(32768 / 65535), lpnx.png.read(tmp .. "/c16.png"):get(1, 1, 4))
  end)

  it("accepts non-contiguous tensors", function()
    local base = levels(3, 6, 4, 255)
    local t = base:transpose(2, 3) -- (3,4,6), strided
    assert.is_false(t:is_contiguous())
    lpnx.png.write(tmp .. "/t.png", t)
    assert.are.same(t:contiguous():totable(), lpnx.png.read(tmp .. "/t.png"):totable())
    local part = base:narrow(3, 2, 2) -- (3,6,2), strided
    lpnx.png.write(tmp .. "/n.png", part, {bit_depth = 16})
    assert.are.same(part:contiguous():totable(), lpnx.png.read(tmp .. "/n.png"):totable())
  end)

  it("replaces a file atomically and leaves no temporary file", function()
    local path = tmp .. "/a.png"
    write_bytes(path, "old contents")
    lpnx.png.write(path, lpnx.ones(1, 2, 2))
    assert.are.same(lpnx.ones(1, 2, 2):totable(), lpnx.png.read(path):totable())
    local p = io.popen("ls -A '" .. tmp .. "'")
    local listing = p:read("a")
    p:close()
    assert.are.equal("a.png\n", listing)
  end)

  it("refuses NaN, bad shapes, bad options and unwritable paths, naming them", function()
    local t = lpnx.zeros(3, 2, 4)
    t:set(0 / 0, 2, 1, 3)
    assert.matches("lpnx.png.write: " .. tmp .. "/nan.png: NaN at channel 2, row 1, column 3",
                   message(lpnx.png.write, tmp .. "/nan.png", t), 1, true)
    assert.is_nil(io.open(tmp .. "/nan.png"))
    assert.matches("expected an image (C,H,W) with C = 1, 2, 3 or 4, or (H,W), got (5,4,4)",
                   message(lpnx.png.write, tmp .. "/x.png", lpnx.zeros(5, 4, 4)), 1, true)
    assert.matches("got (4)", message(lpnx.png.write, tmp .. "/x.png", lpnx.zeros(4)), 1, true)
    assert.matches("expected an image of at least 1x1 pixels, got (1,0,4)",
                   message(lpnx.png.write, tmp .. "/x.png", lpnx.zeros(1, 0, 4)), 1, true)
    assert.matches("bit_depth must be 8 or 16, got 12",
                   message(lpnx.png.write, tmp .. "/x.png", lpnx.zeros(2, 2), {bit_depth = 12}), 1, true)
    assert.matches("lpnx.png.write: " .. tmp .. "/no/such/dir/x.png: cannot create a temporary file next to it",
                   message(lpnx.png.write, tmp .. "/no/such/dir/x.png", lpnx.zeros(2, 2)), 1, true)
  end)
end)

describe("lpnx.png.read rejects bad files with the file's name and the reason", function()
  local bad = dir .. "/bad/"
  local cases = {
    {"truncated_in_idat.png", "file is truncated"},
    {"missing_iend.png", "file is truncated"},
    {"bad_crc_idat.png", "IDAT: CRC error"},
    {"bad_crc_ihdr.png", "IHDR: CRC error"},
    {"wrong_signature.png", "not a PNG file (wrong signature)"},
    {"not_a_png.png", "not a PNG file (wrong signature)"},
    {"empty.png", "empty file, not a PNG"},
    {"bad_zlib_header.png", "IDAT: incorrect header check"},
    {"bad_zlib_block.png", "IDAT: invalid block type"},
    {"bad_zlib_checksum.png", "IDAT: incorrect data check"},
    {"short_image_data.png", "Not enough image data"},
    {"bad_bit_depth.png", "Invalid IHDR data"},
    {"bad_color_type.png", "Invalid IHDR data"},
    {"zero_width.png", "Invalid IHDR data"},
    {"huge_claim.png", "claims 100000x100000 pixels but the file has only"},
    {"palette_missing_plte.png", "IDAT: Missing PLTE before IDAT"},
    {"palette_index_out_of_range.png", "palette index 4 at row 1, column 2 is outside the palette of 4 entries"},
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      local path = bad .. case[1]
      assert.matches("lpnx.png.read: " .. path .. ": " .. case[2], message(lpnx.png.read, path), 1, true)
    end)
  end

  it("a missing file and a folder", function()
    assert.matches("lpnx.png.read: " .. bad .. "nope.png: cannot open (No such file or directory)",
                   message(lpnx.png.read, bad .. "nope.png"), 1, true)
    assert.matches("lpnx.png.read: " .. dir .. ": is a directory", message(lpnx.png.read, dir), 1, true)
  end)

  it("a good file cut at every offset", function()
    local good = read_bytes(bad .. "good_gray8.png")
    assert.are.same({1, 5, 7}, lpnx.png.read(bad .. "good_gray8.png"):size())
    local tmp = helpers.tmpdir()
    for cut = 0, #good - 1 do
      local path = ("%s/cut%03d.png"):format(tmp, cut)
      write_bytes(path, good:sub(1, cut))
      local m = message(lpnx.png.read, path)
      assert.matches("lpnx.png.read: " .. path .. ": ", m, 1, true)
      local want = cut == 0 and "empty file" or cut < 8 and "inside the PNG signature" or "file is truncated"
      assert.matches(want, m, 1, true)
    end
    helpers.rmdir(tmp)
  end)
end)
