-- lpnx.dicom.read on files as other software writes them: JPEG 2000 from
-- OpenJPEG's opj_compress (wrapped by pydicom) and from GDCM's gdcmconv,
-- JPEG baseline from Pillow, see spec/fixtures/gen/make_archive_fixtures.sh. Lossless files are held
-- to the pixel formulas (30 rows, 41 columns, r, c, f 0-based), lossy ones
-- to what pydicom 2.3 decodes, stored beside them as NAME.expected.
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"

local function fixture(name) return helpers.fixture("dicom_archive/" .. name .. ".dcm") end

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

local function p8(_, r, c) return (37 * r + 11 * c + (r * c) % 7) % 256 end
local function p12(_, r, c) return (131 * r + 71 * c + r * c) % 4096 end
local function p12s(k, r, c) return p12(k, r, c) - 2048 end
local function p16(_, r, c) return (2039 * r + 977 * c + 13 * r * c) % 65536 end
local function p16s(k, r, c) return p16(k, r, c) - 32768 end
local function rgb(k, r, c)
  if k == 1 then return 20 + 4 * c elseif k == 2 then return 30 + 5 * r else return 200 - 2 * c - 2 * r end
end
local function frame_of(f) return function(k, r, c) return (p8(k, r, c) + 50 * f) % 256 end end

-- The values pydicom decoded: int32 little endian, (channels, 30, 41).
local function expected(name)
  local s = slurp(helpers.fixture("dicom_archive/" .. name .. ".expected"))
  return function(k, r, c) return (string.unpack("<i4", s, 1 + 4 * (((k - 1) * 30 + r) * 41 + c))) end
end

-- Largest absolute difference between img (C,H,W) and expect.
local function worst(img, expect)
  local t = img:totable()
  local w = 0
  for k = 1, #t do
    for r = 1, #t[k] do
      for c = 1, #t[k][r] do w = math.max(w, math.abs(t[k][r][c] - expect(k, r - 1, c - 1))) end
    end
  end
  return w
end

local J2K_LOSSLESS, J2K = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"

describe("lpnx.dicom.read of JPEG 2000", function()
  -- name, expected values, transfer syntax, bits stored, pixel representation, channels
  local exact = {
    {"j2k_mono8", p8, J2K_LOSSLESS, 8, 0, 1},
    {"j2k_mono8_jp2", p8, J2K_LOSSLESS, 8, 0, 1},
    {"j2k_mono12", p12, J2K_LOSSLESS, 12, 0, 1},
    {"j2k_mono12_in_16_bits", p12, J2K_LOSSLESS, 12, 0, 1}, -- a 16-bit codestream whose values fit 12 bits
    {"j2k_mono16", p16, J2K_LOSSLESS, 16, 0, 1},
    {"j2k_mono16s", function(k, r, c) return p16s(k, r, c) * 2.5 - 1024 end, J2K_LOSSLESS, 16, 1, 1},
    {"j2k_mono12s_reversible", p12s, J2K, 12, 1, 1},
    {"j2k_rgb", rgb, J2K_LOSSLESS, 8, 0, 3},
    {"gdcm_j2k_mono16s", p16s, J2K_LOSSLESS, 16, 1, 1},
    {"j2k_mono8_lossy", expected("j2k_mono8_lossy"), J2K, 8, 0, 1},
    {"j2k_mono16_lossy", expected("j2k_mono16_lossy"), J2K, 16, 0, 1},
    {"j2k_rgb_lossy", expected("j2k_rgb_lossy"), J2K, 8, 0, 3},
  }
  for _, case in ipairs(exact) do
    local name, expect, ts, bits, signed, channels = table.unpack(case)
    it("reads " .. name .. " as " .. (name:find("lossy") and "pydicom does" or "written"), function()
      local img, meta = lpnx.dicom.read(fixture(name))
      assert.are.same({channels, 30, 41}, img:size())
      assert.are.equal(0, worst(img, expect))
      assert.are.equal(ts, meta.transfer_syntax)
      assert.are.equal(bits, meta.bits_stored)
      assert.are.equal(signed, meta.pixel_representation)
    end)
  end

  it("lossy files differ from their source (the fixtures are really lossy)", function()
    assert.is_true(worst(lpnx.dicom.read(fixture("j2k_mono8_lossy")), p8) > 2)
    assert.is_true(worst(lpnx.dicom.read(fixture("j2k_rgb_lossy")), rgb) > 2)
  end)

  it("reports a colour file as stored (YBR_RCT, YBR_ICT) and returns RGB", function()
    assert.are.equal("YBR_RCT", select(2, lpnx.dicom.read(fixture("j2k_rgb"))).photometric)
    assert.are.equal("YBR_ICT", select(2, lpnx.dicom.read(fixture("j2k_rgb_lossy"))).photometric)
  end)

  it("routes the HTJ2K syntaxes to OpenJPEG and names them (DCMTK 3.6.7 does not know them)", function()
    -- a Part 1 codestream under 1.2.840.10008.1.2.4.201 (see the generator)
    local img, meta = lpnx.dicom.read(fixture("htj2k_syntax_mono8"))
    assert.are.equal(0, worst(img, p8))
    assert.are.equal("1.2.840.10008.1.2.4.201", meta.transfer_syntax)
    assert.are.equal("HTJ2K (Lossless only)", meta.transfer_syntax_name)
  end)

  it("reads every frame of a multi-frame file by its basic offset table", function()
    for f = 1, 3 do
      local img, meta = lpnx.dicom.read(fixture("gdcm_j2k_multiframe"), {frame = f})
      assert.are.equal(0, worst(img, frame_of(f - 1)))
      assert.are.equal(f, meta.frame)
      assert.are.equal(3, meta.number_of_frames)
    end
  end)

  it("joins a codestream split over fragments, and finds frames without an offset table", function()
    assert.are.equal(0, worst(lpnx.dicom.read(fixture("j2k_mono16_fragments")), p16))
    -- frame 3 is a signed codestream in this unsigned data set: its two's
    -- complement bits read unsigned
    local function p16s_bits(k, r, c) return (p16(k, r, c) + 32768) % 65536 end
    for f, expect in ipairs {p16, p12, p16s_bits} do
      local img, meta = lpnx.dicom.read(fixture("j2k_frames_no_offsets"), {frame = f})
      assert.are.equal(0, worst(img, expect), "frame " .. f)
      assert.are.equal(3, meta.number_of_frames)
    end
  end)

  it("reads an unsigned codestream under PixelRepresentation 1 as two's complement, as pydicom does", function()
    local img = lpnx.dicom.read(fixture("j2k_pixelrep_mismatch"))
    assert.are.equal(0, worst(img, expected("j2k_pixelrep_mismatch")))
    assert.are.equal(0, worst(img, function(k, r, c)
      local v = p12(k, r, c)
      return v >= 2048 and v - 4096 or v
    end))
  end)
end)

describe("lpnx.dicom.read of 8-bit JPEG (libjpeg-turbo)", function()
  -- Pillow wrote the JPEG streams; dcmdjpeg (DCMTK's IJG decoder) wrote the
  -- uncompressed twins. lpnx decodes these with libjpeg-turbo and must give
  -- the very same pixels, grey, 4:2:0 colour, and every frame.
  for _, name in ipairs {"jpeg_mono8", "jpeg_ybr420", "jpeg_mono8_frames"} do
    it("reads " .. name .. " exactly as dcmdjpeg decodes it", function()
      local _, meta = lpnx.dicom.read(fixture(name))
      assert.are.equal("1.2.840.10008.1.2.4.50", meta.transfer_syntax)
      for f = 1, meta.number_of_frames do
        local img = lpnx.dicom.read(fixture(name), {frame = f})
        local twin, twin_meta = lpnx.dicom.read(fixture(name .. "_dcmdjpeg"), {frame = f})
        assert.are.equal("1.2.840.10008.1.2.1", twin_meta.transfer_syntax)
        assert.are.same(twin:size(), img:size())
        assert.are.equal(0, helpers.max_diff(img, twin))
      end
    end)
  end

  it("reads the frames of a multi-frame file apart", function()
    local a = lpnx.dicom.read(fixture("jpeg_mono8_frames"), {frame = 1})
    local b = lpnx.dicom.read(fixture("jpeg_mono8_frames"), {frame = 3})
    assert.is_true(helpers.max_diff(a, b) > 20 and (a - b):abs():mean() > 5)
  end)
end)

describe("lpnx.dicom.read of bad JPEG 2000", function()
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

  -- A copy of the fixture with its first fragment's bytes from `at`
  -- (negative: from its end) replaced by `with`, or cut there when with is nil.
  local function damaged(name, at, with)
    local s = slurp(fixture(name))
    local tag = assert(s:find("\224\127\16\0", 1, true)) -- (7fe0,0010) little endian
    local offsets = assert(s:find("\254\255\0\224", tag, true)) -- basic offset table item
    local frag = assert(s:find("\254\255\0\224", offsets + 8, true))
    local len = string.unpack("<I4", s, frag + 4)
    local p = at < 0 and frag + 8 + len + at or frag + 8 + at
    local path = ("%s/%s_%d.dcm"):format(tmp, name, at)
    spit(path, s:sub(1, p - 1) .. (with or "") .. s:sub(p + #(with or "")))
    return path
  end

  it("checks the codestream against Rows, Columns, SamplesPerPixel and BitsStored", function()
    fails(fixture("bad_j2k_size"), "cannot decode the JPEG 2000 (Lossless only) pixel data (frame 1): " ..
      "the JPEG 2000 codestream is 30 x 41 with 1 component; the data set declares 29 rows x 41 columns x 1 sample")
    fails(fixture("bad_j2k_ybr422"), "PhotometricInterpretation 'YBR_FULL_422' does not fit JPEG 2000 (Lossless " ..
      "only) pixel data (its components are full size)")
    fails(fixture("bad_j2k_bits"),
      "the JPEG 2000 samples have 16 bits and a value (4885) outside BitsStored 12 (PixelRepresentation 0)")
  end)

  it("refuses a frame above the size limit before giving it memory", function()
    -- j2k_mono8 with Rows, Columns and the codestream's SIZ (image and tile
    -- size) all made 20000: 4e8 values, more than 2^28
    local s = slurp(fixture("j2k_mono8"))
    local big = string.pack("<I2", 20000)
    s = s:gsub("%(\0\16\0US\2\0..", "(\0\16\0US\2\0" .. big, 1):gsub("%(\0\17\0US\2\0..", "(\0\17\0US\2\0" .. big, 1)
    local siz = assert(s:find("\255\79\255\81", 1, true))
    local size = string.pack(">I4I4", 20000, 20000)
    s = s:sub(1, siz + 7) .. size .. s:sub(siz + 16, siz + 23) .. size .. s:sub(siz + 32)
    local path = tmp .. "/big.dcm"
    spit(path, s)
    fails(path, "JPEG 2000 frame too large to decode (20000 x 20000 x 1 values, more than 268435456)")
  end)

  it("refuses damaged codestreams with a reason", function()
    fails(damaged("j2k_mono8", 0, "\0\0\0\0"), "neither a JPEG 2000 codestream")
    fails(damaged("j2k_mono8", 4, "\255\255\255\255\255\255\255\255"), "cannot read the JPEG 2000 header")
    -- (bytes changed inside the coded data, past the markers, decode into
    -- a wrong image without a word, in lpnx as in every OpenJPEG reader:
    -- JPEG 2000 carries no checksum)
    fails(damaged("j2k_mono8_jp2", 0, "\0\0\0\12jP  \13\10\135\10\0\0\0\0"), "JPEG 2000")
  end)

  it("refuses codestreams cut anywhere, and never crashes on one", function()
    local s = slurp(fixture("j2k_mono12"))
    local tag = assert(s:find("\224\127\16\0", 1, true))
    local offsets = assert(s:find("\254\255\0\224", tag, true))
    local frag = assert(s:find("\254\255\0\224", offsets + 8, true))
    local len = string.unpack("<I4", s, frag + 4)
    local start = frag + 8
    for keep = 0, len - 1, 37 do
      -- the fragment shortened to `keep` bytes, its item length and the
      -- end of the file following
      local cut = s:sub(1, frag + 3) .. string.pack("<I4", keep) .. s:sub(start, start + keep - 1) ..
        s:sub(start + len)
      local path = ("%s/cut_%d.dcm"):format(tmp, keep)
      spit(path, cut)
      fails(path)
    end
  end)
end)

describe("lpnx.dicom.read of a file whose meta header lies about its encoding", function()
  -- pydicom writes these (see the generator) and reads them back, with a
  -- warning, by switching encodings; DCMTK stops at "Unknown Tag & Data"
  -- and lpnx reads the data set again in the encoding it is written in
  local function expected32(name, columns)
    local s = slurp(helpers.fixture("dicom_archive/" .. name .. ".expected"))
    return function(k, r, c) return (string.unpack("<i4", s, 1 + 4 * (((k - 1) * 32 + r) * columns + c))) end
  end

  it("reads JPEG Baseline declared over an implicit VR data set as pydicom does", function()
    local img, meta = lpnx.dicom.read(fixture("lie_implicit_data_set"))
    assert.are.same({1, 32, 32}, img:size())
    assert.are.equal(0, worst(img, expected32("lie_implicit_data_set", 32)))
    assert.are.equal("1.2.840.10008.1.2.4.50", meta.transfer_syntax)
    assert.are.equal("JPEG Baseline", meta.transfer_syntax_name)
  end)

  it("reads implicit VR declared over an explicit VR data set as pydicom does", function()
    local img, meta = lpnx.dicom.read(fixture("lie_explicit_data_set"))
    assert.are.equal(0, worst(img, expected32("lie_explicit_data_set", 32)))
    assert.are.equal("1.2.840.10008.1.2", meta.transfer_syntax)
  end)

  it("names the lie when the data set does not read in the other encoding either", function()
    local tmp = helpers.tmpdir()
    local s = slurp(fixture("lie_implicit_data_set"))
    local path = tmp .. "/cut.dcm"
    spit(path, s:sub(1, #s - 300))
    local ok, err = pcall(lpnx.dicom.read, path)
    helpers.rmdir(tmp)
    assert.is_false(ok)
    assert.is_truthy(err:find("cut.dcm: the file meta header declares transfer syntax 1.2.840.10008.1.2.4.50 " ..
      "(JPEG Baseline), whose data set is explicit VR, but the data set is written in implicit VR (its first " ..
      "element, (0008,0008), has no VR); it does not read in implicit VR either: ", 1, true), err)
  end)
end)
