-- lpnx.dicom.write_seg / read_seg: DICOM Segmentation objects made with
-- DCMTK's dcmseg, read back by lpnx's own parser, by DCMTK's image
-- renderer (dcm2pnm) and checked by an independent validator (dicom3tools'
-- dciodvfy). Specs tagged #dciodvfy and #dcmtk run the external programs
-- (installed by make deps) and are pending when they are missing.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
local SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
local H, W = 30, 41                           -- 1230 pixels: the packed bits end inside a byte

-- The mask pattern of these specs (r, c 1-based).
local function pattern(r, c)
  return ((r * 7 + c * 3) % 5 == 0 or (r > 10 and r < 20 and c > 5 and c < 30)) and 1 or 0
end

local function make_mask(hgt, wid, f)
  local rows = {}
  for r = 1, hgt do
    local row = {}
    for c = 1, wid do row[c] = f(r, c) end
    rows[r] = row
  end
  return lpnx.tensor(rows)
end

local quote, run, have, files_in = h.quote, h.run_plain, h.have, h.files_in

describe("lpnx.dicom.write_seg and read_seg", function()
  local dir, source, meta, mask
  setup(function()
    dir = h.tmpdir()
    -- a lossy (JPEG) source image with a patient, a study and a frame of reference
    source = dir .. "/source.dcm"
    local img = lpnx.rand(1, H, W) * 255
    lpnx.dicom.write(source, img, {patient_id = "P-0042", patient_name = "Doe^Jane", patient_sex = "F",
                                   patient_age = "047Y", study_date = "20240131", pixel_spacing = {0.14, 0.15},
                                   study_instance_uid = "2.25.1001", series_instance_uid = "2.25.1002",
                                   sop_instance_uid = "2.25.1003", frame_of_reference_uid = "2.25.1004"},
                     {jpeg = true, quality = 90})
    local _
    _, meta = lpnx.dicom.read(source)
    mask = make_mask(H, W, pattern)
  end)
  teardown(function() h.rmdir(dir) end)

  it("lpnx.dicom.read gives what a segmentation needs to refer to its source", function()
    assert.are.equal("2.25.1001", meta.study_instance_uid)
    assert.are.equal("2.25.1002", meta.series_instance_uid)
    assert.are.equal("2.25.1003", meta.sop_instance_uid)
    assert.are.equal(SC_CLASS, meta.sop_class_uid)
    assert.are.equal("2.25.1004", meta.frame_of_reference_uid)
    assert.are.equal("01", meta.lossy_image_compression)
    assert.are.equal("ISO_10918_1", meta.lossy_image_compression_method)
    assert.are.same({0.14, 0.15}, meta.pixel_spacing)
    assert.is_nil(meta.pixel_spacing_from_imager)
    assert.are.equal("1", meta.series_number)
  end)

  it("a segmentation of a known mask reads back equal, pixel for pixel, with the source's UIDs", function()
    local path = dir .. "/seg.dcm"
    local uids = lpnx.dicom.write_seg(path, mask, meta)
    assert.are.equal(SEG_CLASS, uids.sop_class_uid)
    assert.are.equal("2.25.1001", uids.study_instance_uid)
    assert.are.equal("2.25.1004", uids.frame_of_reference_uid)
    assert.are_not.equal("2.25.1002", uids.series_instance_uid)      -- a new series in the source's study
    local back, info = lpnx.dicom.read_seg(path)
    assert.are.same({1, H, W}, back:size())
    assert.is_true(back:view(H, W):equal(mask))
    assert.are.equal(mask:sum(), back:sum())
    -- the object and its references
    assert.are.equal(SEG_CLASS, info.sop_class_uid)
    assert.are.equal("SEG", info.modality)
    assert.are.equal("BINARY", info.segmentation_type)
    assert.are.equal(uids.sop_instance_uid, info.sop_instance_uid)
    assert.are.equal(uids.series_instance_uid, info.series_instance_uid)
    assert.are.equal("2.25.1001", info.study_instance_uid)
    assert.are.equal("2.25.1004", info.frame_of_reference_uid)
    assert.are.same({{sop_class_uid = SC_CLASS, sop_instance_uid = "2.25.1003", series_instance_uid = "2.25.1002"}},
                    info.references)
    assert.are.equal("P-0042", info.patient_id)
    assert.are.equal("Doe^Jane", info.patient_name)
    assert.are.equal("F", info.patient_sex)
    assert.are.equal("20240131", info.study_date)
    assert.are.same({H, W, 1}, {info.rows, info.columns, info.number_of_frames})
    -- the segment: label, codes, algorithm, colour
    assert.are.equal(1, info.segment)
    assert.are.equal("Pneumothorax", info.segment_label)
    assert.are.equal(1, #info.segments)
    local s = info.segments[1]
    assert.are.equal(1, s.number)
    assert.are.equal(1, s.frames)
    assert.are.same({code = "49755003", scheme = "SCT", meaning = "Morphologically Altered Structure"}, s.category)
    assert.are.same({code = "36118008", scheme = "SCT", meaning = "Pneumothorax"}, s.type)
    assert.are.equal("AUTOMATIC", s.algorithm_type)
    assert.are.equal("lpnx", s.algorithm_name)
    for k, v in ipairs {1, 0, 0} do assert.is_true(math.abs(s.color[k] - v) < 0.01, "colour " .. k) end
    -- a frame of reference, so no Pixel Measures (see dicom_seg.h)
    assert.is_nil(info.pixel_spacing)
  end)

  it("options set the label, codes, colour, series and instance; without a frame of reference the "
     .. "pixel spacing is kept", function()
    local path = dir .. "/custom.dcm"
    local m2 = {}
    for k, v in pairs(meta) do m2[k] = v end
    m2.frame_of_reference_uid = nil
    local uids = lpnx.dicom.write_seg(path, mask:view(1, H, W), m2, {
      label = "Left apex", description = "reviewed", category = {code = "M-01000", scheme = "SRT",
                                                                  meaning = "Morphologically Altered Structure"},
      type = {code = "36118008", scheme = "SCT", meaning = "Pneumothorax"}, color = {0, 1, 0},
      series_instance_uid = "2.25.777", sop_instance_uid = "2.25.778", instance_number = 3,
      algorithm_name = "lpnx-test", algorithm_version = "9.9"})
    assert.are.same({"2.25.777", "2.25.778", ""},
                    {uids.series_instance_uid, uids.sop_instance_uid, uids.frame_of_reference_uid or ""})
    local back, info = lpnx.dicom.read_seg(path, {segment = 1})
    assert.is_true(back:view(H, W):equal(mask))
    assert.is_nil(info.frame_of_reference_uid)
    assert.are.same({0.14, 0.15}, info.pixel_spacing)
    local s = info.segments[1]
    assert.are.equal("Left apex", s.label)
    assert.are.equal("reviewed", s.description)
    assert.are.equal("lpnx-test", s.algorithm_name)
    assert.are.same({code = "M-01000", scheme = "SRT", meaning = "Morphologically Altered Structure"}, s.category)
    for k, v in ipairs {0, 1, 0} do assert.is_true(math.abs(s.color[k] - v) < 0.01, "colour " .. k) end
  end)

  it("an empty mask makes an object with an empty segment", function()
    local path = dir .. "/empty.dcm"
    lpnx.dicom.write_seg(path, lpnx.zeros(H, W), meta)
    local back, info = lpnx.dicom.read_seg(path)
    assert.are.same({1, H, W}, back:size())
    assert.are.equal(0, back:sum())
    assert.are.equal(1, info.segments[1].frames)
    assert.are.equal("Pneumothorax", info.segment_label)
  end)

  it("names in UTF-8 keep their character set", function()
    local src = dir .. "/utf8.dcm"
    lpnx.dicom.write(src, lpnx.zeros(1, 8, 10), {patient_name = "Müller^Jörg", patient_id = "Ä-1"}, {jpeg = false})
    local _, m = lpnx.dicom.read(src)
    assert.are.equal("ISO_IR 192", m.specific_character_set)
    lpnx.dicom.write_seg(dir .. "/utf8-seg.dcm", lpnx.ones(8, 10), m, {content_creator = "Ødegård^Åse"})
    local _, info = lpnx.dicom.read_seg(dir .. "/utf8-seg.dcm")
    assert.are.same({"Müller^Jörg", "Ä-1"}, {info.patient_name, info.patient_id})
  end)

  it("a detector's spacing (ImagerPixelSpacing) is reported as such and not written as Pixel Measures #dcmtk",
     function()
    if not have("dcmodify") then return pending("dcmodify is not installed (make deps installs dcmtk)") end
    local src = dir .. "/imager.dcm"
    lpnx.dicom.write(src, lpnx.zeros(1, 8, 10), {pixel_spacing = {0.3, 0.3}}, {jpeg = false})
    local out, code = run(("dcmodify -nb -e '(0028,0030)' -i '(0018,1164)=0.2\\0.25' %s"):format(quote(src)))
    assert.are.equal(0, code, out)
    local _, m = lpnx.dicom.read(src)
    assert.are.same({0.2, 0.25}, m.pixel_spacing)
    assert.are.same({0.2, 0.25}, m.imager_pixel_spacing)
    assert.is_true(m.pixel_spacing_from_imager)
    m.frame_of_reference_uid = nil
    lpnx.dicom.write_seg(dir .. "/imager-seg.dcm", lpnx.ones(8, 10), m)
    local _, info = lpnx.dicom.read_seg(dir .. "/imager-seg.dcm")
    assert.is_nil(info.pixel_spacing)
  end)

  it("the file carries the algorithm, the lossy history of its source and its source reference #dcmtk", function()
    if not have("dcmdump") then return pending("dcmdump is not installed (make deps installs dcmtk)") end
    local path = dir .. "/dump.dcm"
    lpnx.dicom.write_seg(path, mask, meta)
    local out, code = run("dcmdump " .. quote(path))
    assert.are.equal(0, code, out)
    for _, line in ipairs {
      "(0008,0060) CS [SEG]", "(0062,0001) CS [BINARY]", "(0062,0008) CS [AUTOMATIC]", "(0062,0009) LO [lpnx]",
      "(0066,0036) LO [lpnx]", "(0066,0031) LO [" .. lpnx.version .. "]", "(0018,1020) LO [" .. lpnx.version .. "]",
      "(0028,0100) US 1", "(0028,2110) CS [01]", "(0028,2114) CS [ISO_10918_1]", "(0020,0052) UI [2.25.1004]",
      "(0008,1155) UI [2.25.1003]", "(0020,000d) UI [2.25.1001]", "(0008,0100) SH [113076]",
      "(0008,0100) SH [121322]", "(0070,0080) CS [PNEUMOTHORAX]",
    } do
      assert.is_truthy(out:find(line, 1, true), line .. " not in the dump")
    end
    -- without the attribute, the source's lossy transfer syntax (JPEG baseline) says it all the same
    local bare = {}
    for k, v in pairs(meta) do bare[k] = v end
    for _, k in ipairs {"lossy_image_compression", "lossy_image_compression_method", "lossy_image_compression_ratio"} do
      bare[k] = nil
    end
    lpnx.dicom.write_seg(path, mask, bare)
    out = run("dcmdump " .. quote(path))
    assert.is_truthy(out:find("(0028,2110) CS [01]", 1, true), out)
    assert.is_truthy(out:find("(0028,2114) CS [ISO_10918_1]", 1, true), out)
    assert.is_falsy(out:find("(0028,2112)", 1, true), out)
  end)

  it("DCMTK's own renderer (dcm2pnm) reads the same pixels #dcmtk", function()
    if not have("dcm2pnm") then return pending("dcm2pnm is not installed (make deps installs dcmtk)") end
    local path, pgm = dir .. "/render.dcm", dir .. "/render.pgm"
    lpnx.dicom.write_seg(path, mask, meta)
    local out, code = run(("dcm2pnm --write-raw-pnm %s %s"):format(quote(path), quote(pgm)))
    assert.are.equal(0, code, out)
    local f = assert(io.open(pgm, "rb"))
    local bytes = f:read("a")
    f:close()
    local header = bytes:match("^P5%s+%d+%s+%d+%s+%d+%s")
    assert.are.equal(("P5\n%d %d\n255\n"):format(W, H), header)
    local body = bytes:sub(#header + 1)
    assert.are.equal(H * W, #body)
    local differ = 0
    for r = 1, H do
      for c = 1, W do
        local v = body:byte((r - 1) * W + c) > 0 and 1 or 0
        if v ~= pattern(r, c) then differ = differ + 1 end
      end
    end
    assert.are.equal(0, differ)
  end)

  it("dciodvfy finds no error in a segmentation with and without a frame of reference, and in an empty one "
     .. "#dciodvfy", function()
    if not have("dciodvfy") then return pending("dciodvfy is not installed (make deps installs dicom3tools)") end
    local no_for = {}
    for k, v in pairs(meta) do no_for[k] = v end
    no_for.frame_of_reference_uid = nil
    local cases = {{"with-for.dcm", mask, meta}, {"without-for.dcm", mask, no_for},
                   {"empty.dcm", lpnx.zeros(H, W), meta}}
    for _, case in ipairs(cases) do
      local path = dir .. "/v-" .. case[1]
      lpnx.dicom.write_seg(path, case[2], case[3])
      local out = run("dciodvfy " .. quote(path))
      assert.is_truthy(out:find("Segmentation", 1, true), case[1] .. ": the IOD was not recognised:\n" .. out)
      assert.is_falsy(out:find("Error", 1, true), case[1] .. ":\n" .. out)
    end
  end)

  it("read_seg reads a segmentation written by another tool: two segments, frames packed across bytes, "
     .. "per-frame and shared segment identification, FRACTIONAL #dcmtk", function()
    if not have("dump2dcm") then return pending("dump2dcm is not installed (make deps installs dcmtk)") end
    local fh, fw = 5, 7                                   -- 35 bits a frame: frame 2 starts at bit 3 of byte 5
    local function f1(r, c) return (r + c) % 3 == 0 and 1 or 0 end
    local function f2(r, c) return (r == 2 or c == 6) and 1 or 0 end
    local bits = {}
    for _, f in ipairs {f1, f2} do
      for r = 1, fh do for c = 1, fw do bits[#bits + 1] = f(r, c) end end
    end
    local bytes = {}
    for i, b in ipairs(bits) do
      local k = (i - 1) // 8 + 1
      bytes[k] = (bytes[k] or 0) | (b << ((i - 1) % 8))
    end
    if #bytes % 2 == 1 then bytes[#bytes + 1] = 0 end
    local raw = dir .. "/two.raw"
    local out = assert(io.open(raw, "wb"))
    out:write(string.char(table.unpack(bytes)))
    out:close()
    local function item(tag_lines)
      return "(fffe,e000) na (Item with undefined length)\n" .. table.concat(tag_lines, "\n")
             .. "\n(fffe,e00d) na (ItemDelimitationItem)\n"
    end
    local function seq(tag, items)
      return tag .. " SQ (Sequence with undefined length)\n" .. table.concat(items)
             .. "(fffe,e0dd) na (SequenceDelimitationItem)\n"
    end
    local function code(tag, v, s, m)
      return seq(tag, {item {("(0008,0100) SH [%s]"):format(v), ("(0008,0102) SH [%s]"):format(s),
                             ("(0008,0104) LO [%s]"):format(m)}})
    end
    local function segment(n, label)
      return item {("(0062,0004) US %d"):format(n), ("(0062,0005) LO [%s]"):format(label),
                   "(0062,0008) CS [MANUAL]",
                   code("(0062,0003)", "85756007", "SCT", "Tissue"), code("(0062,000f)", "39607008", "SCT", "Lung")}
    end
    local function frame(n)
      return item {seq("(0062,000a)", {item {("(0062,000b) US %d"):format(n)}})}
    end
    local head = table.concat({
      "(0002,0010) UI =LittleEndianExplicit", "(0008,0016) UI =SegmentationStorage",
      "(0008,0018) UI [2.25.5001]", "(0008,0060) CS [SEG]", "(0020,000d) UI [2.25.5002]",
      "(0020,000e) UI [2.25.5003]", "(0028,0002) US 1", "(0028,0004) CS [MONOCHROME2]",
      ("(0028,0010) US %d"):format(fh), ("(0028,0011) US %d"):format(fw)}, "\n") .. "\n"
    local dump = dir .. "/two.dump"
    out = assert(io.open(dump, "w"))
    out:write(head, "(0028,0008) IS [2]\n(0028,0100) US 1\n(0028,0101) US 1\n(0028,0102) US 0\n",
              "(0062,0001) CS [BINARY]\n",
              seq("(0062,0002)", {segment(1, "first"), segment(2, "second")}),
              seq("(0008,1115)", {item {seq("(0008,114a)", {item {"(0008,1150) UI =CTImageStorage",
                                                                  "(0008,1155) UI [2.25.5009]"}}),
                                        "(0020,000e) UI [2.25.5008]"}}),
              seq("(5200,9230)", {frame(2), frame(1)}),   -- frame 1 is segment 2, frame 2 segment 1
              "(7fe0,0010) OB =" .. raw .. "\n")
    out:close()
    local text, code_ = run(("dump2dcm -q %s %s"):format(quote(dump), quote(dir .. "/two.dcm")))
    assert.are.equal(0, code_, text)
    local one, info = lpnx.dicom.read_seg(dir .. "/two.dcm", {segment = 1})
    local two = lpnx.dicom.read_seg(dir .. "/two.dcm", {segment = 2})
    assert.is_true(one:view(fh, fw):equal(make_mask(fh, fw, f2)))
    assert.is_true(two:view(fh, fw):equal(make_mask(fh, fw, f1)))
    assert.are.same({"first", "second"}, {info.segments[1].label, info.segments[2].label})
    assert.are.same({1, 1}, {info.segments[1].frames, info.segments[2].frames})
    assert.are.equal("MANUAL", info.segments[1].algorithm_type)
    assert.are.same({{sop_class_uid = "1.2.840.10008.5.1.4.1.1.2", sop_instance_uid = "2.25.5009",
                      series_instance_uid = "2.25.5008"}}, info.references)
    assert.has_error(function() lpnx.dicom.read_seg(dir .. "/two.dcm", {segment = 3}) end,
                     "lpnx.dicom.read_seg: " .. dir .. "/two.dcm: no segment 3 (the file has segments 1, 2)")

    -- FRACTIONAL, 8 bits, the segment named in the shared functional groups
    local values = {}
    for i = 1, fh * fw do values[i] = (i * 37) % 201 end
    raw = dir .. "/frac.raw"
    out = assert(io.open(raw, "wb"))
    out:write(string.char(table.unpack(values)), fh * fw % 2 == 1 and "\0" or "")
    out:close()
    dump = dir .. "/frac.dump"
    out = assert(io.open(dump, "w"))
    out:write(head, "(0028,0100) US 8\n(0028,0101) US 8\n(0028,0102) US 7\n",
              "(0062,0001) CS [FRACTIONAL]\n(0062,000e) US 200\n(0062,0010) CS [PROBABILITY]\n",
              seq("(0062,0002)", {segment(4, "probability")}), seq("(5200,9229)", {frame(4)}),
              "(7fe0,0010) OB =" .. raw .. "\n")
    out:close()
    text, code_ = run(("dump2dcm -q %s %s"):format(quote(dump), quote(dir .. "/frac.dcm")))
    assert.are.equal(0, code_, text)
    local p, finfo = lpnx.dicom.read_seg(dir .. "/frac.dcm")
    assert.are.equal("FRACTIONAL", finfo.segmentation_type)
    assert.are.equal(4, finfo.segment)
    assert.are.equal(200, finfo.max_fractional_value)
    local flat = p:view(-1):totable()
    for i = 1, fh * fw do assert.is_true(math.abs(flat[i] - values[i] / 200) < 1e-6, "pixel " .. i) end
  end)
end)

describe("lpnx.dicom.write_seg and read_seg refuse bad input", function()
  local dir, meta
  setup(function()
    dir = h.tmpdir()
    lpnx.dicom.write(dir .. "/source.dcm", lpnx.zeros(1, 8, 10), {study_instance_uid = "2.25.11",
                     series_instance_uid = "2.25.12", sop_instance_uid = "2.25.13"}, {jpeg = false})
    local _
    _, meta = lpnx.dicom.read(dir .. "/source.dcm")
  end)
  teardown(function() h.rmdir(dir) end)

  local function copy(t, changes)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    for k, v in pairs(changes) do c[k] = v end
    return c
  end

  it("names the argument and what was wrong", function()
    local path = dir .. "/x.dcm"
    local m = lpnx.zeros(8, 10)
    assert.has_error(function() lpnx.dicom.write_seg(path, lpnx.full({8, 10}, 0.5), meta) end,
                     "bad argument #2 to 'write_seg' (mask holds 0.5 at row 1, column 1; expected 0 or 1 "
                     .. "(threshold probabilities first))")
    assert.has_error(function() lpnx.dicom.write_seg(path, lpnx.zeros(2, 8, 10), meta) end,
                     "bad argument #2 to 'write_seg' (expected a mask (H,W) or (1,H,W) with H and W in 1..65535, "
                     .. "got (2x8x10))")
    assert.has_error(function() lpnx.dicom.write_seg(path, lpnx.zeros(10, 8), meta) end,
                     "bad argument #2 to 'write_seg' (mask is 10x8 but the source image is 8x10 (rows x columns))")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, "meta") end,
                     "bad argument #3 to 'write_seg' (expected the source image's meta table (as lpnx.dicom.read "
                     .. "returns it), got string)")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, copy(meta, {study_instance_uid = false})) end,
                     "bad argument #3 to 'write_seg' (source_meta.study_instance_uid: expected a string, got boolean)")
    local no_series = copy(meta, {})
    no_series.series_instance_uid = nil
    assert.has_error(function() lpnx.dicom.write_seg(path, m, no_series) end,
                     "bad argument #3 to 'write_seg' (source_meta.series_instance_uid is missing: a segmentation "
                     .. "references its source image by SOP class, SOP instance, study and series UID "
                     .. "(lpnx.dicom.read returns them))")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, copy(meta, {rows = 8.5})) end,
                     "bad argument #3 to 'write_seg' (source_meta.rows: expected an integer in 1..65535, got 8.5)")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, meta, {colour = {1, 0, 0}}) end,
                     "bad argument #4 to 'write_seg' (unknown option 'colour' (expected one of label, description, "
                     .. "category, type, algorithm_name, algorithm_version, color, series_description, series_number, "
                     .. "instance_number, series_instance_uid, sop_instance_uid, content_label, content_description, "
                     .. "content_creator, manufacturer, model_name, device_serial_number))")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, meta, {type = {code = "36118008", scheme = "SCT"}}) end,
                     "bad argument #4 to 'write_seg' (opts.type: needs code, scheme and meaning (e.g. {code = "
                     .. "\"36118008\", scheme = \"SCT\", meaning = \"Pneumothorax\"}))")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, meta, {color = {1, 2, 0}}) end,
                     "bad argument #4 to 'write_seg' (opts.color[2]: expected a number in [0, 1], got 2)")
    -- values DICOM does not allow, caught by the shim and named (the source's own patient and
    -- study values are left out with a warning instead: see "copies the source's patient ...")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, copy(meta, {sop_instance_uid = "1.2.03"})) end,
                     "lpnx.dicom.write_seg: " .. path .. ": source_meta.sop_instance_uid '1.2.03' is not a valid UID "
                     .. "(up to 64 digits and dots, no leading zeros)")
    assert.has_error(function() lpnx.dicom.write_seg(path, m, meta, {content_label = "lower case"}) end,
                     "lpnx.dicom.write_seg: " .. path .. ": opts.content_label 'lower case' is not a valid code "
                     .. "string (CS: up to 16 of A-Z 0-9 space _)")
    assert.is_nil(io.open(path))
  end)

  it("leaves no file and no temp file when it fails, and a file already there untouched", function()
    local sub = dir .. "/atomic"
    os.execute("mkdir -p " .. quote(sub))
    local path = sub .. "/seg.dcm"
    local f = assert(io.open(path, "wb"))
    f:write("old contents")
    f:close()
    assert.has_error(function() lpnx.dicom.write_seg(path, lpnx.zeros(8, 10), meta, {label = "a\\b"}) end,
                     "lpnx.dicom.write_seg: " .. path .. ": opts.label 'a\\b' is not a valid long string "
                     .. "(LO: up to 64 characters, no backslash)")
    assert.are.same({"seg.dcm"}, files_in(sub))
    assert.are.equal("old contents", io.open(path, "rb"):read("a"))
    local missing = dir .. "/no/such/folder/seg.dcm"
    local ok, err = pcall(lpnx.dicom.write_seg, missing, lpnx.zeros(8, 10), meta)
    assert.is_false(ok)
    assert.matches("^lpnx.dicom.write_seg: " .. missing:gsub("%p", "%%%0") .. ": cannot create a temp file beside it",
                   err)
    -- a good write replaces the old file
    lpnx.dicom.write_seg(path, lpnx.ones(8, 10), meta)
    assert.are.same({"seg.dcm"}, files_in(sub))
    assert.are.equal(80, (lpnx.dicom.read_seg(path)):sum())
  end)

  it("read_seg names the file and what is wrong with it", function()
    local source = dir .. "/source.dcm"
    assert.has_error(function() lpnx.dicom.read_seg(source) end,
                     "lpnx.dicom.read_seg: " .. source .. ": not a Segmentation (SOP class " .. SC_CLASS .. ")")
    assert.has_error(function() lpnx.dicom.read_seg(dir .. "/none.dcm") end,
                     "lpnx.dicom.read_seg: " .. dir .. "/none.dcm: cannot open (No such file or directory)")
    assert.has_error(function() lpnx.dicom.read_seg(source, {segment = 0}) end,
                     "bad argument #2 to 'read_seg' (segment must be an integer in 1..65535, got 0)")
    assert.has_error(function() lpnx.dicom.read_seg(source, {frame = 1}) end,
                     "bad argument #2 to 'read_seg' (unknown option 'frame' (expected one of segment))")
    -- a segmentation cut short: its pixel data is missing
    local path = dir .. "/whole.dcm"
    lpnx.dicom.write_seg(path, lpnx.ones(8, 10), meta)
    local bytes = io.open(path, "rb"):read("a")
    local cut = dir .. "/cut.dcm"
    local f = assert(io.open(cut, "wb"))
    f:write(bytes:sub(1, #bytes - 6))
    f:close()
    local ok, err = pcall(lpnx.dicom.read_seg, cut)
    assert.is_false(ok)
    assert.matches("^lpnx.dicom.read_seg: " .. cut:gsub("%p", "%%%0") .. ": not a readable DICOM file: ", err)
  end)
end)

describe("lpnx.dicom.write_seg copies the source's patient and study as faithfully as DICOM allows", function()
  local INTAKE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec") .. "/fixtures/intake/"
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rmdir(dir) end)

  it("cuts a 100-character PatientName and an 80-character StudyDescription at 64, with a warning each", function()
    -- long_name.dcm was written by pydicom (spec/fixtures/gen/make_intake_fixtures.py)
    local _, meta = lpnx.dicom.read(INTAKE .. "long_name.dcm")
    assert.are.equal(100, #meta.patient_name)
    local path = dir .. "/long.dcm"
    local uids = lpnx.dicom.write_seg(path, lpnx.ones(64, 64), meta)
    assert.are.equal(2, #uids.warnings)
    assert.matches("^source patient_name 'VERYLONGFAMILYNAME.-' is longer than a person name %(PN: up to 64 "
                   .. "characters per group, no backslash%): cut to 'VERYLONG.-%^GIV'$", uids.warnings[1])
    assert.matches("^source study_description .* cut to 'CHEST PA AND LATERAL, PORTABLE, CHEST PA AND LATERAL, "
                   .. "PORTABLE,'$", uids.warnings[2])
    local _, info = lpnx.dicom.read_seg(path)
    assert.are.equal(meta.patient_name:sub(1, 60) .. "^GIV", info.patient_name)
    assert.are.equal(meta.patient_id, info.patient_id)
    assert.are.equal(meta.study_instance_uid, info.study_instance_uid)
    -- a value that fits is copied without a warning
    local fine = lpnx.dicom.write_seg(dir .. "/fine.dcm", lpnx.ones(64, 64), (select(2, lpnx.dicom.read(INTAKE
                                      .. "pa_chest.dcm"))))
    assert.are.same({}, fine.warnings)
  end)

  it("cuts each component group of a name on its own and never inside a UTF-8 character", function()
    local _, meta = lpnx.dicom.read(INTAKE .. "pa_chest.dcm")
    meta.patient_name = ("Ä"):rep(70) .. "^Ana=" .. ("Б"):rep(66)
    meta.referring_physician_name = "Dr^Who"
    local uids = lpnx.dicom.write_seg(dir .. "/utf8.dcm", lpnx.zeros(64, 64), meta)
    assert.are.equal(1, #uids.warnings)
    local _, info = lpnx.dicom.read_seg(dir .. "/utf8.dcm")
    assert.are.equal(("Ä"):rep(64) .. "=" .. ("Б"):rep(64), info.patient_name)
  end)

  it("leaves out a source value its VR cannot hold in any length, with a warning, and still writes", function()
    local _, meta = lpnx.dicom.read(INTAKE .. "pa_chest.dcm")
    meta.patient_sex, meta.patient_age, meta.study_date = "female", "47", "2019-01-15"
    local uids = lpnx.dicom.write_seg(dir .. "/bad.dcm", lpnx.zeros(64, 64), meta)
    assert.are.same({
      "source patient_sex 'female' is not a valid code string (CS: up to 16 of A-Z 0-9 space _): left out",
      "source patient_age '47' is not a valid age string (AS: nnnD, nnnW, nnnM or nnnY): left out",
      "source study_date '2019-01-15' is not a valid date (DA: YYYYMMDD): left out",
    }, uids.warnings)
    local _, info = lpnx.dicom.read_seg(dir .. "/bad.dcm")
    assert.is_nil(info.patient_sex)
    assert.are.equal(meta.patient_id, info.patient_id)
  end)
end)
