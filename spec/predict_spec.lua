local lpnx = require "lpnx"
local lfs = require "lfs"
local fs = require "lpnx.fs"
local h = require "spec.support.helpers"

local predict = lpnx.predict

-- Runs an example script as a child process (LUA_PATH and LUA_CPATH are
-- inherited): its output (stdout and stderr together) and exit code.
local run_script, lines = h.run_example, h.lines

-- A probability map (H,W) of value base with the given pixels ({row, col,
-- value}, 1-based) set.
local function map(hgt, wid, base, pixels)
  local t = lpnx.full({hgt, wid}, base)
  for _, p in ipairs(pixels) do t:set(p[3], p[1], p[2]) end
  return t
end

-- n pixels of value v laid out row by row from the top-left corner.
local function block(n, v, wid, first_row)
  local list = {}
  for k = 0, n - 1 do list[#list + 1] = {(first_row or 1) + k // wid, k % wid + 1, v} end
  return list
end

local function concat(a, b)
  local out = {table.unpack(a)}
  for _, v in ipairs(b) do out[#out + 1] = v end
  return out
end

describe("predict.triplet", function()
  it("keeps every pixel above bottom once min_area pixels are above top, scaled to a 64x64 image", function()
    -- 2000 pixels of a 1024x1024 image are 2000 * 4096 / 1048576 = 7.8125 of a 64x64 one
    local confident = block(8, 0.9, 64)            -- row 1, columns 1..8
    local middling = block(20, 0.5, 64, 3)         -- row 3, columns 1..20
    local prob = map(64, 64, 0.1, concat(confident, middling))
    local mask = predict.triplet(prob)
    assert.are.same({64, 64}, mask:size())
    assert.are.equal(28, mask:sum())
    assert.are.equal(1, mask:get(1, 8))
    assert.are.equal(1, mask:get(3, 20))
    assert.are.equal(0, mask:get(2, 1))
    -- one confident pixel fewer: 7 < 7.8125, the image is called negative
    local fewer = map(64, 64, 0.1, concat(block(7, 0.9, 64), middling))
    assert.are.equal(0, predict.triplet(fewer):sum())
    -- the gate counts pixels above top, the mask those above bottom
    assert.are.equal(8, predict.triplet(prob, {bottom = 0.6}):sum())
    assert.are.equal(0, predict.triplet(prob, {top = 0.95}):sum())
    assert.are.equal(28, predict.triplet(prob, {top = 0.45, min_area = 6000}):sum()) -- 28 >= 23.4
    assert.are.equal(0, predict.triplet(prob, {top = 0.45, min_area = 8000}):sum())  -- 28 < 31.25
  end)

  it("scales min_area by the image's pixels: 31.25 pixels at 128x128, as given at reference_area", function()
    local middling = block(50, 0.5, 128, 10)
    local pass = map(128, 128, 0, concat(block(32, 0.8, 128), middling))
    local miss = map(128, 128, 0, concat(block(31, 0.8, 128), middling))
    assert.are.equal(82, predict.triplet(pass):sum())
    assert.are.equal(0, predict.triplet(miss):sum())
    -- min_area counted on a 128x128 reference holds as given
    assert.are.equal(81, predict.triplet(miss, {min_area = 31, reference_area = 128 * 128}):sum())
    assert.are.equal(0, predict.triplet(miss, {min_area = 32, reference_area = 128 * 128}):sum())
  end)

  it("compares strictly, keeps a (1,H,W) shape and gives an empty mask on an empty map", function()
    local prob = map(4, 6, 0, {{1, 1, 0.75}, {1, 2, 0.3}, {2, 2, 0.76}, {3, 3, 0.31}}):view(1, 4, 6)
    local mask = predict.triplet(prob, {min_area = 0})
    assert.are.same({1, 4, 6}, mask:size())
    -- 0.75 is not above top = 0.75 but is above bottom; 0.3 is not above bottom
    assert.are.same({{{1, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0}, {0, 0, 1, 0, 0, 0}, {0, 0, 0, 0, 0, 0}}},
                    mask:totable())
    -- one pixel above top is enough for min_area = 1 on a 1-pixel reference... and not for 2
    assert.are.equal(3, predict.triplet(prob, {min_area = 1, reference_area = 24}):sum())
    assert.are.equal(0, predict.triplet(prob, {min_area = 2, reference_area = 24}):sum())
    local empty = predict.triplet(lpnx.zeros(1, 5, 7))
    assert.are.same({1, 5, 7}, empty:size())
    assert.are.equal(0, empty:sum())
    -- min_area = 0 on a map with nothing above top: the gate is open, the mask is what passes bottom
    assert.are.equal(1, predict.triplet(map(3, 3, 0, {{2, 2, 0.5}}), {min_area = 0}):sum())
  end)

  it("threshold and postprocess: plain threshold, then small components dropped", function()
    local prob = map(8, 8, 0.2, {{1, 1, 0.6}, {1, 2, 0.7}, {5, 5, 0.9}, {5, 6, 0.9}, {6, 5, 0.9}, {8, 8, 0.5}})
    assert.are.equal(5, predict.threshold(prob, 0.55):sum())
    assert.are.equal(6, predict.threshold(prob, 0.45):sum())
    local kept = predict.postprocess(prob, {threshold = 0.45, min_component = 2})
    assert.are.equal(5, kept:sum())                 -- the lone (8,8) pixel is gone
    assert.are.equal(0, kept:get(8, 8))
    assert.are.equal(3, predict.postprocess(prob, {threshold = 0.45, min_component = 3}):sum())
    -- postprocess without threshold is the triplet
    assert.are.equal(6, predict.postprocess(prob, {top = 0.8, min_area = 3, bottom = 0.45, reference_area = 64}):sum())
    assert.are.equal(0, predict.postprocess(prob, {top = 0.8, min_area = 4, bottom = 0.45, reference_area = 64}):sum())
  end)

  it("rejects bad settings and shapes with clear messages", function()
    local prob = lpnx.zeros(4, 4)
    assert.has_error(function() predict.triplet(prob, {top = 1.5}) end,
                     "predict.triplet: top must be a number in [0, 1], got 1.5")
    assert.has_error(function() predict.triplet(prob, {min_area = -1}) end,
                     "predict.triplet: min_area must be a number in [0, inf], got -1")
    assert.has_error(function() predict.triplet(prob, {minarea = 3}) end,
                     "predict.triplet: unknown option 'minarea' (expected one of bottom, min_area, " ..
                     "reference_area, top)")
    assert.has_error(function() predict.triplet(lpnx.zeros(2, 4, 4)) end,
                     "predict.triplet: expected a probability map (H,W) or (1,H,W), got (2,4,4)")
    assert.has_error(function() predict.postprocess(prob, {threshold = 0.5, top = 0.7}) end,
                     "predict.postprocess: give either threshold or top/min_area/bottom, not both " ..
                     "(got threshold and top)")
    assert.has_error(function() predict.postprocess(prob, {threshold = 0.5, min_component = 1.5}) end,
                     "predict.postprocess: min_component must be an integer, got 1.5")
  end)
end)

local function tiny_unet()
  return lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
end

describe("data.prepare", function()
  it("repeats a grey image to the model's channels and normalises each with its own mean and std", function()
    local img = lpnx.full({1, 1, 4, 4}, 0.5)
    local one = lpnx.data.prepare(img, {in_channels = 1})
    assert.are.same({1, 1, 4, 4}, one:size())
    h.assert_near(one, lpnx.full({1, 1, 4, 4}, (0.5 - 0.485) / 0.229), 1e-6)
    local four = lpnx.data.prepare(img, {in_channels = 4, mean = {0, 0.1, 0.2, 0.3}, std = {1, 1, 1, 0.5}})
    assert.are.same({1, 4, 4, 4}, four:size())
    h.assert_near(four:narrow(3, 1, 1):narrow(4, 1, 1):view(4), {0.5, 0.4, 0.3, 0.4}, 1e-6)
  end)

  it("says so when the model's channels and its normalisation do not fit the images", function()
    assert.has_error(function() lpnx.data.prepare(lpnx.rand(1, 1, 4, 4), {in_channels = 4}) end,
                     "data.prepare: the model takes 4 input channels, but its mean and std give 3 and 3 values")
    assert.has_error(function() lpnx.data.prepare(lpnx.rand(1, 2, 4, 4), {in_channels = 3}) end,
                     "data.prepare: the model takes 3 input channels, the images have 2")
  end)
end)

describe("predict.probabilities", function()
  it("with tta averages the prediction and the mirrored prediction flipped back", function()
    lpnx.manual_seed(11)
    local model = tiny_unet():eval()
    local meta = {input_size = 64, mean = lpnx.models.imagenet_mean, std = lpnx.models.imagenet_std}
    local images = lpnx.rand(2, 1, 64, 64)
    -- two explicit forward passes
    local x = lpnx.data.prepare(images, meta)
    local plain = model:forward(x):sigmoid()
    local mirrored = lpnx.image.hflip(model:forward(lpnx.image.hflip(x)):sigmoid())
    assert.is_true((plain - mirrored):abs():max() > 1e-3, "the model should not be flip-invariant")
    local expected = (plain + mirrored) * 0.5
    h.assert_near(predict.probabilities(model, meta, images, {tta = true}), expected, 1e-6)
    h.assert_near(predict.probabilities(model, meta, images), plain, 1e-6)
    local p = predict.probabilities(model, meta, images)
    assert.are.same({2, 1, 64, 64}, p:size())
    assert.is_true(p:min() > 0 and p:max() < 1)
  end)

  it("runs a model in train mode on its running statistics and puts it back in train mode", function()
    lpnx.manual_seed(12)
    local model = tiny_unet()
    local meta = {input_size = 64}
    local images = lpnx.rand(1, 1, 64, 64)
    local p = predict.probabilities(model, meta, images)
    assert.is_true(model.training)
    model:eval()
    h.assert_near(p, model:forward(lpnx.data.prepare(images, meta)):sigmoid(), 1e-6)
    assert.has_error(function() predict.probabilities(model, meta, lpnx.rand(1, 64, 64)) end,
                     "predict.probabilities: expected images (N,1,H,W), got (1,64,64)")
  end)
end)

-- Masks decoded by hand from SIIM's relative run-length form: pixels
-- numbered down each column, then across; "gap length" pairs.
local function decode_by_hand(rles, hgt, wid)
  local m = {}
  for i = 1, hgt * wid do m[i] = 0 end
  for _, rle in ipairs(rles) do
    local numbers = {}
    for n in rle:gmatch("%S+") do numbers[#numbers + 1] = tonumber(n) end
    local at = 0
    for k = 1, #numbers - 1, 2 do
      at = at + numbers[k]
      for p = at, at + numbers[k + 1] - 1 do
        local row, col = p % hgt, p // hgt
        m[row * wid + col + 1] = 1
      end
      at = at + numbers[k + 1]
    end
  end
  return m
end

-- Dice and IoU of two flat 0/1 arrays, SIIM rule.
local function dice_iou_by_hand(p, t)
  local inter, np, nt = 0, 0, 0
  for i = 1, #p do
    inter = inter + p[i] * t[i]
    np, nt = np + p[i], nt + t[i]
  end
  if np + nt == 0 then return 1, 1 end
  return 2 * inter / (np + nt), inter / (np + nt - inter)
end

-- The rows of a CSV as id -> list of RLE strings ("-1" left out), by hand.
local function csv_by_hand(path)
  local rows, order = {}, {}
  local f = assert(io.open(path))
  f:read("l")
  for line in f:lines() do
    local id, rle = line:match("^%s*([^,]-)%s*,%s*(.-)%s*$")
    if not rows[id] then rows[id], order[#order + 1] = {}, id end
    if rle ~= "-1" then table.insert(rows[id], rle) end
  end
  f:close()
  return rows, order
end

local function last_line(text)
  local list = lines(text)
  return list[#list]
end

describe("prediction and evaluation on a synthetic set", function()
  local dir, model_path, truth_csv, data_dir, ids
  setup(function()
    dir = h.tmpdir()
    data_dir = dir .. "/data"
    local r = lpnx.synth.write{out = data_dir, count = 6, size = 64, seed = 3, positive = 0.5, test_fraction = 0}
    ids = r.train
    truth_csv = data_dir .. "/train-rle.csv"
    lpnx.manual_seed(5)
    model_path = dir .. "/model.safetensors"
    lpnx.models.save(model_path, tiny_unet(), {input_size = 64})
  end)
  teardown(function() h.rmdir(dir) end)

  it("run writes a submission row, a mask and an overlay per image; each RLE decodes to its mask PNG", function()
    local out = dir .. "/pred"
    local seen = {}
    local s = predict.run{model = model_path, inputs = data_dir, out = out, threshold = 0.5, keep_probabilities = true,
                          progress = function(i, n, id) seen[#seen + 1] = {i, n, id} end}
    assert.are.equal(6, s.images)
    assert.are.equal(6, #seen)
    assert.are.same({6, 6}, {seen[6][1], seen[6][2]})
    local header, rows = lpnx.csv.read(out .. "/submission.csv", {header = true})
    assert.are.same({"ImageId", "EncodedPixels"}, header)
    assert.are.equal(6, #rows)
    local listed, positive = {}, 0
    for i, row in ipairs(rows) do
      local id, rle = row[1], row[2]
      listed[id] = true
      assert.are.same(s.rows[i], {id, rle})
      local png = lpnx.png.read(out .. "/masks/" .. id .. ".png")
      assert.are.same({1, 64, 64}, png:size())
      assert.are.equal(png:numel(), png:eq(0):sum() + png:eq(1):sum()) -- 0 or 255 only
      assert.is_true(png:equal(lpnx.rle.decode(rle, 64, 64):view(1, 64, 64)))
      if rle ~= "-1" then positive = positive + 1 end
      assert.are.same({3, 64, 64}, lpnx.png.read(out .. "/overlays/" .. id .. ".png"):size())
      -- the kept probabilities give back the mask
      local prob = s.probabilities[i]
      assert.are.same({1, 64, 64}, prob:size())
      assert.are.equal(rle, lpnx.rle.encode(prob:gt(0.5)))
    end
    for _, id in ipairs(ids) do assert.is_true(listed[id], id .. " has no row") end
    assert.are.equal(positive, s.positive)
    assert.is_true(positive > 0)
  end)

  it("probability_map gives one image's probabilities at its own size, as run computes them", function()
    local paths = lpnx.data.list_images(data_dir)
    local s = predict.run{model = model_path, inputs = paths, out = dir .. "/one-by-one", threshold = 0.5, batch = 1,
                          keep_probabilities = true, write_masks = false, write_overlays = false}
    local model, meta = lpnx.models.load(model_path)
    for i, path in ipairs(paths) do
      local p = predict.probability_map(model, meta, (lpnx.data.read_image(path)))
      assert.is_true(p:equal(s.probabilities[i]), path)
    end
    -- an odd size goes to the model's size and back
    local odd = predict.probability_map(model, meta, lpnx.full({1, 70, 90}, 0.5), {tta = true})
    assert.are.same({1, 70, 90}, odd:size())
    assert.matches("expected an image %(1,H,W%), got %(2,3%)",
                   select(2, pcall(predict.probability_map, model, meta, lpnx.zeros(2, 3))))
    assert.matches("input_size must be a multiple of 32",
                   select(2, pcall(predict.probability_map, model, {input_size = 50}, lpnx.zeros(1, 8, 8))))
  end)

  it("run maps probabilities back to an image's own size and shrinks overlays past overlay_size", function()
    -- a 70x90 PNG: resized (area) to the model's 64x64, probabilities back to 70x90 (bilinear)
    local img = lpnx.image.resize(lpnx.data.read_image((lpnx.data.list_images(data_dir))[1]), 70, 90, "bilinear")
    local png = dir .. "/odd/scan 1.png"
    fs.mkdir_p(dir .. "/odd")
    lpnx.png.write(png, img)
    local out = dir .. "/odd-pred"
    local threads = lpnx.get_num_threads()
    local s = predict.run{model = model_path, inputs = {png}, out = out, threshold = 0.5, overlay_size = 45,
                          keep_probabilities = true, batch = 3, threads = 1}
    assert.are.same({"scan 1"}, s.ids)
    local model, meta = lpnx.models.load(model_path)
    local small = lpnx.image.resize(lpnx.data.read_image(png), 64, 64, "area"):view(1, 1, 64, 64)
    local expected = lpnx.image.resize(predict.probabilities(model, meta, small)[1], 70, 90, "bilinear")
    h.assert_near(s.probabilities[1], expected, 1e-6)
    local mask = lpnx.png.read(out .. "/masks/scan 1.png")
    assert.are.same({1, 70, 90}, mask:size())
    assert.is_true(mask:equal(expected:gt(0.5)))
    assert.is_true(mask:equal(lpnx.rle.decode(s.rows[1][2], 70, 90):view(1, 70, 90)))
    -- 45 / 90 of 70 rows is 35
    assert.are.same({3, 35, 45}, lpnx.png.read(out .. "/overlays/scan 1.png"):size())
    assert.are.equal(threads, lpnx.get_num_threads()) -- threads = 1 held only while running
  end)

  it("run, list_images and data.siim take folder and file names a shell would misread", function()
    -- a relative folder starting with a dash used to reach find(1) as an option, a newline in a
    -- file name split it in two, and mkdir -p took a relative "-pred out" for its options
    local function copy(from, to)
      local f = assert(io.open(from, "rb"))
      local bytes = f:read("a")
      f:close()
      f = assert(io.open(to, "wb"))
      f:write(bytes)
      f:close()
    end
    local sources = lpnx.data.list_images(data_dir)
    local name = "-it's a \"scan\" folder; $(x)"
    local odd = dir .. "/" .. name
    fs.mkdir_p(odd .. "/sub dir")
    local files = {odd .. "/sub dir/first scan.dcm", odd .. "/second\nscan.dcm"}
    for i, path in ipairs(files) do copy(sources[i], path) end
    assert.are.same({files[2], files[1]}, lpnx.data.list_images(odd)) -- byte order: "se" < "su"
    local plain = predict.run{model = model_path, inputs = {sources[1]}, out = dir .. "/plain", threshold = 0.5}
    local here = assert(lfs.currentdir())
    assert(lfs.chdir(dir))
    local ok, err = pcall(function()
      assert.is_true(lpnx.data.is_dir(name))
      assert.are.same({name .. "/second\nscan.dcm", name .. "/sub dir/first scan.dcm"}, lpnx.data.list_images(name))
      assert.are.same({"first scan", "second\nscan"}, lpnx.data.siim{root = name, size = 64}.ids)
      local s = predict.run{model = model_path, inputs = name .. "/sub dir", out = "-pred out", threshold = 0.5}
      assert.are.same({"first scan"}, s.ids)
      assert.are.equal(plain.rows[1][2], s.rows[1][2])
      assert.are.equal("file", fs.stat("-pred out/submission.csv"))
      assert.are.equal("file", fs.stat("-pred out/masks/first scan.png"))
      assert.are.equal("file", fs.stat("-pred out/overlays/first scan.png"))
    end)
    assert(lfs.chdir(here))
    assert(ok, err)
  end)

  it("reads images through data.readers: a new extension is one entry", function()
    local sources = lpnx.data.list_images(data_dir)
    assert.are.same({"dcm", "dicom", "png"}, lpnx.data.image_exts())
    local folder = dir .. "/readers"
    fs.mkdir_p(folder)
    local f = assert(io.open(folder .. "/a.raw", "wb"))
    f:write("x")
    f:close()
    assert.are.same({}, lpnx.data.list_images(folder))
    local seen = {}
    lpnx.data.readers.raw = function(path)
      seen[#seen + 1] = path
      return lpnx.zeros(1, 4, 5), {rows = 4, columns = 5, format = "raw"}
    end
    local ok, err = pcall(function()
      assert.are.same({folder .. "/a.raw"}, lpnx.data.list_images(folder))
      local img, meta = lpnx.data.read_image(folder .. "/a.RAW")
      assert.are.same({1, 4, 5}, img:size())
      assert.are.equal("raw", meta.format)
      assert.are.same({folder .. "/a.RAW"}, seen)
    end)
    lpnx.data.readers.raw = nil
    assert(ok, err)
    -- no reader for the extension: read as DICOM, which names the file when it is none
    local _, meta = lpnx.data.read_image(sources[1])
    assert.are.equal("dicom", meta.format)
    assert.matches("a%.raw", select(2, pcall(lpnx.data.read_image, folder .. "/a.raw")))
  end)

  it("the CLI writes what run writes, and evaluate's numbers match a computation by hand", function()
    local out = dir .. "/cli"
    local text, code = run_script("predict.lua", {"--model", model_path, "--data", data_dir, "--out", out,
                                                  "--threshold", "0.5", "--no-overlays", "--quiet"})
    assert.are.equal(0, code, text)
    assert.matches("^predicted 6 images, %d with pneumothorax %(threshold 0.5%)", last_line(text))
    assert.are.equal(io.open(dir .. "/pred/submission.csv"):read("a"), io.open(out .. "/submission.csv"):read("a"))
    assert.is_nil(io.open(out .. "/overlays/" .. ids[1] .. ".png"))
    assert.is_not_nil(io.open(out .. "/masks/" .. ids[1] .. ".png"))

    text, code = run_script("evaluate.lua", {"--pred", out .. "/submission.csv", "--truth", truth_csv, "--size", "64"})
    assert.are.equal(0, code, text)
    -- by hand: parse both CSVs, decode, count
    local truth, order = csv_by_hand(truth_csv)
    local pred = csv_by_hand(out .. "/submission.csv")
    local sum = {0, 0, 0, 0}
    local positives = 0
    for _, id in ipairs(order) do
      local t = decode_by_hand(truth[id], 64, 64)
      local d, j = dice_iou_by_hand(decode_by_hand(pred[id], 64, 64), t)
      sum[1], sum[2] = sum[1] + d, sum[2] + j
      if #truth[id] > 0 then
        positives = positives + 1
        sum[3], sum[4] = sum[3] + d, sum[4] + j
      end
    end
    assert.are.equal(3, positives)
    local expected = ("dice=%.4f iou=%.4f dice_positive=%.4f iou_positive=%.4f images=6 positives=3"):format(
      sum[1] / 6, sum[2] / 6, sum[3] / 3, sum[4] / 3)
    assert.are.equal(expected, last_line(text))
    local r = predict.evaluate{pred = out .. "/submission.csv", truth = truth_csv, size = 64}
    assert.is_true(math.abs(r.dice - sum[1] / 6) < 1e-12 and math.abs(r.iou_positive - sum[4] / 3) < 1e-12)
    -- sizes read from the DICOM files agree with --size 64
    local from_files = run_script("evaluate.lua", {"--pred", out .. "/submission.csv", "--truth", truth_csv,
                                                   "--sizes-from", data_dir})
    assert.are.equal(expected, last_line(from_files))
  end)

  it("evaluate scores the truth against itself 1 and counts missing rows as empty predictions", function()
    local entries, order = lpnx.siim.read_csv(truth_csv)
    local rows = {}
    for i, id in ipairs(order) do rows[i] = {id, lpnx.siim.mask(entries[id], 64, 64)} end
    lpnx.siim.write_submission(dir .. "/truth-sub.csv", rows)
    local text, code = run_script("evaluate.lua", {"--pred", dir .. "/truth-sub.csv", "--truth", truth_csv,
                                                   "--size", "64"})
    assert.are.equal(0, code, text)
    assert.are.equal("dice=1.0000 iou=1.0000 dice_positive=1.0000 iou_positive=1.0000 images=6 positives=3",
                     last_line(text))
    -- drop one positive and one negative image: each is scored as an empty prediction
    local kept, dropped_positive = {}, nil
    for _, row in ipairs(rows) do
      local positive = row[2]:sum() > 0
      if positive and not dropped_positive then
        dropped_positive = row[1]
      elseif positive or kept.negative_dropped then
        kept[#kept + 1] = row
      else
        kept.negative_dropped = true
      end
    end
    kept.negative_dropped = nil
    assert.are.equal(4, #kept)
    lpnx.siim.write_submission(dir .. "/partial.csv", kept)
    text, code = run_script("evaluate.lua", {"--pred", dir .. "/partial.csv", "--truth", truth_csv, "--size", "64"})
    assert.are.equal(0, code, text)
    local out = lines(text)
    assert.matches("^2 of the 6 images of .* have no row in .*: scored as empty predictions$", out[1])
    -- 5 of 6 images score 1 (the dropped negative is empty on empty); 2 of 3 positives score 1
    assert.are.equal(("dice=%.4f iou=%.4f dice_positive=%.4f iou_positive=%.4f images=6 positives=3")
                     :format(5 / 6, 5 / 6, 2 / 3, 2 / 3), out[#out])
  end)

  it("search scores every triplet on probabilities computed once, consistently with run and evaluate", function()
    local grid = {tops = {0.6, 0.9, 1}, min_areas = {0, 30000}, bottoms = {0.5, 0.7}}
    local best, dice, tried = predict.search{model = model_path, data = data_dir, csv = truth_csv,
                                             tops = grid.tops, min_areas = grid.min_areas, bottoms = grid.bottoms}
    assert.are.equal(12, #tried)
    assert.are.equal(best.dice, dice)
    for _, t in ipairs(tried) do assert.is_true(t.dice <= dice) end
    -- top = 1 with a positive min_area empties every image: 3 empty truths score 1, 3 positives 0
    for _, t in ipairs(tried) do
      if t.top == 1 and t.min_area > 0 then
        assert.is_true(math.abs(t.dice - 0.5) < 1e-12 and math.abs(t.iou - 0.5) < 1e-12)
      end
    end
    -- a few combinations scored again through run + evaluate
    for _, k in ipairs {1, 4, 7} do
      local t = tried[k]
      local out = ("%s/search-%d"):format(dir, k)
      predict.run{model = model_path, inputs = data_dir, out = out, top = t.top, min_area = t.min_area,
                  bottom = t.bottom, write_masks = false, write_overlays = false}
      local r = predict.evaluate{pred = out .. "/submission.csv", truth = truth_csv, size = 64}
      assert.is_true(math.abs(r.dice - t.dice) < 1e-9, ("dice %g vs %g"):format(r.dice, t.dice))
      assert.is_true(math.abs(r.iou - t.iou) < 1e-9, ("iou %g vs %g"):format(r.iou, t.iou))
    end
    -- the CLI prints the same choice as flags for predict.lua
    local text, code = run_script("evaluate.lua", {"--search", "--model", model_path, "--data", data_dir,
                                                   "--truth", truth_csv, "--tops", "0.6,0.9,1", "--min-areas",
                                                   "0,30000", "--bottoms", "0.5,0.7"})
    assert.are.equal(0, code, text)
    assert.are.equal(("--top %g --min-area %g --bottom %g"):format(best.top, best.min_area, best.bottom),
                     last_line(text))
    assert.matches(("best: dice=%.4f"):format(dice), text, 1, true)
  end)

  it("the scripts answer a bad flag, a missing file or a missing --truth with one line and exit code 2", function()
    local cases = {
      {"predict.lua", {"--model", dir .. "/nope.safetensors", "--data", data_dir, "--out", dir .. "/x"},
       "predict.lua: --model " .. dir .. "/nope.safetensors: no such file"},
      {"predict.lua", {"--model", model_path, "--data", data_dir, "--out", dir .. "/x", "--bogus"},
       "predict.lua: unknown option '--bogus' (see --help)"},
      {"predict.lua", {"--model", model_path, "--data", dir .. "/none", "--out", dir .. "/x"},
       "predict.lua: --data " .. dir .. "/none: no such file or folder"},
      {"predict.lua", {"--model", model_path, "--data", data_dir, "--out", dir .. "/x", "--top", "high"},
       "predict.lua: --top expects a number, got 'high' (see --help)"},
      {"predict.lua", {"--model", model_path, "--data", data_dir, "--out", dir .. "/x", "--threshold", "0.5",
                       "--bottom", "0.2"},
       "predict.lua: give either --threshold or --top/--min-area/--bottom, not both"},
      {"evaluate.lua", {"--pred", dir .. "/pred/submission.csv", "--size", "64"},
       "evaluate.lua: --truth CSV is required: the true masks to score against (see --help)"},
      {"evaluate.lua", {"--pred", dir .. "/missing.csv", "--truth", truth_csv},
       "evaluate.lua: --pred " .. dir .. "/missing.csv: no such file"},
      {"evaluate.lua", {"--search", "--model", model_path, "--truth", truth_csv},
       "evaluate.lua: --search needs --data (see --help)"},
    }
    for _, case in ipairs(cases) do
      local text, code = run_script(case[1], case[2])
      assert.are.equal(2, code, text)
      assert.are.same({case[3]}, lines(text))
    end
    assert.is_nil(io.open(dir .. "/x/submission.csv"))
  end)
end)
