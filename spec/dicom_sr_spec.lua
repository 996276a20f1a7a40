-- The result objects a DICOM node sends back for one chest X-ray:
-- lpnx.dicom.derive_uid (the same UIDs for a result made twice),
-- lpnx.dicom.write_sr (a Comprehensive SR in the form of TID 1500,
-- checked with DCMTK's dsrdump and dicom3tools' dciodvfy). Specs tagged
-- #dciodvfy and #dcmtk run the external programs (installed by make deps)
-- and are pending when they are missing.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local quote, run, have, files_in = h.quote, h.run_plain, h.have, h.files_in

-- The UID derive_uid must give, computed another way: sha256sum of the
-- length-prefixed strings, the UUID's version and variant bits set on the
-- first 16 bytes, bc for the decimal.
local function expected_uid(...)
  local joined = {}
  for _, s in ipairs {...} do joined[#joined + 1] = #s .. ":" .. s end
  local hex = run("printf '%s' " .. quote(table.concat(joined)) .. " | sha256sum"):sub(1, 32):upper()
  local b6, b8 = tonumber(hex:sub(13, 14), 16), tonumber(hex:sub(17, 18), 16)
  hex = hex:sub(1, 12) .. ("%02X"):format((b6 & 0x0F) | 0x80) .. hex:sub(15, 16)
        .. ("%02X"):format((b8 & 0x3F) | 0x80) .. hex:sub(19)
  local decimal = run("echo 'ibase=16; " .. hex .. "' | BC_LINE_LENGTH=0 bc"):gsub("%s", "")
  return "2.25." .. decimal
end

describe("lpnx.dicom.derive_uid", function()
  it("gives fixed UIDs for fixed strings: a UUID from SHA-256 of the length-prefixed strings, in decimal", function()
    -- checked once against Python's hashlib and int.from_bytes
    assert.are.equal("2.25.89139764471349515755813040146450297003", lpnx.dicom.derive_uid("ab", "c"))
    assert.are.equal("2.25.110412357735506804059868378596849497474", lpnx.dicom.derive_uid("a", "bc"))
  end)

  it("agrees with sha256sum and bc", function()
    if not have("bc") or not have("sha256sum") then return pending("bc or sha256sum is not installed") end
    local cases = {{"ab", "c"}, {"a", "bc"}, {"1.2.826.0.1.3680043.8.498.1", "sr"}, {""}, {"é", "x y", "\\"}}
    for _, args in ipairs(cases) do
      assert.are.equal(expected_uid(table.unpack(args)), lpnx.dicom.derive_uid(table.unpack(args)))
    end
  end)

  it("is a valid UID: 2.25., no leading zero, at most 64 characters, different for different strings", function()
    local seen = {}
    for i = 1, 200 do
      local uid = lpnx.dicom.derive_uid("source-" .. i, "seg")
      assert.matches("^2%.25%.[1-9]%d*$", uid)
      assert.is_true(#uid <= 64)
      assert.is_nil(seen[uid])
      seen[uid] = true
    end
    assert.are.equal(lpnx.dicom.derive_uid("x", "sr"), lpnx.dicom.derive_uid("x", "sr"))
    assert.are_not.equal(lpnx.dicom.derive_uid("x", "sr"), lpnx.dicom.derive_uid("x", "seg"))
    assert.are_not.equal(lpnx.dicom.derive_uid("x"), lpnx.dicom.derive_uid("x", ""))
    assert.are_not.equal(lpnx.dicom.derive_uid("a\0b"), lpnx.dicom.derive_uid("a\0c"))
  end)

  it("wants one or more strings and names the argument that is not one", function()
    assert.has_error(function() lpnx.dicom.derive_uid() end,
                     "bad argument #1 to 'derive_uid' (expected one or more strings, got none)")
    assert.has_error(function() lpnx.dicom.derive_uid("a", 1) end,
                     "bad argument #2 to 'derive_uid' (expected a string, got number)")
    assert.has_error(function() lpnx.dicom.derive_uid("a", "b", nil) end,
                     "bad argument #3 to 'derive_uid' (expected a string, got nil)")
  end)
end)

describe("lpnx.dicom.write_sr", function()
  local SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
  local SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
  local dir, meta, seg
  local function opts(extra)
    local o = {finding = true, probability = 0.93, area_cm2 = 12.5, area_source = "PixelSpacing",
               algorithm_name = "lpnx-unet", algorithm_version = "0.3.1", seg = seg}
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end
  local function dump(path) return (run("dsrdump +Pc +Pl " .. quote(path))) end

  setup(function()
    dir = h.tmpdir()
    lpnx.dicom.write(dir .. "/source.dcm", lpnx.rand(1, 30, 41) * 255,
                     {patient_id = "P-0042", patient_name = "Doe^Jane", patient_sex = "F", patient_age = "047Y",
                      study_date = "20240131", study_time = "101500", study_id = "S7", pixel_spacing = {0.14, 0.15},
                      study_instance_uid = "2.25.1001", series_instance_uid = "2.25.1002",
                      sop_instance_uid = "2.25.1003"}, {jpeg = false})
    local _
    _, meta = lpnx.dicom.read(dir .. "/source.dcm")
    seg = lpnx.dicom.write_seg(dir .. "/seg.dcm", lpnx.zeros(30, 41), meta)
  end)
  teardown(function() h.rmdir(dir) end)

  it("writes a Comprehensive SR in the source's study, with the UIDs it was given", function()
    local sr_uid = lpnx.dicom.derive_uid(meta.sop_instance_uid, "sr")
    local series_uid = lpnx.dicom.derive_uid(meta.series_instance_uid, "sr series")
    local uids = lpnx.dicom.write_sr(dir .. "/sr.dcm", meta, opts{sop_instance_uid = sr_uid,
                                                                 series_instance_uid = series_uid})
    assert.are.equal(SR_CLASS, uids.sop_class_uid)
    assert.are.equal(sr_uid, uids.sop_instance_uid)
    assert.are.equal(series_uid, uids.series_instance_uid)
    assert.are.equal("2.25.1001", uids.study_instance_uid)
    assert.are.same({}, uids.warnings)
    -- a new series in the source's study: generated UIDs when none are given
    local fresh = lpnx.dicom.write_sr(dir .. "/fresh.dcm", meta, opts())
    assert.are.equal("2.25.1001", fresh.study_instance_uid)
    assert.are_not.equal(uids.sop_instance_uid, fresh.sop_instance_uid)
    assert.are_not.equal(meta.series_instance_uid, fresh.series_instance_uid)
  end)

  it("says what was found as TID 1500 does: finding, presence, probability, area, references #dcmtk", function()
    if not have("dsrdump") then return pending("dsrdump is not installed (make deps installs dcmtk)") end
    local path = dir .. "/present.dcm"
    lpnx.dicom.write_sr(path, meta, opts())
    local out = dump(path)
    for _, want in ipairs {
      "Comprehensive SR Document",
      "Patient             : Doe^Jane (F, #P-0042)",
      "Completion Flag     : COMPLETE",
      "Verification Flag   : UNVERIFIED",
      '<CONTAINER:(126000,DCM,"Imaging Measurement Report")=SEPARATE>',
      '<has concept mod CODE:(121049,DCM,"Language of Content Item and Descendants")=(en-US,RFC5646,'
        .. '"English (United States)")>',
      '<has obs context CODE:(121005,DCM,"Observer Type")=(121007,DCM,"Device")>',
      '<has obs context TEXT:(121013,DCM,"Device Observer Name")="lpnx-unet">',
      '<has concept mod CODE:(121058,DCM,"Procedure reported")=(399208008,SCT,"Plain chest X-ray")>',
      '<contains CONTAINER:(111028,DCM,"Image Library")=SEPARATE>',
      '<contains CONTAINER:(126010,DCM,"Imaging Measurements")=SEPARATE>',
      '<contains CONTAINER:(125007,DCM,"Measurement Group")=SEPARATE>',
      '<contains TEXT:(112039,DCM,"Tracking Identifier")="Pneumothorax">',
      '<contains CODE:(121071,DCM,"Finding")=(36118008,SCT,"Pneumothorax")>',
      '<contains IMAGE:(121214,DCM,"Referenced Segmentation Frame")=(SG image,,1)>',
      '<contains UIDREF:(121232,DCM,"Source series for segmentation")="2.25.1002">',
      '<contains IMAGE:(121112,DCM,"Source of Measurement")=(SC image,)>',
      '<contains CODE:(121052,DCM,"Presence of property")=(52101004,SCT,"Present")>',
      '<contains NUM:(111012,DCM,"Certainty of Finding")="0.93" ({ratio},UCUM,"ratio")>',
      '<has concept mod TEXT:(111003,DCM,"Algorithm Version")="0.3.1">',
      '<contains NUM:(42798000,SCT,"Area")="12.5" (cm2,UCUM,"square centimeter")>',
      '<has properties TEXT:(121106,DCM,"Comment")="pixel spacing from PixelSpacing">',
    } do
      assert.is_truthy(out:find(want, 1, true), "missing " .. want .. " in:\n" .. out)
    end
    -- the references carry the source's and the segmentation's UIDs; the
    -- evidence lists both
    local tags = run("dcmdump +P ReferencedSOPInstanceUID " .. quote(path))
    local _, source_refs = tags:gsub("%[2%.25%.1003%]", "")
    local _, seg_refs = tags:gsub("%[" .. seg.sop_instance_uid:gsub("%.", "%%.") .. "%]", "")
    assert.are.equal(3, source_refs)  -- image library, source of measurement, evidence
    assert.are.equal(2, seg_refs)     -- the measurement group, evidence
    local evidence = run("dcmdump +P CurrentRequestedProcedureEvidenceSequence " .. quote(path))
    assert.is_truthy(evidence:find(seg.series_instance_uid, 1, true))
    assert.is_truthy(evidence:find(SEG_CLASS, 1, true) or evidence:find("SegmentationStorage", 1, true))
  end)

  it("says Absent and leaves out what it was not given: area, its source, the segmentation #dcmtk", function()
    if not have("dsrdump") then return pending("dsrdump is not installed (make deps installs dcmtk)") end
    local path = dir .. "/absent.dcm"
    lpnx.dicom.write_sr(path, meta, {finding = false, probability = 0.02, algorithm_name = "lpnx-unet",
                                     algorithm_version = "0.3.1"})
    local out = dump(path)
    assert.is_truthy(out:find('(121052,DCM,"Presence of property")=(2667000,SCT,"Absent")', 1, true), out)
    assert.is_truthy(out:find('"Certainty of Finding")="0.02"', 1, true), out)
    assert.is_falsy(out:find('"Area"', 1, true))
    assert.is_falsy(out:find("Segmentation", 1, true))
    local tags = run("dcmdump +P ReferencedSOPInstanceUID " .. quote(path))
    local _, refs = tags:gsub("ReferencedSOPInstanceUID", "")
    assert.are.equal(3, refs)
    -- probability 0 and 1 are written as they are
    lpnx.dicom.write_sr(dir .. "/zero.dcm", meta, opts{probability = 0, area_cm2 = 0})
    assert.is_truthy(dump(dir .. "/zero.dcm"):find('"Certainty of Finding")="0"', 1, true))
  end)

  it("dciodvfy finds no error in a report with and without area and segmentation #dciodvfy", function()
    if not have("dciodvfy") then return pending("dciodvfy is not installed (make deps installs dicom3tools)") end
    local cases = {{"full.dcm", opts()},
                   {"bare.dcm", {finding = false, probability = 0.5, algorithm_name = "a", algorithm_version = "1"}}}
    for _, case in ipairs(cases) do
      local path = dir .. "/v-" .. case[1]
      lpnx.dicom.write_sr(path, meta, case[2])
      local out = run("dciodvfy " .. quote(path))
      assert.is_truthy(out:find("ComprehensiveSR", 1, true), case[1] .. ": the IOD was not recognised:\n" .. out)
      assert.is_falsy(out:find("Error", 1, true), case[1] .. ":\n" .. out)
      assert.is_falsy(out:find("Warning", 1, true), case[1] .. ":\n" .. out)
    end
  end)

  it("written twice with derived UIDs, is the same object: same instance, series and tracking UIDs #dcmtk", function()
    if not have("dcmdump") then return pending("dcmdump is not installed (make deps installs dcmtk)") end
    local function write(path)
      return lpnx.dicom.write_sr(path, meta, opts{
        sop_instance_uid = lpnx.dicom.derive_uid(meta.sop_instance_uid, "lpnx-unet", "sr"),
        series_instance_uid = lpnx.dicom.derive_uid(meta.study_instance_uid, "lpnx-unet", "sr series")})
    end
    local a, b = write(dir .. "/a.dcm"), write(dir .. "/b.dcm")
    assert.are.same(a, b)
    local function uids(path)
      return (run("dcmdump +P SOPInstanceUID +P SeriesInstanceUID +P UID " .. quote(path)):gsub("#.-\n", "\n"))
    end
    local da = uids(dir .. "/a.dcm")
    assert.are.equal(da, uids(dir .. "/b.dcm"))
    assert.is_truthy(da:find(a.sop_instance_uid, 1, true))
  end)

  it("copies the source's patient and study as write_seg does: cut to fit, with a warning", function()
    local long = {}
    for k, v in pairs(meta) do long[k] = v end
    long.patient_name = ("X"):rep(70) .. "^Ann"
    long.patient_sex = "female"
    local uids = lpnx.dicom.write_sr(dir .. "/long.dcm", long, opts())
    assert.are.same({
      "source patient_name '" .. ("X"):rep(40) .. "...' is longer than a person name (PN: up to 64 characters "
        .. "per group, no backslash): cut to '" .. ("X"):rep(64) .. "'",
      "source patient_sex 'female' is not a valid code string (CS: up to 16 of A-Z 0-9 space _): left out",
    }, uids.warnings)
    if have("dcmdump") then
      local out = run("dcmdump +P PatientName +P PatientSex +P PatientAge +P StudyID " .. quote(dir .. "/long.dcm"))
      assert.is_truthy(out:find("[" .. ("X"):rep(64) .. "]", 1, true), out)
      assert.is_truthy(out:find("[047Y]", 1, true), out)
      assert.is_truthy(out:find("[S7]", 1, true), out)
    end
  end)

  it("refuses bad options with an error naming the argument and the field", function()
    local path = dir .. "/bad.dcm"
    local function fails(o, msg, src)
      assert.has_error(function() lpnx.dicom.write_sr(path, src or meta, o) end, msg)
    end
    fails(opts{finding = "yes"}, "bad argument #3 to 'write_sr' (opts.finding: expected true (pneumothorax present) "
                                 .. "or false (absent), got string)")
    fails(opts{probability = 1.5}, "bad argument #3 to 'write_sr' (opts.probability: expected a number in [0, 1], "
                                   .. "got 1.5)")
    fails(opts{probability = "high"}, "bad argument #3 to 'write_sr' (opts.probability: expected a number, got string)")
    fails(opts{area_cm2 = -1}, "bad argument #3 to 'write_sr' (opts.area_cm2: expected a finite number >= 0, got -1.0)")
    fails(opts{algorithm_name = false}, "bad argument #3 to 'write_sr' (opts.algorithm_name: expected a string, "
                                        .. "got boolean)")
    fails({finding = true, probability = 0.5, algorithm_name = "a"},
          "bad argument #3 to 'write_sr' (opts.algorithm_version is missing: the report names the algorithm that "
          .. "made it)")
    fails(opts{colour = "red"}, "bad argument #3 to 'write_sr' (unknown option 'colour' (expected one of finding, "
                                .. "probability, area_cm2, area_source, algorithm_name, algorithm_version, seg, "
                                .. "sop_instance_uid, series_instance_uid, series_number, instance_number, "
                                .. "series_description, manufacturer))")
    fails(opts{seg = {sop_class_uid = SEG_CLASS, sop_instance_uid = "2.25.9"}},
          "bad argument #3 to 'write_sr' (opts.seg.series_instance_uid is missing: the report references the "
          .. "segmentation by SOP class, SOP instance and series UID (write_seg returns them))")
    fails(opts{seg = "seg.dcm"}, "bad argument #3 to 'write_sr' (opts.seg: expected {sop_class_uid =, "
                                 .. "sop_instance_uid =, series_instance_uid =} (write_seg returns it), got string)")
    fails(nil, "bad argument #3 to 'write_sr' (expected a table of options (finding, probability, algorithm_name, "
               .. "algorithm_version, ...), got nil)")
    fails(opts(), "bad argument #2 to 'write_sr' (expected the source image's meta table (as lpnx.dicom.read "
                  .. "returns it), got string)", "source.dcm")
    local no_study = {}
    for k, v in pairs(meta) do no_study[k] = v end
    no_study.study_instance_uid = nil
    fails(opts(), "bad argument #2 to 'write_sr' (source_meta.study_instance_uid is missing: a report references its "
                  .. "source image by SOP class, SOP instance, study and series UID (lpnx.dicom.read returns them))",
          no_study)
    -- values checked against their VR by the writer
    fails(opts{series_number = "x1"}, "lpnx.dicom.write_sr: " .. path .. ": opts.series_number 'x1' is not a valid "
                                      .. "integer string (IS)")
    fails(opts{sop_instance_uid = "1.02"}, "lpnx.dicom.write_sr: " .. path .. ": opts.sop_instance_uid '1.02' is "
                                           .. "not a valid UID (up to 64 digits and dots, no leading zeros)")
    fails(opts{algorithm_name = ("n"):rep(65)}, "lpnx.dicom.write_sr: " .. path .. ": opts.algorithm_name '"
                                                .. ("n"):rep(65) .. "' is not a valid long string (LO: up to 64 "
                                                .. "characters, no backslash)")
  end)

  it("leaves no file and no temp file when it fails, and a file already there untouched", function()
    local sub = dir .. "/atomic"
    os.execute("mkdir -p " .. quote(sub))
    local path = sub .. "/sr.dcm"
    local f = assert(io.open(path, "wb"))
    f:write("old contents")
    f:close()
    assert.has_error(function() lpnx.dicom.write_sr(path, meta, opts{instance_number = "one"}) end)
    assert.are.same({"sr.dcm"}, files_in(sub))
    assert.are.equal("old contents", io.open(path, "rb"):read("a"))
    -- a folder it cannot write to
    local locked = dir .. "/locked"
    os.execute("mkdir -p " .. quote(locked) .. " && chmod 555 " .. quote(locked))
    local writable = io.open(locked .. "/probe", "wb")     -- root writes anywhere: then use a missing folder
    if writable then
      writable:close()
      os.remove(locked .. "/probe")
      locked = dir .. "/no/such/folder"
    end
    local target = locked .. "/sr.dcm"
    local ok, err = pcall(lpnx.dicom.write_sr, target, meta, opts())
    assert.is_false(ok)
    assert.matches("^lpnx.dicom.write_sr: " .. target:gsub("%p", "%%%0") .. ": cannot create a temp file beside it",
                   err)
    if writable == nil then assert.are.same({}, files_in(locked)) end
    os.execute("chmod 755 " .. quote(dir .. "/locked"))
    -- a good write replaces the old file
    lpnx.dicom.write_sr(path, meta, opts())
    assert.are.same({"sr.dcm"}, files_in(sub))
    assert.are_not.equal("old contents", io.open(path, "rb"):read("a"))
  end)
end)
