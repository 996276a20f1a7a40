local lpnx = require "lpnx"
local fs = require "lpnx.fs"
local h = require "spec.support.helpers"

local synth = lpnx.synth

describe("synthetic radiographs", function()
  it("render is a pure function of the generator", function()
    local a, ma = synth.render{size = 128, positive = true, generator = lpnx.Generator(5)}
    local b, mb = synth.render{size = 128, positive = true, generator = lpnx.Generator(5)}
    assert.is_true(a:equal(b))
    assert.is_true(ma:equal(mb))
    local c = synth.render{size = 128, positive = true, generator = lpnx.Generator(6)}
    assert.is_false(a:equal(c))
  end)

  it("images lie in [0, 1] with dark lungs inside a brighter body", function()
    local img = synth.render{size = 256, positive = false, generator = lpnx.Generator(1)}
    assert.are.same({256, 256}, img:size())
    assert.is_true(img:min() >= 0 and img:max() <= 1)
    -- the lung fields (upper-middle thirds left and right) are darker than the mediastinum
    local lung = img:narrow(1, 80, 60):narrow(2, 60, 40):mean()
    local mediastinum = img:narrow(1, 80, 60):narrow(2, 118, 20):mean()
    assert.is_true(lung + 0.15 < mediastinum, ("lung %.3f vs mediastinum %.3f"):format(lung, mediastinum))
  end)

  it("a negative has an empty mask; a positive a binary mask darker than the lung beside it", function()
    local _, empty = synth.render{size = 256, positive = false, generator = lpnx.Generator(2)}
    assert.are.equal(0, empty:sum())
    local found = 0
    for seed = 1, 6 do
      local img, mask, info = synth.render{size = 256, positive = true, generator = lpnx.Generator(seed)}
      if #info.regions > 0 then
        found = found + 1
        assert.are.equal(mask:numel(), mask:eq(0):sum() + mask:eq(1):sum()) -- 0/1 only
        assert.is_true(mask:sum() > 20)
        -- pixels of the pneumothorax against the whole lung field's median-ish level
        local inside = (img * mask):sum() / mask:sum()
        assert.is_true(inside < 0.45, ("pneumothorax mean %.3f"):format(inside))
      end
    end
    assert.is_true(found >= 5)
  end)
end)

describe("synthetic SIIM-ACR data sets", function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rmdir(dir) end)

  it("writes DICOM files and run-length CSVs in the SIIM-ACR layout, reproducibly", function()
    local r = synth.write{out = dir .. "/a", count = 6, seed = 3, positive = 0.5, size = 128, test_fraction = 0.34}
    assert.are.equal(4, #r.train)
    assert.are.equal(2, #r.test)
    local entries, ids = lpnx.siim.read_csv(dir .. "/a/train-rle.csv")
    assert.are.same(r.train, ids)
    local header = io.open(dir .. "/a/train-rle.csv"):read("l")
    assert.are.equal("ImageId, EncodedPixels", header)
    local positives = 0
    local files = {}
    for _, p in ipairs(fs.walk(dir .. "/a/dicom-images-train", {exts = {"dcm"}})) do
      files[lpnx.data.image_id(p)] = p
    end
    for _, id in ipairs(ids) do
      local path = files[id]
      assert.is_truthy(path, "no DICOM for " .. id)
      local img, meta = lpnx.dicom.read(path)
      assert.are.same({1, 128, 128}, img:size())
      assert.are.equal(id, meta.sop_instance_uid)
      assert.are.equal("MONOCHROME2", meta.photometric)
      assert.are.equal("1.2.840.10008.1.2.4.50", meta.transfer_syntax) -- JPEG baseline
      assert.are.equal(path:match("/([^/]+)/[^/]+/[^/]+$"), meta.study_instance_uid)
      local mask = lpnx.siim.mask(entries[id], 128, 128)
      if mask:sum() > 0 then positives = positives + 1 end
    end
    local _, test_ids = lpnx.siim.read_csv(dir .. "/a/test-rle.csv")
    assert.are.same(r.test, test_ids)
    assert.is_true(positives >= 1)
    -- the same seed writes the same data set
    local again = synth.write{out = dir .. "/b", count = 6, seed = 3, positive = 0.5, size = 128, test_fraction = 0.34}
    assert.are.same(r.train, again.train)
    assert.are.equal(io.open(dir .. "/a/train-rle.csv"):read("a"), io.open(dir .. "/b/train-rle.csv"):read("a"))
    local a_files, b_files = fs.walk(dir .. "/a"), fs.walk(dir .. "/b")
    assert.are.equal(#a_files, #b_files)
    for i, pa in ipairs(a_files) do
      local pb = b_files[i]
      assert.are.equal(pa:sub(#dir + 3), pb:sub(#dir + 3))
      local fa, fb = assert(io.open(pa, "rb")), assert(io.open(pb, "rb"))
      assert.is_true(fa:read("a") == fb:read("a"), "not the same bytes: " .. pa:sub(#dir + 2))
      fa:close()
      fb:close()
    end
  end)

  it("rejects bad options with a clear message", function()
    assert.has_error(function() synth.write{out = dir .. "/c", count = 0} end,
                     "synth.write: count must be a positive integer")
    assert.has_error(function() synth.write{out = dir .. "/c", count = 2, positive = 2} end,
                     "synth.write: positive must be in [0, 1]")
  end)
end)
