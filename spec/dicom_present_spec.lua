-- lpnx.dicom.present: the presentation chain of PS3.3 C.11 (Modality LUT,
-- VOI LUT or window, MONOCHROME1 / INVERSE) against pydicom 2.3's
-- apply_modality_lut and apply_voi_lut, on the 12- to 16-bit files of
-- spec/fixtures/gen/make_present_fixtures.py. pydicom's output is mapped
-- to [0, 1] as a viewer shows it (a VOI LUT's output by 2^bits - 1, a
-- window's by its output range, the stored range through the rescale, then
-- 1 - y for MONOCHROME1 or INVERSE); lpnx must agree within one grey level
-- of 255: |lpnx * 255 - pydicom * 255| <= 1 at every pixel.
local lpnx = require "lpnx"
local data = require "lpnx.data"
local helpers = require "spec.support.helpers"

local function fixture(name) return helpers.fixture("present/" .. name .. ".dcm") end

local function read(path) return lpnx.dicom.read(path, {stored = true}) end

describe("lpnx.dicom.present against pydicom", function()
  local expected, meta = lpnx.load(helpers.fixture("present/expected.safetensors"))
  local cases = {}
  for name in meta.cases:gmatch("%S+") do cases[#cases + 1] = name end

  it("has the cases of every VOI kind", function()
    assert.are.equal(15, #cases)
  end)

  for _, case in ipairs(cases) do
    local file, k = case:match("^(.-)_(%d+)$")
    it(("presents %s, window %s, within one grey level of pydicom"):format(file, k), function()
      local img, m = read(fixture(file))
      local out = lpnx.dicom.present(img, m, {window = tonumber(k)})
      local want = expected[case]:view(1, 64, 64)
      local worst = helpers.max_diff(out * 255, want * 255)
      assert(worst <= 1, ("%s: %g grey levels from pydicom"):format(case, worst))
      assert.is_true(out:min() >= 0 and out:max() <= 1)
    end)
  end

  it("reads the LUTs of implicit VR files (DCMTK's copies) the same", function()
    for _, file in ipairs {"cr12s_modality_lut", "dx16_voi_lut"} do
      local img, m = read(fixture(file .. "_implicit"))
      assert.are.equal("1.2.840.10008.1.2", m.transfer_syntax)
      for k = 1, #(m.voi_luts or {1}) do
        local out = lpnx.dicom.present(img, m, {window = k})
        assert.are.equal(0, helpers.max_diff(out, expected[file .. "_" .. k]:view(1, 64, 64)))
      end
    end
  end)

  it("agrees with pydicom to float precision where the arithmetic is the same", function()
    -- every case but none: the largest difference over all of them
    local worst = 0
    for _, case in ipairs(cases) do
      local file, k = case:match("^(.-)_(%d+)$")
      local img, m = read(fixture(file))
      local out = lpnx.dicom.present(img, m, {window = tonumber(k)})
      worst = math.max(worst, helpers.max_diff(out, expected[case]:view(1, 64, 64)))
    end
    assert(worst < 1e-5, ("largest difference %g"):format(worst))
  end)
end)

describe("lpnx.dicom.read's presentation attributes", function()
  it("lists every window with its explanation and the VOI LUT function", function()
    local _, m = read(fixture("dx14_windows"))
    assert.are.same({{center = 6000, width = 3000, explanation = "LUNG"},
                     {center = 8191.5, width = 16384, explanation = "FULL"},
                     {center = 3000.25, width = 1, explanation = "NARROW"}}, m.windows)
    assert.are.equal(6000, m.window_center) -- the first, as before
    assert.is_nil(m.voi_lut_function)
    assert.are.equal("LINEAR_EXACT", select(2, read(fixture("dx12_linear_exact"))).voi_lut_function)
    assert.are.equal("SIGMOID", select(2, read(fixture("dx12_sigmoid"))).voi_lut_function)
    assert.is_true(m.stored_values)
    assert.is_nil(select(2, lpnx.dicom.read(fixture("dx14_windows"))).stored_values)
  end)

  it("reads VOI LUT Sequence items (US and OW data) and the Modality LUT Sequence", function()
    local _, m = read(fixture("dx16_voi_lut"))
    assert.are.equal(2, #m.voi_luts)
    local a, b = m.voi_luts[1], m.voi_luts[2]
    assert.are.same({30000, 12, "GAMMA", {4096}}, {a.first, a.bits, a.explanation, a.data:size()})
    assert.are.same({0, 16, "COARSE", {2048}}, {b.first, b.bits, b.explanation, b.data:size()})
    assert.are.equal(0, a.data[1])
    assert.are.equal(4095, a.data[4096])
    assert.are.equal(65535, b.data[2048])
    _, m = read(fixture("cr12_modality_lut"))
    assert.are.same({0, 16, "OD", {4096}}, {m.modality_lut.first, m.modality_lut.bits, m.modality_lut.type,
                                              m.modality_lut.data:size()})
    _, m = read(fixture("cr12s_modality_lut"))
    assert.are.equal(-1000, m.modality_lut.first) -- signed pixels: the first mapped value is signed
    assert.are.equal("INVERSE", select(2, read(fixture("dx14_inverse"))).presentation_lut_shape)
  end)

  it("gives stored values with {stored = true}: no MONOCHROME1 inversion, no rescale", function()
    local stored = read(helpers.fixture("dicom/mono12s_dirty.dcm"))
    local default = lpnx.dicom.read(helpers.fixture("dicom/mono12s_dirty.dcm"))
    -- default: (-1 - v) * 0.5 - 1000 of the stored v
    assert.are.equal(0, helpers.max_diff(default, (-stored - 1) * 0.5 - 1000))
    assert.are.equal(-2048, stored:get(1, 1, 1))
    assert.has_error(function() lpnx.dicom.read(fixture("dx14_windows"), {stored = 1}) end,
                     "bad argument #2 to 'read' (stored must be a boolean, got number)")
  end)
end)

describe("lpnx.dicom.present's choice of window", function()
  local tmp
  setup(function() tmp = helpers.tmpdir() end)
  teardown(function() helpers.rmdir(tmp) end)

  it("gives SIIM-form 8-bit files exactly the old input, x / 255", function()
    lpnx.manual_seed(3)
    local pixels = (lpnx.rand(1, 40, 52) * 255):round_()
    for _, jpeg in ipairs {false, true} do
      local path = ("%s/siim-%s.dcm"):format(tmp, jpeg)
      lpnx.dicom.write(path, pixels, {patient_id = "siim"}, {jpeg = jpeg})
      local img, m = read(path)
      assert.is_nil(m.windows)
      local out, how = lpnx.dicom.present(img, m)
      assert.are.equal("range", how.voi)
      -- the scaling data.readers.dcm used before the presentation chain
      local old = ((lpnx.dicom.read(path) - 0) / math.max(255 - 0, 1e-12)):clamp_(0, 1)
      assert.is_true(out:equal(old))
      assert.is_true(data.read_image(path):equal(old))
    end
  end)

  it("gives a synthetic SIIM data set's images exactly x / 255", function()
    local dir = tmp .. "/synth"
    lpnx.synth.write{out = dir, count = 2, size = 64, seed = 5}
    local paths = data.list_images(dir)
    assert.are.equal(2, #paths)
    for _, path in ipairs(paths) do
      local old = (lpnx.dicom.read(path) / 255):clamp_(0, 1)
      assert.is_true(data.read_image(path):equal(old))
    end
  end)

  it("is what data.read_image gives a monochrome DICOM file, with the window it is given", function()
    local path = fixture("dx14_windows")
    local img, m = read(path)
    assert.is_true(data.read_image(path):equal(lpnx.dicom.present(img, m)))
    assert.is_true(data.read_image(path, {window = 2}):equal(lpnx.dicom.present(img, m, {window = 2})))
    assert.is_true(data.read_image(path, {window = "auto"}):equal(lpnx.dicom.present(img, m, {window = "auto"})))
    local _, meta = data.read_image(path)
    assert.are.equal("dicom", meta.format)
  end)

  it("uses the file's first VOI LUT, else its first window, unless told", function()
    local img, m = read(fixture("dx16_voi_lut"))
    local _, how = lpnx.dicom.present(img, m)
    assert.are.same({voi = "lut", index = 1, explanation = "GAMMA", invert = false}, how)
    img, m = read(fixture("dx14_windows"))
    _, how = lpnx.dicom.present(img, m)
    assert.are.same({voi = "window", index = 1, center = 6000, width = 3000, ["function"] = "LINEAR",
                     explanation = "LUNG", invert = false}, how)
    _, how = lpnx.dicom.present(img, m, {window = 2})
    assert.are.equal("FULL", how.explanation)
  end)

  it("applies the caller's {center, width} through the file's function, or the one given", function()
    local img, m = read(fixture("dx12_sigmoid"))
    local out, how = lpnx.dicom.present(img, m, {window = {2048, 1200}})
    assert.are.equal("SIGMOID", how["function"])
    assert.is_true(out:equal(lpnx.dicom.present(img, m)))
    local lin = lpnx.dicom.present(img, m, {window = {500.5, 1001}, ["function"] = "LINEAR"})
    -- LINEAR: (x - (c - 0.5)) / (w - 1) + 0.5 = x / 1000 on [0, 1000]
    local x = img:clamp(0, 1000) / 1000
    helpers.assert_near(lin, x, 1e-6)
  end)

  it("inverts once for MONOCHROME1, INVERSE, or both", function()
    local img, m = read(fixture("dx14_inverse"))
    local inverted = lpnx.dicom.present(img, m)
    m.presentation_lut_shape = nil
    local plain = lpnx.dicom.present(img, m)
    helpers.assert_near(inverted, -plain + 1, 0)
    m.photometric, m.presentation_lut_shape = "MONOCHROME1", "INVERSE"
    assert.is_true(lpnx.dicom.present(img, m):equal(inverted))
  end)

  it("computes \"auto\" from the 1st and 99th percentiles, leaving out the extremes", function()
    -- values 0 (padding) and 1000 (saturation) are left out; 1..200 remain
    local t = {}
    for i = 1, 200 do t[#t + 1] = i end
    for _ = 1, 50 do t[#t + 1] = 0; t[#t + 1] = 1000 end
    local img = lpnx.tensor(t):view(1, 15, 20)
    local m = {stored_values = true, bits_stored = 14, photometric = "MONOCHROME2"}
    local out, how = lpnx.dicom.present(img, m)
    -- nearest rank of 200 values: rank 2 (= 2) and rank 198 (= 198)
    assert.are.same({voi = "window", center = 100, width = 196, ["function"] = "LINEAR_EXACT", auto = true,
                     invert = false}, how)
    local flat_out = out:view(300)
    assert.are.equal(0, flat_out[1])     -- 1 is below the window
    assert.are.equal(0.5, flat_out[100]) -- 100 is its centre
    assert.are.equal(1, flat_out[300])   -- 1000
    assert.is_true(out:equal(lpnx.dicom.present(img, m, {window = "auto"})))
    -- a constant image: width 1 around the value
    local _, flat = lpnx.dicom.present(lpnx.full({1, 4, 4}, 7), m)
    assert.are.same({7, 1}, {flat.center, flat.width})
  end)

  it("uses \"auto\" for a file above 8 bits without a window, through the rescale", function()
    local img, m = read(fixture("ct16s_rescale"))
    m.windows, m.window_center, m.window_width = nil, nil, nil
    local _, how = lpnx.dicom.present(img, m)
    assert.is_true(how.auto)
    local q = lpnx.image.quantiles(img * 0.5 - 1024, {0.01, 0.99}, {exclude_extremes = true})
    assert.are.same({(q[1] + q[2]) / 2, q[2] - q[1]}, {how.center, how.width})
  end)

  it("names what is wrong", function()
    local img, m = read(fixture("dx14_windows"))
    assert.has_error(function() lpnx.dicom.present(img, m, {window = 4}) end,
                     "lpnx.dicom.present: no window 4 (the file has 3 windows)")
    assert.has_error(function() lpnx.dicom.present(img, m, {window = 0}) end,
                     "lpnx.dicom.present: window must be 1 or more, got 0")
    assert.has_error(function() lpnx.dicom.present(img, m, {window = "best"}) end,
                     "lpnx.dicom.present: window must be an integer, \"auto\" or {center, width}, got \"best\"")
    assert.has_error(function() lpnx.dicom.present(img, m, {window = {1}}) end,
                     "lpnx.dicom.present: window must be {center, width} as two numbers")
    assert.has_error(function() lpnx.dicom.present(img, m, {windows = 1}) end,
                     "lpnx.dicom.present: unknown option 'windows' (window, function)")
    assert.has_error(function() lpnx.dicom.present(img, m, {window = {0, 1}, ["function"] = "CUBIC"}) end,
                     "lpnx.dicom.present: unknown VOI LUT Function 'CUBIC' (LINEAR, LINEAR_EXACT or SIGMOID)")
    assert.has_error(function() lpnx.dicom.present(img, m, {window = {0, 0.5}}) end,
                     "lpnx.dicom.present: voi 'linear' needs a width >= 1, got 0.5")
    local vimg, vm = read(fixture("dx16_voi_lut"))
    assert.has_error(function() lpnx.dicom.present(vimg, vm, {window = 3}) end,
                     "lpnx.dicom.present: no VOI LUT 3 (the file has 2 VOI LUTs)")
    local default, dm = lpnx.dicom.read(fixture("dx14_windows"))
    assert.has_error(function() lpnx.dicom.present(default, dm) end,
      "lpnx.dicom.present: expected stored values (read the file with lpnx.dicom.read(path, {stored = true}))")
    local rgb, rm = read(helpers.fixture("dicom/rgb.dcm"))
    assert.has_error(function() lpnx.dicom.present(rgb, rm) end,
                     "lpnx.dicom.present: a colour image (RGB) has no grayscale presentation")
    local _, sm = read(fixture("dx12_sigmoid"))
    assert.has_error(function() lpnx.dicom.present(img, sm, {window = 2}) end,
                     "lpnx.dicom.present: no window 2 (the file has 1 window)")
  end)
end)

describe("lpnx.image.present", function()
  local lut = {data = lpnx.tensor{10, 20, 30}, first = -1, bits = 5}

  it("clamps LUT inputs below the first entry and past the last", function()
    local v = lpnx.tensor{-5, -1, -0.5, 0, 1, 9}
    assert.are.same({10, 10, 10, 20, 30, 30}, lpnx.image.present(v, {modality_lut = lut}):totable())
    helpers.assert_near(lpnx.image.present(lpnx.tensor{-9, -1, 0, 5}, {voi = "table", voi_lut = lut}),
                        lpnx.tensor{10, 10, 20, 30} / 31, 1e-7)
    -- entries above 2^bits - 1 (a bad file) stop at 1
    assert.are.same({1}, lpnx.image.present(lpnx.tensor{0}, {voi = "table",
                                            voi_lut = {data = lpnx.tensor{40}, first = 0, bits = 5}}):totable())
  end)

  it("applies the windows of C.11.2.1.2.1 and C.11.2.1.3", function()
    local v = lpnx.tensor{0, 1, 2, 3, 4}
    -- LINEAR c = 2, w = 3: (x - 1.5) / 2 + 0.5 between 0.5 and 2.5
    helpers.assert_near(lpnx.image.present(v, {voi = "linear", center = 2, width = 3}),
                        lpnx.tensor{0, 0.25, 0.75, 1, 1}, 1e-7)
    -- LINEAR, width 1: a threshold at c - 0.5
    assert.are.same({0, 0, 1, 1, 1}, lpnx.image.present(v, {voi = "linear", center = 2, width = 1}):totable())
    helpers.assert_near(lpnx.image.present(v, {voi = "linear_exact", center = 2, width = 2}),
                        lpnx.tensor{0, 0, 0.5, 1, 1}, 1e-7)
    helpers.assert_near(lpnx.image.present(v, {voi = "sigmoid", center = 2, width = 4, invert = true}),
                        -(((-v + 2)):exp() + 1):pow(-1) + 1, 1e-6)
    assert.are.same({0, 0.5, 1, 1, 1}, lpnx.image.present(v, {voi = "range", low = -1, high = 3, slope = 2,
                                                                intercept = -1}):totable())
  end)

  it("checks its options", function()
    local v = lpnx.tensor{1, 2}
    assert.has_error(function() lpnx.image.present(v, {voi = "cubic"}) end,
      "bad argument #2 to 'present' (option 'voi' must be one of none, range, linear, linear_exact, sigmoid, "
      .. "table, got \"cubic\")")
    assert.has_error(function() lpnx.image.present(v, {voi = "sigmoid", center = 1, width = 0}) end,
                     "bad argument #2 to 'present' (voi 'sigmoid' needs a width > 0, got 0)")
    assert.has_error(function() lpnx.image.present(v, {voi = "linear", width = 3}) end,
                     "bad argument #2 to 'present' (voi 'linear' needs a center)")
    assert.has_error(function() lpnx.image.present(v, {voi = "range", low = 1, high = 1}) end,
                     "bad argument #2 to 'present' (voi 'range' needs numbers low < high, got 1 and 1)")
    assert.has_error(function() lpnx.image.present(v, {voi = "table"}) end,
                     "bad argument #2 to 'present' (voi 'table' needs a voi_lut)")
    assert.has_error(function() lpnx.image.present(v, {voi = "table", voi_lut = {data = lut.data, first = 0}}) end,
                     "bad argument #2 to 'present' (option 'voi_lut': bits must be an integer in 1..16, got nil)")
    assert.has_error(function() lpnx.image.present(v, {modality_lut = {data = lpnx.zeros(2, 2), first = 0}}) end,
      "bad argument #2 to 'present' (option 'modality_lut': data must be a 1-D tensor of 1..65536 entries, got (2,2))")
    assert.has_error(function() lpnx.image.present(v, {invert = true}) end,
                     "bad argument #2 to 'present' (option 'invert' needs a VOI step (voi other than none))")
    assert.has_error(function() lpnx.image.present(v, {center = 1, colour = 2}) end)
    assert.has_error(function() lpnx.image.quantiles(v, {1.5}) end,
                     "bad argument #2 to 'quantiles' (quantile 1 must be a number in [0, 1], got 1.5)")
    assert.has_error(function() lpnx.image.quantiles(lpnx.tensor{0 / 0}, {0.5}) end,
                     "bad argument #1 to 'quantiles' (no values to rank (empty, or all NaN))")
  end)
end)
