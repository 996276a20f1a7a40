local lpnx = require "lpnx"
local fs = require "lpnx.fs"
local siim = require "lpnx.siim"
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

describe("the harder, SIIM-like synthetic set", function()
  local function render(seed, extra, positive)
    local o = {size = 128, positive = positive ~= false, generator = lpnx.Generator(seed)}
    for k, v in pairs(extra or {}) do o[k] = v end
    return synth.render(o)
  end

  it("leaves the plain phantom byte for byte when no option is on", function()
    -- the sum this image had before the options existed
    local img, mask, info = render(5)
    assert.are.equal("9176.9012968060488", ("%.17g"):format(img:sum()))
    assert.are.equal(199, mask:sum())
    assert.is_nil(info.features)
    local zero = {}
    for _, name in ipairs(synth.options) do zero[name] = 0 end
    for seed = 1, 3 do
      local a, ma = render(seed)
      local b, mb, ib = render(seed, zero)
      assert.is_true(a:equal(b) and ma:equal(mb), "seed " .. seed)
      for _, name in ipairs(synth.options) do assert.is_false(ib.features[name]) end
    end
  end)

  it("draws each option when on, and look-alikes, devices and marks never change the mask", function()
    local keeps_mask = {skin_folds = true, scapulae = true, breasts = true, bullae = true, drains = true, ecg = true,
                        et_tubes = true, central_lines = true, markers = true, text = true, exposure = true,
                        grid_lines = true, dx16 = true}
    for k, name in ipairs(synth.options) do
      local seed = 10 + k
      local plain, plain_mask = render(seed)
      local img, mask, info = render(seed, {[name] = 1})
      assert.is_true(info.features[name], name)
      if name == "dx16" then
        assert.is_true(img:equal(plain))                -- only the file changes
        assert.is_truthy(info.dx16.bits >= 12 and info.dx16.window.width >= 1)
      else
        assert.is_false(img:equal(plain), name .. " changed no pixel")
      end
      if keeps_mask[name] then assert.is_true(mask:equal(plain_mask), name .. " changed the mask") end
      -- the other features' decisions are their own: unchanged by this one
      local function others(rate)
        local f = synth.features{generator = lpnx.Generator(seed), positive = true, preset = "siim", [name] = rate}
        f[name] = nil
        return f
      end
      assert.are.same(others(0), others(1))
    end
  end)

  it("a skin fold leaves a negative's mask empty; a drain over a pneumothorax changes pixels along its path only",
     function()
    local _, mask = render(21, {skin_folds = 1}, false)
    assert.are.equal(0, mask:sum())
    local plain, plain_mask = render(22)
    local img, m, info = render(22, {drains = 1})
    assert.is_true(info.features.drains and #info.regions > 0)
    assert.is_true(m:equal(plain_mask))
    local changed = (img - plain):abs():gt(0.02):sum()
    assert.is_true(changed > 30 and changed < 0.08 * img:numel(), "drain pixels " .. changed)
  end)

  it("gives each feature at its stated rate (binomial tolerance), drains mostly on positives", function()
    local n = 300
    local counts, positives = {}, 0
    for _, name in ipairs(synth.options) do counts[name] = {0, 0} end -- on negatives, on positives
    for i = 1, n do
      local positive = i % 2 == 0
      local f = synth.features{generator = lpnx.Generator(1000 + i), positive = positive, preset = "siim"}
      if positive then positives = positives + 1 end
      for name, on in pairs(f) do
        if on then counts[name][positive and 2 or 1] = counts[name][positive and 2 or 1] + 1 end
      end
    end
    for _, name in ipairs(synth.options) do
      local rate = synth.presets.siim[name]
      for k, key in ipairs {"negative", "positive"} do
        local r = type(rate) == "table" and rate[key] or rate
        local m = n / 2
        local sd = math.sqrt(m * r * (1 - r))
        assert.is_true(math.abs(counts[name][k] - m * r) <= 4 * sd + 1,
                       ("%s on %ss: %d of %d, rate %.2f"):format(name, key, counts[name][k], m, r))
      end
    end
    assert.is_true(counts.drains[2] > 5 * counts.drains[1])
    -- render reports what features says
    for seed = 1, 4 do
      local _, _, info = render(seed, {preset = "siim"})
      assert.are.same(synth.features{generator = lpnx.Generator(seed), positive = true, preset = "siim"}, info.features)
    end
  end)

  it("orders the size classes by area, a rim of a few millimetres the smallest", function()
    local means = {}
    for _, class in ipairs(synth.size_classes) do
      local total = 0
      for seed = 1, 3 do
        local _, mask = render(seed, {size_distribution = {[class] = 1}})
        total = total + mask:sum() / mask:numel()
      end
      means[#means + 1] = total / 3
    end
    for k = 2, #means do
      assert.is_true(means[k - 1] < means[k], ("%s %.4f vs %s %.4f"):format(synth.size_classes[k - 1], means[k - 1],
                                                                           synth.size_classes[k], means[k]))
    end
    assert.is_true(means[1] < 0.01)
  end)

  it("makes a rim's free air darker than the lung beside it, up to the chest wall", function()
    -- at 512 pixels a rim is 2-6 pixels deep: inside its mask the image must
    -- be darker than the darker half of a 4-pixel ring around it (the lung;
    -- the other half is the brighter chest wall). Ribs or a clavicle over the
    -- air can make an exception; before the free air reached the wall, 4 of
    -- these 12 were darker.
    local S, darker = 512, 0
    local ring_of = lpnx.nn.MaxPool2d(9, 1, 4)
    for seed = 1, 12 do
      local img, mask = synth.render{size = S, positive = true, seed = seed, preset = "siim",
                                     size_distribution = {rim = 1}, supine = 0}
      local ring = ring_of:forward(mask:view(1, 1, S, S)):view(S, S) - mask
      local iv, mv, rv = img:view(-1):totable(), mask:view(-1):totable(), ring:view(-1):totable()
      local air, n, beside = 0, 0, {}
      for i = 1, #iv do
        if mv[i] > 0.5 then air, n = air + iv[i], n + 1 elseif rv[i] > 0.5 then beside[#beside + 1] = iv[i] end
      end
      table.sort(beside)
      local lung = 0
      for i = 1, #beside // 2 do lung = lung + beside[i] end
      if air / n < lung / (#beside // 2) then darker = darker + 1 end
    end
    assert.is_true(darker >= 9, ("the free air is darker than the lung beside it in %d of 12 rims"):format(darker))
  end)

  it("rejects an unknown preset and a bad rate", function()
    assert.has_error(function() synth.render{size = 64, preset = "chexpert"} end,
                     'synth: unknown preset "chexpert" (known: siim)')
    assert.has_error(function() synth.render{size = 64, drains = 2} end,
                     "synth: drains must be a rate in [0, 1] or {positive = rate, negative = rate}")
  end)
end)

describe("a synthetic set with preset siim", function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rmdir(dir) end)

  -- Every file under root (relative name -> bytes).
  local function tree(root)
    local files = {}
    for _, path in ipairs(lpnx.fs.walk(root)) do
      local f = assert(io.open(path, "rb"))
      files[path:sub(#root + 2)] = f:read("a")
      f:close()
    end
    return files
  end

  it("renders the same files with forked workers as with one process, and names a worker's failure", function()
    local opts = {count = 9, seed = 5, size = 64, preset = "siim", dx16 = 0.3, test_fraction = 0.3}
    opts.out = dir .. "/one"
    local one = synth.write(opts)
    local seen = {}
    opts.out, opts.workers = dir .. "/three", 3
    opts.progress = function(i, n) seen[#seen + 1] = ("%d/%d"):format(i, n) end
    local three = synth.write(opts)
    assert.are.same(one, three)
    assert.are.same({"1/9", "2/9", "3/9", "4/9", "5/9", "6/9", "7/9", "8/9", "9/9"}, seen)
    local a, b = tree(dir .. "/one"), tree(dir .. "/three")
    local names = 0
    for name, bytes in pairs(a) do
      assert.is_true(b[name] == bytes, name .. " differs")
      names = names + 1
    end
    for name in pairs(b) do assert.is_not_nil(a[name], name) end
    assert.is_true(names >= 9 + 3)                 -- the images, two CSVs and features.csv
    -- a folder in the way: the worker's error, with the image, reaches the caller
    assert(io.open(dir .. "/blocked", "w")):close()
    local ok, err = pcall(synth.write, {out = dir .. "/blocked", count = 4, size = 64, workers = 2})
    assert.is_false(ok)
    assert.matches("synth.write: image 1: ", err, 1, true)
    assert.matches("blocked", err, 1, true)
    assert.matches("workers must be an integer of at least 1, got 0",
                   select(2, pcall(synth.write, {out = dir .. "/x", count = 2, workers = 0})), 1, true)
  end)

  it("holds out a stratified share: round(held-out count * positive) of the positives", function()
    for _, case in ipairs {{count = 50, fraction = 0.4, positive = 0.3, test = 6, train = 9},
                           {count = 23, fraction = 0.3, positive = 0.22, test = 2, train = 3}} do
      local out = ("%s/strat%d"):format(dir, case.count)
      local r = synth.write{out = out, count = case.count, seed = 2, size = 32, positive = case.positive,
                            test_fraction = case.fraction}
      local function positives(csv)
        local masks = siim.read_csv(csv)
        local n = 0
        for _, entry in pairs(masks) do if siim.is_positive(entry) then n = n + 1 end end
        return n
      end
      assert.are.equal(case.test, positives(out .. "/test-rle.csv"))
      assert.are.equal(case.train, positives(out .. "/train-rle.csv"))
      assert.are.equal(case.test + case.train, r.positives)
    end
  end)

  it("has about 22% positives, features.csv, and 16-bit MONOCHROME1 DX files that present well", function()
    local r = synth.write{out = dir .. "/s", count = 40, seed = 4, size = 64, preset = "siim", dx16 = 0.3}
    assert.are.equal(9, r.positives) -- round(40 * 0.22)
    local f = assert(io.open(dir .. "/s/features.csv"))
    local header = f:read("l")
    assert.are.equal("ImageId,positive,size_class," .. table.concat(synth.options, ","), header)
    local rows, dx = {}, {}
    for line in f:lines() do
      local cells = {}
      for cell in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = cell end
      rows[cells[1]] = cells
      if cells[#cells] == "1" then dx[cells[1]] = true end
    end
    f:close()
    local npos = 0
    for _, cells in pairs(rows) do npos = npos + tonumber(cells[2]) end
    assert.are.equal(9, npos)
    local seen = 0
    for _, path in ipairs(fs.walk(dir .. "/s", {exts = {"dcm"}})) do
      local id = lpnx.data.image_id(path)
      assert.is_truthy(rows[id], id)
      local stored, meta = lpnx.dicom.read(path, {stored = true})
      if dx[id] then
        seen = seen + 1
        assert.are.equal("MONOCHROME1", meta.photometric)
        assert.are.equal("DX", meta.modality)
        assert.is_true(meta.bits_stored >= 12 and meta.bits_allocated == 16)
        assert.is_truthy(meta.window_center and meta.window_width)
        local img = lpnx.dicom.present(stored, meta)[1]
        -- a chest: dark lungs beside a bright mediastinum, within [0, 1]
        local lung = img:narrow(1, 20, 15):narrow(2, 15, 10):mean()
        local mediastinum = img:narrow(1, 20, 15):narrow(2, 30, 5):mean()
        assert.is_true(img:min() >= 0 and img:max() <= 1)
        assert.is_true(lung + 0.1 < mediastinum, ("lung %.3f, mediastinum %.3f"):format(lung, mediastinum))
      else
        assert.are.equal("MONOCHROME2", meta.photometric)
        assert.are.equal(8, meta.bits_stored)
      end
    end
    assert.is_true(seen >= 5, "dx16 files: " .. seen)
  end)
end)
