-- lpnx.dicom against files made by DCMTK's own tools (dump2dcm, img2dcm,
-- dcmconv, dcmodify, dcmcjpeg, dcmdjpeg, dcmcjpls, dcmcrle): see
-- spec/fixtures/gen/make_dicom_fixtures.sh. Every fixture's pixels are a
-- formula recomputed here (r, c, f 0-based; 30 rows, 41 columns).
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"

local function fixture(name) return helpers.fixture("dicom/" .. name .. ".dcm") end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- The pixel patterns of make_dicom_fixtures.sh; k is the 1-based channel.
local function p8(_, r, c) return (37 * r + 11 * c + (r * c) % 7) % 256 end
local function s8(_, r, c) return 20 + 2 * c + 3 * r end
local function p12(_, r, c) return (131 * r + 71 * c + r * c) % 4096 end
local function s12(_, r, c) return 100 + 40 * c + 60 * r end
local function p12s(k, r, c) return p12(k, r, c) - 2048 end
local function p16(_, r, c) return (2039 * r + 977 * c + 13 * r * c) % 65536 end
local function p16s(k, r, c) return p16(k, r, c) - 32768 end
local function rgb(k, r, c)
  if k == 1 then return 20 + 4 * c elseif k == 2 then return 30 + 5 * r else return 200 - 2 * c - 2 * r end
end
local function frame_of(f) return function(k, r, c) return (p8(k, r, c) + 50 * f) % 256 end end

-- Largest and mean absolute difference between img (C,H,W) and expect.
local function compare(img, expect)
  local t = img:totable()
  local worst, sum, n = 0, 0, 0
  for k = 1, #t do
    for r = 1, #t[k] do
      local row = t[k][r]
      for c = 1, #row do
        local d = math.abs(row[c] - expect(k, r - 1, c - 1))
        if d > worst then worst = d end
        sum, n = sum + d, n + 1
      end
    end
  end
  return worst, sum / n
end

local EXPLICIT, IMPLICIT, BIG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
local DEFLATED, RLE = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5"
local JPEG_BASELINE, JPEG_EXTENDED = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"
local JPEG_SV1 = "1.2.840.10008.1.2.4.70"
local JPEGLS, JPEGLS_NEAR = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"
local SC = "1.2.840.10008.5.1.4.1.1.7"

-- name, expected values, transfer syntax, bits stored, pixel representation, channels
local exact = {
  {"mono8_explicit", p8, EXPLICIT, 8, 0, 1},
  {"mono8_implicit", p8, IMPLICIT, 8, 0, 1},
  {"mono8_big", p8, BIG, 8, 0, 1},
  {"mono8_deflated", p8, DEFLATED, 8, 0, 1},
  {"mono8_dataset_only", p8, IMPLICIT, 8, 0, 1},
  {"mono8_jpeg_lossless", p8, JPEG_SV1, 8, 0, 1},
  {"mono8_jpegls", p8, JPEGLS, 8, 0, 1},
  {"mono8_rle", p8, RLE, 8, 0, 1},
  {"mono12_dirty", p12, EXPLICIT, 12, 0, 1},
  {"mono12_jpeg_lossless", p12, JPEG_SV1, 12, 0, 1},
  {"mono12_jpegls", p12, JPEGLS, 12, 0, 1},
  {"mono12_rle", p12, RLE, 12, 0, 1},
  {"mono16", p16, EXPLICIT, 16, 0, 1},
  {"mono16_big", p16, BIG, 16, 0, 1},
  {"mono16_jpegls", p16, JPEGLS, 16, 0, 1},
  {"mono16_rle", p16, RLE, 16, 0, 1},
  -- signed, RescaleSlope 2.5, RescaleIntercept -1024
  {"mono16s", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, EXPLICIT, 16, 1, 1},
  {"mono16s_implicit", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, IMPLICIT, 16, 1, 1},
  {"mono16s_big", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, BIG, 16, 1, 1},
  {"mono16s_jpeg_lossless", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, JPEG_SV1, 16, 1, 1},
  {"mono16s_rle", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, RLE, 16, 1, 1},
  -- MONOCHROME1: min + max - v on the stored range (8-bit 255 - v, 12-bit
  -- 4095 - v, signed 12-bit -1 - v), then the rescale (slope 0.5, -1000)
  {"mono8_monochrome1", function(k, r, c) return 255 - p8(k, r, c) end, EXPLICIT, 8, 0, 1},
  {"mono12_monochrome1", function(k, r, c) return 4095 - p12(k, r, c) end, EXPLICIT, 12, 0, 1},
  {"mono12s_dirty", function(k, r, c) return (-1 - p12s(k, r, c)) * 0.5 - 1000 end, EXPLICIT, 12, 1, 1},
  {"rgb", rgb, EXPLICIT, 8, 0, 3},
  {"rgb_rle", rgb, RLE, 8, 0, 3},
  {"rgb_jpegls", rgb, JPEGLS, 8, 0, 3},
  {"rgb_planar", rgb, EXPLICIT, 8, 0, 3},
  {"multiframe", frame_of(0), EXPLICIT, 8, 0, 1},
  {"multiframe_rle", frame_of(0), RLE, 8, 0, 1},
  {"multiframe_jpegls", frame_of(0), JPEGLS, 8, 0, 1},
}

describe("lpnx.dicom.read", function()
  for _, case in ipairs(exact) do
    local name, expect, ts, bits, signed, channels = table.unpack(case)
    it("reads " .. name .. " exactly", function()
      local img, meta = lpnx.dicom.read(fixture(name))
      assert.are.same({channels, 30, 41}, img:size())
      local worst = compare(img, expect)
      assert.are.equal(0, worst)
      assert.are.equal(ts, meta.transfer_syntax)
      assert.are.equal(bits, meta.bits_stored)
      assert.are.equal(signed, meta.pixel_representation)
      assert.are.equal(channels, meta.samples_per_pixel)
      assert.are.equal(30, meta.rows)
      assert.are.equal(41, meta.columns)
    end)
  end

  it("reads JPEG baseline (8-bit lossy) within tolerance", function()
    local img, meta = lpnx.dicom.read(fixture("smooth8_jpeg_baseline"))
    local worst, mean = compare(img, s8)
    -- measured: max 1, mean 0.13 (the codec's rounding on a smooth image)
    assert.is_true(mean < 0.2 and worst <= 2, ("mean %g, max %g"):format(mean, worst))
    assert.are.equal(JPEG_BASELINE, meta.transfer_syntax)
    assert.are.equal("JPEG Baseline", meta.transfer_syntax_name)
    assert.are.equal(8, meta.bits_allocated)
  end)

  it("reads JPEG extended (12-bit lossy) within tolerance", function()
    local img, meta = lpnx.dicom.read(fixture("smooth12_jpeg_extended"))
    local worst, mean = compare(img, s12)
    -- measured: max 3, mean 0.85 (of 4095)
    assert.is_true(mean < 1.2 and worst <= 5, ("mean %g, max %g"):format(mean, worst))
    assert.are.equal(JPEG_EXTENDED, meta.transfer_syntax)
    assert.are.equal(12, meta.bits_stored)
    assert.are.equal(16, meta.bits_allocated)
  end)

  it("reads JPEG-LS near-lossless within its maximum deviation (NEAR = 3)", function()
    local img, meta = lpnx.dicom.read(fixture("mono8_jpegls_near"))
    local worst = compare(img, p8)
    assert.is_true(worst <= 3, "max " .. worst)
    assert.is_true(worst > 0) -- really lossy
    assert.are.equal(JPEGLS_NEAR, meta.transfer_syntax)
  end)

  it("returns YBR JPEG and uncompressed YBR_FULL / YBR_FULL_422 as RGB", function()
    -- measured max and mean error: 4 and 0.60, 4 and 0.60 (the JPEG's own YBR values), 3 and 1.16
    -- (chroma shared by pixel pairs); a wrong conversion coefficient moves them by far more
    local limits = {rgb_jpeg_ybr = {5, 0.8}, rgb_ybr_full = {5, 0.8}, ybr422 = {4, 1.5}}
    for _, name in ipairs {"rgb_jpeg_ybr", "rgb_ybr_full", "ybr422"} do
      local img, meta = lpnx.dicom.read(fixture(name))
      assert.are.equal(3, img:size(1))
      local worst, mean = compare(img, rgb)
      assert.is_true(worst <= limits[name][1] and mean < limits[name][2],
                     ("%s: mean %g, max %g"):format(name, mean, worst))
      assert.are.equal(3, meta.samples_per_pixel)
    end
    -- photometric is reported as stored
    assert.are.equal("YBR_FULL_422", select(2, lpnx.dicom.read(fixture("rgb_jpeg_ybr"))).photometric)
    assert.are.equal("YBR_FULL", select(2, lpnx.dicom.read(fixture("rgb_ybr_full"))).photometric)
    assert.are.same({3, 30, 40}, lpnx.dicom.read(fixture("ybr422")):size())
  end)

  it("reports MONOCHROME1 as stored while returning MONOCHROME2 values", function()
    local img, meta = lpnx.dicom.read(fixture("mono8_monochrome1"))
    assert.are.equal("MONOCHROME1", meta.photometric)
    assert.are.equal(255, img:get(1, 1, 1)) -- stored 0
    assert.are.equal(255 - 238, img:get(1, 30, 41))
  end)

  it("reads every frame of a multi-frame file, frame 1 by default", function()
    for _, name in ipairs {"multiframe", "multiframe_rle", "multiframe_jpegls"} do
      for f = 1, 3 do
        local img, meta = lpnx.dicom.read(fixture(name), {frame = f})
        assert.are.same({1, 30, 41}, img:size())
        assert.are.equal(0, (compare(img, frame_of(f - 1))))
        assert.are.equal(3, meta.number_of_frames)
        assert.are.equal(f, meta.frame)
      end
      local _, meta = lpnx.dicom.read(fixture(name))
      assert.are.equal(1, meta.frame)
    end
  end)

  it("refuses a frame out of range, naming the file and the frame count", function()
    local path = fixture("multiframe_rle")
    assert.has_error(function() lpnx.dicom.read(path, {frame = 4}) end,
      "lpnx.dicom.read: " .. path .. ": frame 4 out of range (the file has 3 frames)")
    assert.has_error(function() lpnx.dicom.read(path, {frame = 0}) end,
      "lpnx.dicom.read: " .. path .. ": frame 0 out of range (the file has 3 frames)")
    assert.has_error(function() lpnx.dicom.read(fixture("mono8_explicit"), {frame = 2}) end,
      "lpnx.dicom.read: " .. fixture("mono8_explicit") .. ": frame 2 out of range (the file has 1 frame)")
    assert.has_error(function() lpnx.dicom.read(path, {frame = 1.5}) end,
      "bad argument #2 to 'read' (frame must be an integer, got number)")
  end)

  it("returns the meta data of a SIIM-like file", function()
    local img, meta = lpnx.dicom.read(fixture("mono8_explicit"))
    assert.are.equal(0, img:get(1, 1, 1))
    assert.are.same({
      rows = 30, columns = 41, bits_allocated = 8, bits_stored = 8, high_bit = 7, pixel_representation = 0,
      samples_per_pixel = 1, number_of_frames = 1, frame = 1, photometric = "MONOCHROME2",
      transfer_syntax = EXPLICIT, transfer_syntax_name = "Little Endian Explicit",
      window_center = 127, window_width = 255, windows = {{center = 127, width = 255}, {center = 100, width = 200}},
      pixel_spacing = {0.139, 0.143},
      view_position = "PA", patient_sex = "F", patient_age = "038Y", patient_id = "mono8_explicit",
      modality = "CR", body_part_examined = "CHEST", conversion_type = "WSD",
      sop_class_uid = SC, sop_instance_uid = "2.25.81726354.1.1.7",
      study_instance_uid = "2.25.81726354.1.3", series_instance_uid = "2.25.81726354.1.4",
      frame_of_reference_uid = "2.25.81726354.1.2",
    }, meta)
  end)

  it("reads rescale, ImagerPixelSpacing and leaves absent values nil", function()
    local _, meta = lpnx.dicom.read(fixture("mono16s"))
    assert.are.equal(2.5, meta.rescale_slope)
    assert.are.equal(-1024, meta.rescale_intercept)
    assert.is_nil(meta.window_center)
    assert.is_nil(meta.window_width)
    assert.is_nil(meta.pixel_spacing)
    assert.is_nil(meta.view_position)
    assert.is_nil(meta.frame_of_reference_uid)
    _, meta = lpnx.dicom.read(fixture("mono12_dirty"))
    assert.are.same({0.2, 0.25}, meta.pixel_spacing)
    assert.is_nil(meta.rescale_slope)
    assert.is_nil(meta.rescale_intercept)
    _, meta = lpnx.dicom.read(fixture("mono8_big"))
    assert.are.equal("Big Endian Explicit", meta.transfer_syntax_name)
    assert.are.equal("2.25.81726354.1.1.7", meta.sop_instance_uid)
  end)
end)

describe("lpnx.dicom.read on bad files", function()
  local tmp
  setup(function() tmp = helpers.tmpdir() end)
  teardown(function() helpers.rmdir(tmp) end)

  local function fails(path, what)
    local ok, err = pcall(lpnx.dicom.read, path)
    assert.is_false(ok)
    local prefix = "lpnx.dicom.read: " .. path .. ": "
    assert.are.equal(prefix, err:sub(1, #prefix))
    if what then assert.is_truthy(err:find(what, 1, true), err) end
    return err
  end

  it("names a missing file", function()
    assert.has_error(function() lpnx.dicom.read(tmp .. "/missing.dcm") end,
      "lpnx.dicom.read: " .. tmp .. "/missing.dcm: cannot open (No such file or directory)")
    fails(tmp, "cannot open (is a directory)")
  end)

  it("rejects files truncated anywhere", function()
    for _, name in ipairs {"mono8_explicit", "mono16_big", "mono8_deflated", "mono8_jpegls", "mono8_jpeg_lossless",
                           "smooth8_jpeg_baseline", "multiframe_rle", "rgb_jpeg_ybr"} do
      local bytes = slurp(fixture(name))
      for _, n in ipairs {0, 1, 64, 131, 132, 140, 300, 600, #bytes // 2, #bytes - 100, #bytes - 2, #bytes - 1} do
        local path = ("%s/%s_%d.dcm"):format(tmp, name, n)
        spit(path, bytes:sub(1, n))
        fails(path)
      end
    end
    -- what DCMTK says about it is kept
    local bytes = slurp(fixture("mono8_explicit"))
    spit(tmp .. "/short.dcm", bytes:sub(1, #bytes - 1))
    fails(tmp .. "/short.dcm", "PixelData (7fe0,0010) larger (1230) than remaining bytes (1229)")
    fails(tmp .. "/mono8_explicit_0.dcm", "not a DICOM file (empty)")
  end)

  it("rejects garbage", function()
    lpnx.manual_seed(7)
    local noise = lpnx.rand(4000):mul_(255):totable()
    local bytes = {}
    for i, v in ipairs(noise) do bytes[i] = string.char(math.floor(v)) end
    spit(tmp .. "/noise.dcm", table.concat(bytes))
    fails(tmp .. "/noise.dcm", "not a DICOM file")
    spit(tmp .. "/text.dcm", "just some text, not a DICOM file at all\n")
    fails(tmp .. "/text.dcm", "not a DICOM file")
    -- a DICM prefix followed by garbage
    spit(tmp .. "/prefix.dcm", string.rep("\0", 128) .. "DICM" .. table.concat(bytes))
    fails(tmp .. "/prefix.dcm")
  end)

  it("rejects a file without PixelData", function()
    fails(fixture("bad_no_pixeldata"), "no PixelData element (not an image)")
  end)

  it("rejects zero rows, absurd sizes, too little pixel data and bad bits", function()
    fails(fixture("bad_zero_rows"), "empty image (0 rows x 41 columns)")
    fails(fixture("bad_huge"), "image too large (65535 rows x 65535 columns x 999999 frames x 1 samples")
    fails(fixture("bad_short_pixeldata"),
      "PixelData holds 1230 bytes, expected 1271 (31 rows x 41 columns x 1 frame x 1 samples x 1 bytes)")
    fails(fixture("bad_bits"), "inconsistent bits: BitsAllocated 8, BitsStored 12, HighBit 11")
    fails(fixture("bad_bits32"), "BitsAllocated 32 is not supported (8 or 16)") -- dose grids
    fails(fixture("bad_bits1"), "BitsAllocated 1 is not supported (8 or 16)")   -- segmentations
  end)

  it("rejects a transfer syntax nothing decodes, and JPEG 2000 that is not JPEG 2000", function()
    -- a JPEG-LS stream under the JPEG 2000 syntax: OpenJPEG's turn, and refused
    fails(fixture("bad_unsupported_syntax"), "cannot decode the JPEG 2000 (Lossless only) pixel data (frame 1): " ..
      "the frame is neither a JPEG 2000 codestream (no SOC and SIZ markers at its start) nor a JP2 file")
    -- JPEG 2000 Part 2 multi-component, patched in (same length)
    local s = slurp(fixture("bad_unsupported_syntax"))
    local at = assert(s:find("1.2.840.10008.1.2.4.90", 1, true))
    local path = tmp .. "/part2.dcm"
    spit(path, s:sub(1, at - 1) .. "1.2.840.10008.1.2.4.92" .. s:sub(at + 22))
    fails(path, "unsupported transfer syntax 1.2.840.10008.1.2.4.92 (JPEG 2000 Part 2 Multicomponent Image " ..
      "Compression (Lossless only)): DCMTK has no decoder for it")
  end)

  -- Overwrites bytes of the first fragment of the encapsulated pixel data
  -- (at offset `at`, negative from its end) in a copy of the fixture.
  local function corrupt(name, at, with)
    local s = slurp(fixture(name))
    local tag = assert(s:find("\224\127\16\0", 1, true)) -- (7fe0,0010) little endian
    local offsets = assert(s:find("\254\255\0\224", tag, true)) -- basic offset table item
    local frag = assert(s:find("\254\255\0\224", offsets + 8, true))
    local len = string.unpack("<I4", s, frag + 4)
    local p = at < 0 and frag + 8 + len + at or frag + 8 + at
    local path = ("%s/%s_corrupt_%d.dcm"):format(tmp, name, at)
    spit(path, s:sub(1, p - 1) .. with .. s:sub(p + #with))
    return path
  end

  it("rejects corrupt compressed streams", function()
    -- a stream that is not well formed up to its frame header never reaches DCMTK
    fails(corrupt("mono8_jpeg_lossless", 0, "\0\0\0\0"), "(the JPEG stream does not start with an SOI marker)")
    fails(corrupt("smooth8_jpeg_baseline", 0, "\0\0\0\0"), "corrupt JPEG Baseline pixel data (the JPEG stream")
    fails(corrupt("smooth8_jpeg_baseline", 2, "\255\1\0\85"), "unexpected JPEG marker 0xFF01 before the frame header")
    -- CharLS reports these by a C++ exception it catches itself (under
    -- AddressSanitizer this needs libstdc++ preloaded after libasan: make env ASAN=1)
    fails(corrupt("mono8_jpegls", 20, string.rep("\255", 40)), "cannot decode the JPEG-LS Lossless pixel data")
    fails(corrupt("mono16_jpegls", -100, string.rep("\255", 60)), "cannot decode the JPEG-LS Lossless pixel data")
    fails(corrupt("multiframe_rle", 0, "\0\0\0\0"), "Number of stripes in RLE header incorrect")
    -- damaged entropy-coded data, which the JPEG library only warns about
    fails(corrupt("smooth8_jpeg_baseline", -60, "\255\217"), "corrupt JPEG Baseline pixel data (Corrupt JPEG data")
    fails(corrupt("rgb_jpeg_ybr", -60, "\255\217"), "premature end of data segment")
    fails(corrupt("mono8_jpeg_lossless", -200, string.rep("\0", 20)), "corrupt JPEG Lossless")
  end)

  it("names DCMDICTPATH when DCMTK's data dictionary cannot be loaded", function()
    local code = ("local lpnx = require 'lpnx'; local ok, err = pcall(lpnx.dicom.read, %q); io.write(err)")
      :format(fixture("rgb"))
    local p = assert(io.popen("DCMDICTPATH=/nonexistent/dicom.dic lua5.4 -e " .. ("%q"):format(code) .. " 2>&1"))
    local out = p:read("a")
    p:close()
    assert.are.equal("lpnx.dicom.read: " .. fixture("rgb") .. ": DCMTK's data dictionary is not loaded;"
      .. " set DCMDICTPATH to the path of dicom.dic (Debian: /usr/share/libdcmtk17/dicom.dic)", out)
  end)

  it("keeps DCMTK's log off the terminal", function()
    local bytes = slurp(fixture("mono8_explicit"))
    spit(tmp .. "/quiet.dcm", bytes:sub(1, 700))
    local bad = corrupt("smooth8_jpeg_baseline", -60, "\255\217")
    local code = ("local lpnx = require 'lpnx'; assert(not pcall(lpnx.dicom.read, %q));"
      .. "assert(not pcall(lpnx.dicom.read, %q)); lpnx.dicom.read(%q)"):format(tmp .. "/quiet.dcm", bad,
      fixture("mono12s_dirty"))
    local p = assert(io.popen("lua5.4 -e " .. ("%q"):format(code) .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    assert.are.equal("", out)
  end)
end)

describe("lpnx.dicom.write", function()
  local tmp
  setup(function() tmp = helpers.tmpdir() end)
  teardown(function() helpers.rmdir(tmp) end)

  -- a (1,H,W) tensor of pattern values
  local function image(h, w, f)
    local rows = {}
    for r = 1, h do
      local row = {}
      for c = 1, w do row[c] = f(1, r - 1, c - 1) end
      rows[r] = row
    end
    return lpnx.tensor({rows})
  end

  local function dump(path)
    local p = assert(io.popen("dcmdump '" .. path .. "' 2>&1"))
    local out = p:read("a")
    p:close()
    return out
  end

  local function listing()
    local p = assert(io.popen("ls -A '" .. tmp .. "'"))
    local out = p:read("a")
    p:close()
    return out
  end

  it("writes 12-16-bit MONOCHROME1 DX images with a VOI window that read and present back", function()
    local path = tmp .. "/dx.dcm"
    local img = image(30, 41, function(_, r, c) return (r * 41 + c) * 3 end) -- 0..3687
    local uids = lpnx.dicom.write(path, img, {patient_id = "p-dx", pixel_spacing = {0.14, 0.14}},
                                  {jpeg = false, bits = 12, photometric = "MONOCHROME1", dx = true,
                                   window = {center = 1800, width = 3000}})
    assert.are.equal("1.2.840.10008.5.1.4.1.1.1.1", uids.sop_class_uid)
    local stored, meta = lpnx.dicom.read(path, {stored = true})
    assert.are.equal("MONOCHROME1", meta.photometric)
    assert.are.same({16, 12, 0}, {meta.bits_allocated, meta.bits_stored, meta.pixel_representation})
    assert.are.same({1800, 3000}, {meta.window_center, meta.window_width})
    assert.are.equal("DX", meta.modality)
    assert.is_true(stored:equal(img))
    local shown = lpnx.dicom.present(stored, meta)
    -- MONOCHROME1: the lowest values white, the highest dark
    assert.is_true(shown[1][1][1] > 0.9 and shown[1][30][41] < 0.1)
    assert.has_error(function() lpnx.dicom.write(tmp .. "/x.dcm", img, nil, {bits = 16}) end,
                     "bad argument #4 to 'write' (16-bit pixels are written uncompressed: pass jpeg = false)")
    assert.has_error(function() lpnx.dicom.write(tmp .. "/x.dcm", lpnx.zeros(3, 4, 4), nil,
                                                 {bits = 16, jpeg = false}) end,
                     "bad argument #2 to 'write' (16-bit, MONOCHROME1 and DX images are gray (1,H,W) or (H,W))")
    local bytes = lpnx.dicom.write(tmp .. "/m1.dcm", image(2, 2, p8), nil, {jpeg = false, photometric = "MONOCHROME1"})
    assert.are.equal(SC, bytes.sop_class_uid)
    local _, m1 = lpnx.dicom.read(tmp .. "/m1.dcm")
    assert.are.same({"MONOCHROME1", 8}, {m1.photometric, m1.bits_allocated})
  end)

  it("round-trips uncompressed 8-bit exactly, readable by dcmdump as Secondary Capture", function()
    local path = tmp .. "/plain.dcm"
    local img = image(30, 41, p8)
    local uids = lpnx.dicom.write(path, img, {patient_id = "p-17", sop_instance_uid = "1.2.3.4.5"}, {jpeg = false})
    assert.are.equal("1.2.3.4.5", uids.sop_instance_uid)
    assert.are.equal(SC, uids.sop_class_uid)
    local back, meta = lpnx.dicom.read(path)
    assert.are.same({1, 30, 41}, back:size())
    assert.are.equal(0, (compare(back, p8)))
    assert.are.equal(EXPLICIT, meta.transfer_syntax)
    assert.are.equal("MONOCHROME2", meta.photometric)
    assert.are.equal("CR", meta.modality)
    assert.are.equal("WSD", meta.conversion_type)
    assert.are.equal("p-17", meta.patient_id)
    local out = dump(path)
    assert.is_truthy(out:find("(0002,0010) UI =LittleEndianExplicit", 1, true), out)
    assert.is_truthy(out:find("(0008,0016) UI =SecondaryCaptureImageStorage", 1, true), out)
    assert.is_truthy(out:find("(0008,0018) UI [1.2.3.4.5]", 1, true), out)
    assert.is_truthy(out:find("(0008,0064) CS [WSD]", 1, true), out)
    assert.is_truthy(out:find("(0028,0004) CS [MONOCHROME2]", 1, true), out)
    assert.is_truthy(out:find("(0028,0101) US 8", 1, true), out)
    assert.is_falsy(out:find("E:", 1, true), out)
  end)

  it("writes JPEG baseline by default, within a lossy tolerance", function()
    local path = tmp .. "/jpeg.dcm"
    lpnx.dicom.write(path, image(30, 41, s8), {})
    local back, meta = lpnx.dicom.read(path)
    local worst, mean = compare(back, s8)
    -- measured: max 1, mean 0.03 (quality 95 on a smooth image)
    assert.is_true(mean < 0.1 and worst <= 2, ("mean %g, max %g"):format(mean, worst))
    assert.are.equal(JPEG_BASELINE, meta.transfer_syntax)
    local out = dump(path)
    assert.is_truthy(out:find("(0002,0010) UI =JPEGBaseline", 1, true), out)
    assert.is_truthy(out:find("(0008,0016) UI =SecondaryCaptureImageStorage", 1, true), out)
    assert.is_truthy(out:find("(0028,2110) CS [01]", 1, true), out) -- LossyImageCompression
    -- quality 100 is closer than quality 10
    lpnx.dicom.write(tmp .. "/q10.dcm", image(30, 41, p8), nil, {quality = 10})
    lpnx.dicom.write(tmp .. "/q100.dcm", image(30, 41, p8), nil, {quality = 100})
    local _, m10 = compare(lpnx.dicom.read(tmp .. "/q10.dcm"), p8)
    local _, m100 = compare(lpnx.dicom.read(tmp .. "/q100.dcm"), p8)
    assert.is_true(m100 < m10, ("%g %g"):format(m100, m10))
  end)

  it("writes the meta it is given and generates the missing UIDs", function()
    local path = tmp .. "/meta.dcm"
    local uids = lpnx.dicom.write(path, image(30, 41, p8)[1], {
      patient_id = "1.2.3-abc", patient_name = "Doe^Jane", patient_sex = "M", patient_age = "061Y",
      view_position = "AP", body_part_examined = "CHEST", modality = "DX", series_description = "view: AP",
      study_date = "20190115", study_instance_uid = "1.2.826.0.1.3680043.8.498.1",
      pixel_spacing = {0.168, 0.171},
    }, {jpeg = false})
    local _, meta = lpnx.dicom.read(path)
    for k, v in pairs {patient_id = "1.2.3-abc", patient_name = "Doe^Jane", patient_sex = "M", patient_age = "061Y",
                       view_position = "AP", body_part_examined = "CHEST", modality = "DX",
                       series_description = "view: AP", study_date = "20190115",
                       study_instance_uid = "1.2.826.0.1.3680043.8.498.1"} do
      assert.are.equal(v, meta[k], k)
    end
    assert.are.same({0.168, 0.171}, meta.pixel_spacing)
    for _, k in ipairs {"sop_instance_uid", "study_instance_uid", "series_instance_uid", "frame_of_reference_uid"} do
      assert.are.equal(uids[k], meta[k], k)
      assert.is_truthy(#uids[k] <= 64 and uids[k]:match("^[0-9][0-9.]*[0-9]$"), uids[k])
    end
    assert.are.equal("1.2.276.0.7230010.3.1.4.", uids.sop_instance_uid:sub(1, 24)) -- DCMTK's site root
    local again = lpnx.dicom.write(tmp .. "/meta2.dcm", image(2, 2, p8), nil, {jpeg = false})
    assert.are_not.equal(uids.sop_instance_uid, again.sop_instance_uid)
    assert.are_not.equal(again.series_instance_uid, again.sop_instance_uid)
  end)

  it("writes non-ASCII names as UTF-8 (ISO_IR 192)", function()
    local path = tmp .. "/utf8.dcm"
    local name = "M\u{fc}ller^J\u{fc}rgen" -- 13 characters, 15 bytes
    lpnx.dicom.write(path, lpnx.zeros(1, 1), {patient_name = name, patient_id = string.rep("\u{d6}", 64)})
    local _, meta = lpnx.dicom.read(path)
    assert.are.equal(name, meta.patient_name)
    assert.are.equal(string.rep("\u{d6}", 64), meta.patient_id)
    assert.are.equal("ISO_IR 192", meta.specific_character_set)
    lpnx.dicom.write(tmp .. "/ascii.dcm", lpnx.zeros(1, 1), {patient_name = "Doe^John"})
    local _, plain = lpnx.dicom.read(tmp .. "/ascii.dcm")
    assert.is_nil(plain.specific_character_set)
  end)

  it("round-trips the meta of a file it read", function()
    local img, meta = lpnx.dicom.read(fixture("mono8_explicit"))
    lpnx.dicom.write(tmp .. "/copy.dcm", img, meta, {jpeg = false})
    local back, m2 = lpnx.dicom.read(tmp .. "/copy.dcm")
    assert.are.equal(0, (compare(back, p8)))
    for _, k in ipairs {"sop_instance_uid", "study_instance_uid", "series_instance_uid", "frame_of_reference_uid",
                        "patient_id", "patient_sex", "patient_age", "view_position", "body_part_examined"} do
      assert.are.equal(meta[k], m2[k], k)
    end
    assert.are.same(meta.pixel_spacing, m2.pixel_spacing)
  end)

  it("writes the study's date, time and id, and a JPEG file that dciodvfy finds no error in #dciodvfy",
     function()
    local path = tmp .. "/study.dcm"
    lpnx.dicom.write(path, image(30, 41, p8), {study_date = "19010101", study_time = "000000.00", study_id = "7",
                                               patient_id = "p-1", patient_name = "p-1", view_position = "PA",
                                               body_part_examined = "CHEST"})
    local _, m = lpnx.dicom.read(path)
    assert.are.equal("19010101", m.study_date)
    assert.are.equal("000000.00", m.study_time)
    assert.are.equal("7", m.study_id)
    local text = dump(path)
    -- the lossy encoder's DERIVED, and a second value
    assert.matches("%[DERIVED\\PRIMARY%]%s+#%s+%d+, 2 ImageType", text)
    assert.has_error(function() lpnx.dicom.write(path, image(30, 41, p8), {study_time = "25:00"}) end,
                     "lpnx.dicom.write: " .. path
                     .. ": meta.study_time '25:00' is not a valid time (TM: HHMMSS.FFFFFF)")
    if os.execute("command -v dciodvfy > /dev/null 2>&1") ~= true then
      return pending("dciodvfy is not installed (make deps installs dicom3tools)")
    end
    local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS dciodvfy '" .. path .. "' 2>&1"))
    local out = p:read("a")
    p:close()
    assert.not_matches("\nError", "\n" .. out)
    assert.matches("SCImage", out, 1, true)
  end)

  it("rounds and clamps to 0..255", function()
    local path = tmp .. "/clamp.dcm"
    lpnx.dicom.write(path, lpnx.tensor({{-5, 300, 12.4, 12.6}, {0.49, 254.5, 1e9, -1e9}}), nil, {jpeg = false})
    assert.are.same({{{0, 255, 12, 13}, {0, 255, 255, 0}}}, lpnx.dicom.read(path):totable())
  end)

  it("checks its arguments", function()
    local path = tmp .. "/bad.dcm"
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 4, 5), {}) end,
      "bad argument #2 to 'write' (expected an image (1,H,W) or (H,W), or an RGB image (3,H,W), with H and W in "
      .. "1..65535, got (2x4x5))")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(0, 4), {}) end,
      "bad argument #2 to 'write' (expected an image (1,H,W) or (H,W), or an RGB image (3,H,W), with H and W in "
      .. "1..65535, got (0x4))")
    local nan = lpnx.zeros(2, 3)
    nan:set(0 / 0, 2, 3)
    assert.has_error(function() lpnx.dicom.write(path, nan, {}) end,
      "bad argument #2 to 'write' (image holds a non-finite value (nan) at row 2, column 3)")
    nan:set(-1 / 0, 1, 1)
    assert.has_error(function() lpnx.dicom.write(path, nan, {}) end,
      "bad argument #2 to 'write' (image holds a non-finite value (-inf) at row 1, column 1)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {patient_id = {}}) end,
      "bad argument #3 to 'write' (meta.patient_id: expected a string, got table)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {pixel_spacing = {1, -1}}) end,
      "bad argument #3 to 'write' (meta.pixel_spacing[2]: expected a positive number, got -1)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {}, {quality = 0}) end,
      "bad argument #4 to 'write' (quality must be an integer in 1..100, got 0)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {}, {jpeg = 1}) end,
      "bad argument #4 to 'write' (jpeg must be a boolean, got number)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {patient_sex = "female"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.patient_sex 'female' is not a valid code string"
      .. " (CS: up to 16 of A-Z 0-9 space _)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {sop_instance_uid = "1.2.abc"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.sop_instance_uid '1.2.abc' is not a valid UID"
      .. " (up to 64 digits and dots, no leading zeros)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {patient_age = "61"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.patient_age '61' is not a valid age string"
      .. " (AS: nnnD, nnnW, nnnM or nnnY)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {patient_id = string.rep("x", 65)}) end,
      "lpnx.dicom.write: " .. path .. ": meta.patient_id '" .. string.rep("x", 65)
      .. "' is not a valid long string (LO: up to 64 characters, no backslash)")
    assert.has_error(function() lpnx.dicom.write(path, lpnx.zeros(2, 2), {study_date = "2019-01-15"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.study_date '2019-01-15' is not a valid date (DA: YYYYMMDD)")
    local files = listing()
    assert.is_falsy(files:find("bad.dcm", 1, true), files)
    assert.is_falsy(files:find("-tmp.", 1, true), files)
  end)

  -- a (3,H,W) tensor of the rgb pattern
  local function rgb_image(h, w)
    local planes = {}
    for k = 1, 3 do
      local rows = {}
      for r = 1, h do
        local row = {}
        for c = 1, w do row[c] = rgb(k, r - 1, c - 1) end
        rows[r] = row
      end
      planes[k] = rows
    end
    return lpnx.tensor(planes)
  end

  -- what a node passes to write an overlay of source.dcm as a result object
  local function overlay_meta(source_meta)
    local m = {}
    for k, v in pairs(source_meta) do m[k] = v end
    m.sop_instance_uid = lpnx.dicom.derive_uid(source_meta.sop_instance_uid, "overlay")
    m.series_instance_uid = lpnx.dicom.derive_uid(source_meta.series_instance_uid, "overlay series")
    m.series_number, m.instance_number = 1002, "3"
    m.series_description = "Pneumothorax overlay (lpnx)"
    m.derivation_description = "Predicted pneumothorax outlined over the image"
    m.source = {sop_class_uid = source_meta.sop_class_uid, sop_instance_uid = source_meta.sop_instance_uid}
    m.burned_in_annotation = "YES"
    return m
  end

  it("writes an RGB image (3,H,W) as RGB Secondary Capture and reads back the same pixels", function()
    local path = tmp .. "/rgb.dcm"
    local img = rgb_image(30, 41)
    local uids = lpnx.dicom.write(path, img, {patient_id = "p-3"}, {jpeg = false})
    assert.are.equal(SC, uids.sop_class_uid)
    local back, meta = lpnx.dicom.read(path)
    assert.are.same({3, 30, 41}, back:size())
    assert.are.equal(0, (back - img):abs():max())
    assert.are.equal("RGB", meta.photometric)
    assert.are.equal(3, meta.samples_per_pixel)
    assert.are.equal(8, meta.bits_allocated)
    local text = dump(path)
    assert.matches("%(0028,0006%) US 0 ", text)          -- PlanarConfiguration: pixels interleaved
    assert.matches("%(0002,0010%) UI =LittleEndianExplicit", text)
    -- JPEG baseline: stored as YBR_FULL_422, read back close to the pixels
    lpnx.dicom.write(tmp .. "/rgb-jpeg.dcm", img, {}, {quality = 95})
    local jback, jmeta = lpnx.dicom.read(tmp .. "/rgb-jpeg.dcm")
    assert.are.equal("YBR_FULL_422", jmeta.photometric)
    assert.are.equal("1.2.840.10008.1.2.4.50", jmeta.transfer_syntax)
    assert.is_true((jback - img):abs():mean() < 4)
  end)

  it("writes a result derived from a source: its UIDs, series, source references, burned-in annotation", function()
    local source = tmp .. "/overlay-source.dcm"
    lpnx.dicom.write(source, image(30, 41, p8), {patient_id = "p-9", study_instance_uid = "2.25.71",
                                                 series_instance_uid = "2.25.72", sop_instance_uid = "2.25.73",
                                                 body_part_examined = "CHEST"}, {jpeg = false})
    local _, src = lpnx.dicom.read(source)
    local path = tmp .. "/overlay.dcm"
    local m = overlay_meta(src)
    local uids = lpnx.dicom.write(path, rgb_image(30, 41), m, {jpeg = false})
    assert.are.equal(m.sop_instance_uid, uids.sop_instance_uid)
    assert.are.equal(m.series_instance_uid, uids.series_instance_uid)
    assert.are.equal("2.25.71", uids.study_instance_uid)
    local _, back = lpnx.dicom.read(path)
    assert.are.equal("p-9", back.patient_id)
    assert.are.equal("1002", back.series_number)
    local text = dump(path)
    assert.matches("%(0008,0008%) CS %[DERIVED\\SECONDARY%]", text)
    assert.matches("%(0008,2111%) ST %[Predicted pneumothorax outlined over the image%]", text)
    assert.matches("%(0028,0301%) CS %[YES%]", text)
    assert.matches("%(0020,0013%) IS %[3%]", text)
    local _, refs = text:gsub("%(0008,1155%) UI %[2%.25%.73%]", "")
    assert.are.equal(2, refs)                           -- SourceImageSequence and ReferencedImageSequence
    assert.matches("%(0008,2112%) SQ", text)
    assert.matches("%(0008,1140%) SQ", text)
    -- written again: the same object
    assert.are.same(uids, lpnx.dicom.write(tmp .. "/overlay2.dcm", rgb_image(30, 41), overlay_meta(src),
                                           {jpeg = false}))
    -- a plain write keeps its old form
    local plain = dump(tmp .. "/overlay-source.dcm")
    assert.is_falsy(plain:find("(0008,2112)", 1, true))
    assert.is_falsy(plain:find("(0028,0301)", 1, true))
    assert.matches("%(0020,0011%) IS %[1%]", plain)
  end)

  it("dciodvfy finds no error in an RGB overlay derived from a chest X-ray, plain or JPEG #dciodvfy", function()
    if os.execute("command -v dciodvfy > /dev/null 2>&1") ~= true then
      return pending("dciodvfy is not installed (make deps installs dicom3tools)")
    end
    local source = tmp .. "/v-source.dcm"
    lpnx.dicom.write(source, image(30, 41, p8), {patient_id = "p-9", body_part_examined = "CHEST",
                                                 study_time = "101500", study_id = "4"}, {jpeg = false})
    local _, src = lpnx.dicom.read(source)
    for _, jpeg in ipairs {false, true} do
      local path = tmp .. "/v-overlay-" .. tostring(jpeg) .. ".dcm"
      lpnx.dicom.write(path, rgb_image(30, 41), overlay_meta(src), {jpeg = jpeg})
      local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS dciodvfy '" .. path .. "' 2>&1"))
      local out = p:read("a")
      p:close()
      assert.not_matches("\nError", "\n" .. out)
      assert.matches("SCImage", out, 1, true)
    end
  end)

  it("checks what a derived image says about its source", function()
    local path = tmp .. "/bad-derived.dcm"
    local img = rgb_image(4, 5)
    assert.has_error(function() lpnx.dicom.write(path, img, {burned_in_annotation = "MAYBE"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.burned_in_annotation 'MAYBE' is neither YES nor NO")
    assert.has_error(function() lpnx.dicom.write(path, img, {source = "2.25.1"}) end,
      "bad argument #3 to 'write' (meta.source: expected {sop_class_uid =, sop_instance_uid =} of the source "
      .. "image, got string)")
    assert.has_error(function() lpnx.dicom.write(path, img, {source = {sop_class_uid = SC}}) end,
      "bad argument #3 to 'write' (meta.source.sop_instance_uid is missing)")
    local bad_source = {source = {sop_class_uid = SC, sop_instance_uid = "x"}}
    assert.has_error(function() lpnx.dicom.write(path, img, bad_source) end,
      "lpnx.dicom.write: " .. path .. ": meta.source.sop_instance_uid 'x' is not a valid UID (up to 64 digits and "
      .. "dots, no leading zeros)")
    assert.has_error(function() lpnx.dicom.write(path, img, {series_number = "one"}) end,
      "lpnx.dicom.write: " .. path .. ": meta.series_number 'one' is not a valid integer string (IS)")
    local nan = lpnx.zeros(3, 2, 2)
    nan:set(0 / 0, 2, 1, 2)
    assert.has_error(function() lpnx.dicom.write(path, nan, {}) end,
      "bad argument #2 to 'write' (image holds a non-finite value (nan) at channel 2, row 1, column 2)")
    local files = listing()
    assert.is_falsy(files:find("bad-derived.dcm", 1, true), files)
    assert.is_falsy(files:find("-tmp.", 1, true), files)
  end)

  it("writes atomically: no file and no temp file after a failure, old file replaced on success", function()
    local dir = tmp .. "/atomic"
    os.execute("mkdir -p '" .. dir .. "/taken.dcm'")
    local ok, err = pcall(lpnx.dicom.write, dir .. "/taken.dcm", lpnx.zeros(4, 4), {}, {jpeg = false})
    assert.is_false(ok)
    assert.are.equal("lpnx.dicom.write: " .. dir .. "/taken.dcm: cannot write (Is a directory)", err)
    assert.has_error(function() lpnx.dicom.write(tmp .. "/nowhere/x.dcm", lpnx.zeros(4, 4), {}) end,
      "lpnx.dicom.write: " .. tmp .. "/nowhere/x.dcm: cannot create a temp file beside it (No such file or directory)")
    local p = assert(io.popen("ls -A '" .. dir .. "'"))
    assert.are.equal("taken.dcm\n", p:read("a"))
    p:close()
    local path = dir .. "/image.dcm"
    lpnx.dicom.write(path, lpnx.full({3, 3}, 7), {}, {jpeg = false})
    lpnx.dicom.write(path, lpnx.full({2, 5}, 9), {}, {jpeg = false})
    assert.are.same({{{9, 9, 9, 9, 9}, {9, 9, 9, 9, 9}}}, lpnx.dicom.read(path):totable())
    p = assert(io.popen("ls -A '" .. dir .. "'"))
    assert.are.equal("image.dcm\ntaken.dcm\n", p:read("a"))
    p:close()
  end)
end)
