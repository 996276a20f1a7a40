-- What a hospital archive sends besides frontal chest radiographs: files
-- that cannot be read, other modalities and body parts, lateral views,
-- several frames, colour, names too long for their VR, a detector's pixel
-- spacing with a magnification factor. The files are
-- spec/fixtures/intake/*.dcm, written by pydicom, DCMTK's dcmodify and
-- GDCM's gdcmconv (spec/fixtures/gen/make_intake_fixtures.py); the specs
-- need none of them.
local lpnx = require "lpnx"
local cjson = require "cjson"
local h = require "spec.support.helpers"

local predict = lpnx.predict
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
local INTAKE = ROOT .. "/spec/fixtures/intake/"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run_script(args)
  local parts = {"lua5.4", quote(ROOT .. "/examples/predict.lua")}
  for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
  local p = assert(io.popen(table.concat(parts, " ") .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local function meta_of(name)
  local _, meta = lpnx.dicom.read(INTAKE .. name)
  return meta
end

local function near(a, b, tol) return math.abs(a - b) <= (tol or 1e-9) end

-- CSV rows (header dropped) as lists, by lpnx.csv.
local function csv_rows(path)
  local header, rows = lpnx.csv.read(path, {header = true})
  return rows, header
end

describe("predict.chest_check", function()
  it("takes a PA chest CR, an AP DX without a body part, and a PNG (no attributes at all)", function()
    assert.is_true(predict.chest_check(meta_of("pa_chest.dcm")))
    assert.is_true(predict.chest_check(meta_of("ap_no_body_part.dcm")))
    assert.is_true(predict.chest_check(meta_of("long_name.dcm")))
    assert.is_true(predict.chest_check({format = "png", rows = 64, columns = 64}))
    -- free text around a chest word, and lower case, pass
    assert.is_true(predict.chest_check({modality = "cr", body_part_examined = "PORT CHEST", view_position = "ap"}))
    assert.is_true(predict.chest_check({modality = "DX", body_part_examined = "CHEST_PA"}))
    assert.is_false(predict.chest_check({modality = "DX", body_part_examined = "CHESTWALL"}))
  end)

  it("refuses another modality, a lateral view, another body part, several frames and colour, saying why", function()
    local cases = {
      {"ct.dcm", "Modality CT is not a radiograph (accepted: CR, DX, OT, SC)"},
      {"mr_dcmodify.dcm", "Modality MR is not a radiograph (accepted: CR, DX, OT, SC)"},
      {"rl_gdcm.dcm", "ViewPosition RL is a lateral view, not a frontal chest"},
      {"lateral.dcm", "ViewPosition LL is a lateral view, not a frontal chest"},
      {"hand.dcm", "BodyPartExamined HAND is not a chest (accepted: CHEST, LUNG, LUNGS, THORAX)"},
      {"two_frames.dcm", "2 frames (NumberOfFrames), not a single radiograph"},
      {"rgb.dcm", "a colour image (SamplesPerPixel 3), not a gray radiograph"},
    }
    for _, c in ipairs(cases) do
      local ok, why = predict.chest_check(meta_of(c[1]))
      assert.is_false(ok, c[1])
      assert.are.equal(c[2], why)
    end
    assert.are.same({false, "ViewPosition RL is a lateral view, not a frontal chest"},
                    {predict.chest_check({modality = "DX", view_position = "RL"})})
  end)

  it("follows the rules a site gives: lateral views and hands let through by a table of its own", function()
    local rules = {}
    for k, v in pairs(predict.chest_rules) do rules[k] = v end
    rules.accepted_views = {frontal = true, lateral = true}
    rules.body_parts = {CHEST = true, HAND = true}
    assert.is_true(predict.chest_check(meta_of("lateral.dcm"), rules))
    assert.is_true(predict.chest_check(meta_of("hand.dcm"), rules))
    assert.is_false(predict.chest_check(meta_of("ct.dcm"), rules))
    assert.is_false(predict.chest_check(meta_of("lateral.dcm")))   -- the defaults are untouched
  end)
end)

describe("predict.area_spacing", function()
  it("takes PixelSpacing, else ImagerPixelSpacing divided by EstimatedRadiographicMagnificationFactor", function()
    local spacing, source = predict.area_spacing(meta_of("pa_chest.dcm"))
    assert.are.same({0.5, 0.5}, spacing)
    assert.are.equal("PixelSpacing", source)
    local dx = meta_of("dx_magnified.dcm")
    assert.are.equal(1.25, dx.magnification_factor)
    assert.are.same({0.2, 0.2}, dx.imager_pixel_spacing)
    spacing, source = predict.area_spacing(dx)
    assert.is_true(near(spacing[1], 0.16) and near(spacing[2], 0.16))
    assert.are.equal("ImagerPixelSpacing / magnification 1.25", source)
    dx.magnification_factor = nil
    spacing, source = predict.area_spacing(dx)
    assert.are.same({0.2, 0.2}, spacing)
    assert.are.equal("ImagerPixelSpacing (detector, not corrected for magnification)", source)
    spacing, source = predict.area_spacing(meta_of("ap_no_body_part.dcm"))
    assert.is_nil(spacing)
    assert.are.equal("no pixel spacing", source)
  end)
end)

describe("predict.run on an archive's mixed folder", function()
  local dir, model_path
  setup(function()
    dir = h.tmpdir()
    lpnx.manual_seed(5)
    model_path = dir .. "/model.safetensors"
    local model = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
    lpnx.models.save(model_path, model, {input_size = 64})
  end)
  teardown(function() h.rmdir(dir) end)

  local GOOD = {"ap_no_body_part", "dx_magnified", "long_name", "name_dcmodify", "pa_chest"}
  local SKIPPED = {"ct", "hand", "lateral", "mr_dcmodify", "rgb", "rl_gdcm", "truncated", "two_frames"}

  it("skips what it cannot read or is no frontal chest, predicts the rest and lists both", function()
    local out = dir .. "/mixed"
    local told, warned = {}, {}
    -- threshold 0: every pixel of a predicted image is in its mask, so areas are the image's
    local s = predict.run{model = model_path, inputs = INTAKE, out = out, threshold = 0, dicom_seg = true,
                          on_skip = function(e) told[#told + 1] = e[2] end,
                          on_warning = function(id, message) warned[#warned + 1] = {id, message} end}
    assert.are.equal(13, s.inputs)
    assert.are.equal(5, s.images)
    assert.are.same(GOOD, s.ids)
    assert.are.same(SKIPPED, told)
    local rows = csv_rows(out .. "/skipped.csv")
    assert.are.equal(8, #rows)
    local reasons = {}
    for k, r in ipairs(rows) do
      assert.are.equal(INTAKE .. SKIPPED[k] .. ".dcm", r[1])
      assert.are.equal(SKIPPED[k], r[2])
      reasons[r[2]] = r[3]
    end
    assert.are.same(s.skipped[1], rows[1])
    assert.are.equal("Modality CT is not a radiograph (accepted: CR, DX, OT, SC)", reasons.ct)
    assert.are.equal("ViewPosition LL is a lateral view, not a frontal chest", reasons.lateral)
    assert.matches("^not a readable DICOM file: .*premature end of stream", reasons.truncated)
    -- the submission has the predicted images only
    local sub = csv_rows(out .. "/submission.csv")
    assert.are.equal(5, #sub)
    for k, r in ipairs(sub) do assert.are.equal(GOOD[k], r[1]) end
    -- images.csv: view, area in cm^2 and where the spacing came from
    local images, header = csv_rows(out .. "/images.csv")
    assert.are.same({"image_id", "path", "view", "rows", "columns", "positive", "area_px", "area_cm2", "area_source",
                     "max_probability", "seg"}, header)
    local by_id = {}
    for _, r in ipairs(images) do by_id[r[1]] = r end
    assert.are.same({"AP", "4096", "", "no pixel spacing"},
                    {by_id.ap_no_body_part[3], by_id.ap_no_body_part[7], by_id.ap_no_body_part[8],
                     by_id.ap_no_body_part[9]})
    -- 4096 pixels of 0.5 x 0.5 mm = 10.24 cm^2; of 0.16 x 0.16 mm (0.2 / 1.25) = 1.048576 cm^2
    assert.are.same({"PA", "10.24", "PixelSpacing"}, {by_id.pa_chest[3], by_id.pa_chest[8], by_id.pa_chest[9]})
    assert.are.same({"PA", "1.05", "ImagerPixelSpacing / magnification 1.25"},
                    {by_id.dx_magnified[3], by_id.dx_magnified[8], by_id.dx_magnified[9]})
    assert.is_true(near(s.results[2].area_cm2, 1.048576, 1e-9))
    -- the image-level score at float precision (a ranking score: rounding
    -- it would tie images the evaluation's ROC should tell apart)
    for _, r in ipairs(s.results) do
      local written = tonumber(by_id[r.id][10])
      assert.is_true(math.abs(written - r.max_probability) <= 1e-7 * math.max(1e-30, math.abs(r.max_probability)),
                     ("%s: wrote %s for %.17g"):format(r.id, by_id[r.id][10], r.max_probability))
    end
    -- the long name did not stop its segmentation: cut to PN's 64 characters per group, with a warning
    assert.are.equal(5, s.segs)
    assert.are.equal("seg/long_name.dcm", by_id.long_name[11])
    local _, info = lpnx.dicom.read_seg(out .. "/seg/long_name.dcm")
    assert.are.equal(64, #info.patient_name)
    assert.are.same(warned, s.warnings)
    assert.are.equal(3, #warned)
    assert.are.equal("long_name", warned[1][1])
    assert.matches("^DICOM Segmentation: source patient_name '.-' is longer than a person name", warned[1][2])
    -- a name DCMTK's dcmodify wrote: its one component group cut to 64 characters
    assert.are.equal("name_dcmodify", warned[3][1])
    _, info = lpnx.dicom.read_seg(out .. "/seg/name_dcmodify.dcm")
    assert.are.equal(("A"):rep(64), info.patient_name)
  end)

  it("an image whose segmentation cannot be written is still predicted, with a warning", function()
    -- pa_chest.dcm with a letter in its SOP Instance UID: DCMTK reads it, a segmentation cannot refer to it
    local bytes = assert(io.open(INTAKE .. "pa_chest.dcm", "rb")):read("a")
    local patched, n = bytes:gsub("1147%.77%.1%.3", "1147.77.1.x")
    assert.are.equal(2, n)                                   -- the file meta's copy and the data set's
    local folder = dir .. "/bad-uid"
    os.execute("mkdir -p " .. quote(folder))
    local f = assert(io.open(folder .. "/bad_uid.dcm", "wb"))
    f:write(patched)
    f:close()
    local s = predict.run{model = model_path, inputs = folder, out = dir .. "/bad-uid-out", threshold = 0,
                          dicom_seg = true}
    assert.are.equal(1, s.images)
    assert.are.same({}, s.skipped)
    assert.are.equal(0, s.segs)
    assert.is_nil(s.results[1].seg)
    assert.are.same({{"bad_uid", "no DICOM Segmentation: source_meta.sop_instance_uid "
                      .. "'1.2.826.0.1.3680043.10.1147.77.1.x' is not a valid UID (up to 64 digits and dots, "
                      .. "no leading zeros)"}}, s.warnings)
    assert.are.equal(1, #csv_rows(dir .. "/bad-uid-out/submission.csv"))
  end)

  it("with any_image predicts every readable image and still skips the unreadable one", function()
    local s = predict.run{model = model_path, inputs = INTAKE, out = dir .. "/any", threshold = 0.5,
                          any_image = true, write_overlays = false, write_masks = false}
    assert.are.equal(12, s.images)
    assert.are.equal(1, #s.skipped)
    assert.are.equal("truncated", s.skipped[1][2])
    local views = {}
    for _, r in ipairs(s.results) do views[r.id] = r.view end
    assert.are.equal("LL", views.lateral)
    assert.are.equal("", views.rgb)
  end)

  it("the script says what it skipped and exits 3; 0 when nothing was; 1 when nothing could be predicted", function()
    local out = dir .. "/cli"
    local text, code = run_script({"--model", model_path, "--data", INTAKE, "--out", out, "--quiet", "--report"})
    assert.are.equal(3, code, text)
    assert.matches("skipped lateral %(" .. (INTAKE .. "lateral.dcm"):gsub("%p", "%%%0")
                   .. "%): ViewPosition LL is a lateral view, not a frontal chest\n", text)
    assert.matches("\npredicted 5 images, ", text)
    assert.matches("\nskipped 8 of 13 inputs: " .. (out .. "/skipped.csv"):gsub("%p", "%%%0") .. "\n$", text)
    -- the review page counts the skipped inputs and says where each area's spacing came from
    local html = assert(io.open(out .. "/index.html")):read("a")
    local meta = cjson.decode(html:match('<script type="application/json" id="lpnx%-meta">(.-)</script>'))
    assert.are.equal(8, meta.skipped)
    local cases = cjson.decode(html:match('<script type="application/json" id="lpnx%-cases">(.-)</script>'))
    local by_id = {}
    for _, c in ipairs(cases) do by_id[c.id] = c end
    assert.are.equal("ImagerPixelSpacing / magnification 1.25", by_id.dx_magnified.area_source)
    assert.are.equal("PixelSpacing", by_id.pa_chest.area_source)
    assert.are.equal("PA", by_id.pa_chest.view_position)
    assert.is_nil(by_id.ap_no_body_part.area_source)

    text, code = run_script({"--model", model_path, "--data", INTAKE .. "pa_chest.dcm", INTAKE .. "dx_magnified.dcm",
                             "--out", dir .. "/cli-good", "--quiet"})
    assert.are.equal(0, code, text)
    assert.matches("^predicted 2 images, ", text)
    assert.are.equal("path,image_id,reason\n", assert(io.open(dir .. "/cli-good/skipped.csv")):read("a"))

    text, code = run_script({"--model", model_path, "--data", INTAKE .. "truncated.dcm", INTAKE .. "ct.dcm",
                             "--out", dir .. "/cli-none", "--quiet"})
    assert.are.equal(1, code, text)
    assert.matches("predict.lua: no input could be predicted %(see .-skipped.csv%)\n$", text)

    text, code = run_script({"--model", model_path, "--data", INTAKE .. "lateral.dcm", "--out", dir .. "/cli-any",
                             "--quiet", "--any-image"})
    assert.are.equal(0, code, text)
  end)
end)
