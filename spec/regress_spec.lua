-- Inputs that once crashed or misbehaved a parser (spec/fixtures/regress/,
-- made by spec/fixtures/gen/make_regress_fixtures.py, and every crash the
-- fuzzers of lpnx/fuzz/ find): each must now load or raise a Lua error that
-- names the file (run under AddressSanitizer in CI).
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local function files(kind)
  return lpnx.fs.walk(h.fixture("regress/" .. kind))
end

-- A binary Segmentation of n frames of 1 x 1 pixels (explicit VR little
-- endian), segment 1 given once in the shared functional groups and every
-- frame an empty item of the per-frame functional groups: a file whose
-- size grows with the number of items of one sequence.
local function many_frames_seg(path, n)
  local function el(group, element, vr, value)
    if #value % 2 == 1 then value = value .. ((vr == "UI" or vr == "OB") and "\0" or " ") end
    local head = string.pack("<I2I2c2", group, element, vr)
    if vr == "OB" or vr == "SQ" then return head .. string.pack("<I2I4", 0, #value) .. value end
    return head .. string.pack("<I2", #value) .. value
  end
  local function item(body) return string.pack("<I2I2I4", 0xFFFE, 0xE000, #body) .. body end
  local function us(v) return string.pack("<I2", v) end
  local seg = "1.2.840.10008.5.1.4.1.1.66.4"
  local meta = el(2, 1, "OB", "\0\1") .. el(2, 2, "UI", seg) .. el(2, 3, "UI", "2.25.7") ..
               el(2, 0x10, "UI", "1.2.840.10008.1.2.1")
  local body = {
    el(2, 0, "UL", string.pack("<I4", #meta)), meta,
    el(8, 0x16, "UI", seg), el(8, 0x18, "UI", "2.25.7"),
    el(0x28, 2, "US", us(1)), el(0x28, 8, "IS", tostring(n)), el(0x28, 0x10, "US", us(1)),
    el(0x28, 0x11, "US", us(1)), el(0x28, 0x100, "US", us(1)), el(0x28, 0x101, "US", us(1)),
    el(0x62, 1, "CS", "BINARY"), el(0x62, 2, "SQ", item(el(0x62, 4, "US", us(1)))),
    el(0x5200, 0x9229, "SQ", item(el(0x62, 0xA, "SQ", item(el(0x62, 0xB, "US", us(1)))))),
    el(0x5200, 0x9230, "SQ", item(""):rep(n)),
    el(0x7FE0, 0x10, "OB", ("\x55"):rep((n + 7) // 8)),
  }
  local f = assert(io.open(path, "wb"))
  f:write(("\0"):rep(128), "DICM", table.concat(body))
  f:close()
end

local readers = {
  png = function(p) return lpnx.png.read(p) end,
  safetensors = function(p) return lpnx.load(p) end,
  dicom = function(p) return lpnx.dicom.read(p) end,
  dicom_seg = function(p) return lpnx.dicom.read_seg(p) end,
  csv = function(p) return lpnx.csv.read(p) end,
}

describe("regression inputs fail cleanly", function()
  for kind, read in pairs(readers) do
    it(kind .. " files raise errors naming the file", function()
      local list = files(kind)
      assert.is_true(#list > 0, "no regression inputs for " .. kind)
      for _, path in ipairs(list) do
        local ok, err = pcall(read, path)
        assert.is_false(ok, path .. " was accepted")
        assert.matches(path, err, 1, true)
      end
    end)
  end

  it("a segmentation claiming more frames than its pixel data holds fails before allocating them", function()
    -- 1 x 1 pixels and NumberOfFrames 2147483647 in a 2 KB file: 8 GB were asked for first
    local path = h.fixture("regress/dicom_seg/frames_past_pixeldata.dcm")
    local ok, err = pcall(lpnx.dicom.read_seg, path)
    assert.is_false(ok, path .. " was accepted")
    assert.matches("PixelData holds 12 bytes, expected 268435456", err, 1, true)
  end)

  it("a 3 KB RLE file claiming 46340 x 46340 pixels fails before the decoder allocates them", function()
    -- DCMTK's RLE decoder took 4 GB and 11 s before giving up on it
    local path = h.fixture("regress/dicom/rle_claims_46340x46340.dcm")
    local ok, err = pcall(lpnx.dicom.read, path)
    assert.is_false(ok, path .. " was accepted")
    assert.matches("corrupt RLE Lossless pixel data (2584 bytes of RLE data cannot hold the 4294791200 bytes the "
                   .. "image needs (RLE packs at most 64 to 1))", err, 1, true)
  end)

  it("a segmentation with many per-frame items is read in linear time", function()
    local dir = h.tmpdir()
    local path = dir .. "/many_frames.dcm"
    local n = 100000
    many_frames_seg(path, n)
    local t0 = os.clock()
    local ok, mask, info = pcall(lpnx.dicom.read_seg, path)
    local seconds = os.clock() - t0
    h.rmdir(dir)
    assert.is_true(ok, tostring(mask))
    assert.are.equal(n, info.frames)
    assert.are.same({n, 1, 1}, mask:size())
    assert.are.equal(n / 2, mask:sum())  -- 0x55: every other frame is set
    -- indexing the items one by one (quadratic) took 14 s of CPU time here; one walk takes 0.1 s
    assert.is_true(seconds < 5, ("%.1f s of CPU time to read %d frames"):format(seconds, n))
  end)

  it("run-length strings raise errors saying what is wrong", function()
    for _, path in ipairs(files("rle")) do
      local s = io.open(path):read("a")
      local ok, err = pcall(lpnx.rle.decode, s, 64, 64)
      assert.is_false(ok, path .. " decoded")
      assert.is_truthy(err:find("lpnx.rle.decode", 1, true) or err:find("run", 1, true), err)
    end
  end)
end)
