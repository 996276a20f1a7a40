local lpnx = require "lpnx"
local h = require "spec.support.helpers"

-- A small synthetic SIIM-ACR folder shared by these specs.
local dir, data
setup(function()
  dir = h.tmpdir()
  data = dir .. "/data"
  lpnx.synth.write{out = data, count = 12, seed = 4, positive = 0.5, size = 128, test_fraction = 0}
end)
teardown(function() h.rmdir(dir) end)

-- The interpreter's full path, for a child process with its own PATH.
local LUA = io.popen("command -v lua5.4"):read("l")

local function opts(out, extra)
  local o = {data = data, out = out, size = 64, encoder = "resnet18", encoder_width = 4,
             decoder_channels = {16, 8, 8, 4, 4}, epochs = 2, batch = 4, lr = 3e-3, workers = 0, seed = 3,
             progress = false, log_fn = function() end}
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function weights(path)
  local t = lpnx.load(path)
  return t
end

local function same_weights(a, b)
  local ta, tb = weights(a), weights(b)
  for k, v in pairs(ta) do
    if not v:equal(tb[k]) then return false, k end
  end
  return true
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

describe("training", function()
  it("overfits a handful of images: the loss falls and the Dice rises", function()
    local r = lpnx.train.run(opts(dir .. "/fit", {epochs = 60, augment = false, no_val = true, lr = 1e-2,
                                                  encoder_width = 8, positive_fraction = "1"}))
    assert.are.equal(60 * 3, r.steps)
    local losses = {}
    for line in io.lines(dir .. "/fit/log.csv") do
      local loss = tonumber(line:match("^%d+,%d+,([^,]+),"))
      if loss then losses[#losses + 1] = loss end
    end
    local first = (losses[1] + losses[2] + losses[3]) / 3
    local last = (losses[#losses] + losses[#losses - 1] + losses[#losses - 2]) / 3
    assert.is_true(last < 0.6 * first, ("loss %.3f -> %.3f"):format(first, last))
    -- the trained model finds the masks of its training images
    local model = lpnx.models.load(dir .. "/fit/model.safetensors")
    local ds = lpnx.data.siim{root = data, csv = data .. "/train-rle.csv", size = 64}
    local pos = ds:positives()
    local imgs, masks = {}, {}
    for k, i in ipairs(pos) do
      local s = ds:get(i)
      imgs[k], masks[k] = s.image:unsqueeze(1), s.mask:unsqueeze(1)
    end
    local x = lpnx.data.prepare(lpnx.cat(imgs, 1))
    local pred = model:forward(x):sigmoid():gt(0.5)
    local dice = lpnx.metrics.dice(pred, lpnx.cat(masks, 1))
    assert.is_true(dice > 0.5, ("training-set Dice %.3f"):format(dice))
  end)

  it("writes the run folder: weights loadable alone, checkpoint, log and curves", function()
    local out = dir .. "/files"
    lpnx.train.run(opts(out))
    for _, f in ipairs {"model.safetensors", "best.safetensors", "checkpoint.safetensors", "log.csv"} do
      assert.are.equal("file", lpnx.fs.stat(out .. "/" .. f), f)
    end
    local header = io.open(out .. "/log.csv"):read("l")
    assert.are.equal("step,epoch,loss,lr,val_dice,val_iou,seconds", header)
    local model, meta = lpnx.models.load(out .. "/model.safetensors")
    assert.are.equal(64, meta.input_size)
    assert.are.same({16, 8, 8, 4, 4}, model.config.decoder_channels)
    local _, cmeta = lpnx.load(out .. "/checkpoint.safetensors")
    assert.are.equal("1", cmeta["lpnx.checkpoint"])
    assert.are.equal("3", cmeta.epoch)
    -- curves.png where gnuplot is installed; without it train.plot says why
    local kind, size = lpnx.fs.stat(out .. "/curves.png")
    if os.execute("command -v gnuplot > /dev/null 2>&1") then
      assert.are.equal("file", kind)
      assert.is_true(size > 1000)
    end
    local p = io.popen(("PATH=/nonexistent %s -e 'print(require(\"lpnx.train\").plot(\"%s\"))' 2>&1")
                       :format(LUA, out))
    local text = p:read("a")
    p:close()
    assert.are.equal("false\tgnuplot is not installed: no curves.png (log.csv has the numbers)\n", text)
  end)

  it("a stopped and resumed run ends with the same weights and log as an uninterrupted one", function()
    lpnx.train.run(opts(dir .. "/whole", {workers = 1}))
    local stopped = lpnx.train.run(opts(dir .. "/parts", {max_steps = 3, workers = 1}))
    assert.is_true(stopped.interrupted)
    local resumed = lpnx.train.run(opts(dir .. "/parts", {resume = true, workers = 1}))
    assert.is_true(resumed.resumed)
    assert.is_true(same_weights(dir .. "/whole/model.safetensors", dir .. "/parts/model.safetensors"))
    local function strip_seconds(s) return (s:gsub(",[%d.]*\n", "\n")) end
    assert.are.equal(strip_seconds(read(dir .. "/whole/log.csv")), strip_seconds(read(dir .. "/parts/log.csv")))
  end)

  it("gives the same weights whatever the number of data workers", function()
    lpnx.train.run(opts(dir .. "/w0", {workers = 0}))
    lpnx.train.run(opts(dir .. "/w2", {workers = 2}))
    assert.is_true(same_weights(dir .. "/w0/model.safetensors", dir .. "/w2/model.safetensors"))
  end)

  it("picks the loss, optimizer and schedule by name; an unknown name lists the known ones", function()
    for name, entry in pairs(lpnx.train.losses) do
      assert.is_string(entry.about, name)
      assert.is_function(entry.make().forward, name)
    end
    assert.are.equal(lpnx.optim.by_name, lpnx.train.optimizers)
    assert.are.equal(lpnx.nn.losses, lpnx.train.losses)
    for _, case in ipairs {
      {{loss = "l2"}, "unknown loss 'l2' (bce, combo, dice, focal or focal_dice)"},
      {{optimizer = "lbfgs"}, "unknown optimizer 'lbfgs' (adam, adamw or sgd)"},
      {{scheduler = "step"}, "unknown scheduler 'step' (cosine)"},
    } do
      local ok, err = pcall(lpnx.train.run, opts(dir .. "/names", case[1]))
      assert.is_false(ok)
      assert.are.equal(case[2], err)
    end
    assert.is_nil(lpnx.fs.stat(dir .. "/names")) -- refused before any work
    local r = lpnx.train.run(opts(dir .. "/sgd", {optimizer = "sgd", epochs = 1}))
    assert.are.equal(2, r.steps)
    local _, meta = lpnx.load(dir .. "/sgd/checkpoint.safetensors")
    assert.matches('"optim.type":"SGD"', meta.optimizer, 1, true)
  end)

  it("trains on crops of the --size images and predicts whole images at --size", function()
    -- what the network is given: the crops' sizes, seen through a wrapped random_crop
    local T = lpnx.transforms
    local real, seen = T.random_crop, {}
    T.random_crop = function(o)
      local crop = real(o)
      return function(sample, g)
        local out = crop(sample, g)
        seen[#seen + 1] = ("%dx%d of %dx%d"):format(out.image:size(2), out.image:size(3), sample.image:size(2),
                                                   sample.image:size(3))
        return out
      end
    end
    local ok, r = pcall(lpnx.train.run, opts(dir .. "/crop", {size = 128, crop = 64, crop_positive = 1, epochs = 1}))
    T.random_crop = real
    assert(ok, r)
    assert.is_true(r.steps >= 2)
    assert.is_true(#seen >= 2 * 4)
    for _, what in ipairs(seen) do assert.are.equal("64x64 of 128x128", what) end
    local model, meta = lpnx.models.load(dir .. "/crop/model.safetensors")
    assert.is_truthy(model)
    assert.are.equal(128, meta.input_size)
    -- the crop is part of what a checkpoint must agree with to resume
    local resumed, err = pcall(lpnx.train.run, opts(dir .. "/crop", {size = 128, crop = 96, crop_positive = 1,
                                                                     resume = true}))
    assert.is_false(resumed)
    assert.matches("crop: checkpoint 64, now 96", err, 1, true)
    for _, bad in ipairs {{crop = 48, msg = "crop must be a multiple of 32 from 32 to the size 64, got 48"},
                          {crop = 96, msg = "crop must be a multiple of 32 from 32 to the size 64, got 96"},
                          {crop = 32, crop_positive = 1.5, msg = "crop_positive must be in [0, 1], got 1.5"}} do
      local ok2, err2 = pcall(lpnx.train.run, opts(dir .. "/badcrop", bad))
      assert.is_false(ok2)
      assert.matches(bad.msg, err2, 1, true)
    end
  end)

  it("says when there is no checkpoint to resume, and refuses one made with other settings", function()
    local lines = {}
    lpnx.train.run(opts(dir .. "/fresh", {resume = true, max_steps = 1,
                                          log_fn = function(l) lines[#lines + 1] = l end}))
    assert.matches("no checkpoint in " .. dir .. "/fresh: starting fresh", table.concat(lines, "\n"), 1, true)
    local ok, err = pcall(lpnx.train.run, opts(dir .. "/fresh", {resume = true, batch = 2}))
    assert.is_false(ok)
    assert.matches("was made with other settings", err, 1, true)
    assert.matches("batch: checkpoint 4, now 2", err, 1, true)
  end)
end)

describe("examples/train.lua", function()
  local function run(args)
    local p = io.popen("lua5.4 examples/train.lua " .. args .. " 2>&1; echo \"exit=$?\"")
    local out = p:read("a")
    p:close()
    return out
  end

  it("explains every flag with --help", function()
    local out = run("--help")
    for _, flag in ipairs {"--data", "--csv", "--size", "--encoder", "--encoder-width", "--epochs", "--batch", "--lr",
                           "--loss", "--out", "--pretrained", "--resume", "--save-every", "--seed", "--threads",
                           "--no-val", "--conv-algorithm", "--optimizer", "--scheduler", "--workers", "--crop",
                           "--crop-positive"} do
      assert.matches(flag, out, 1, true)
    end
    assert.matches("exit=0", out, 1, true)
  end)

  it("rejects bad flags and missing folders with one line and exit code 2", function()
    local out = run("--data /nonexistent --out " .. dir .. "/x")
    assert.matches("train.lua: --data /nonexistent is not a folder\nexit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --epochs many")
    assert.matches("exit=2", out, 1, true)
    assert.is_nil(out:find("traceback"))
    out = run("--data " .. data)
    assert.matches("train.lua: missing option '--out'", out, 1, true)
    assert.matches("exit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --pretrained /nonexistent.safetensors")
    assert.matches("--pretrained /nonexistent.safetensors: no such file\nexit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --conv-algorithm fft")
    assert.matches("train.lua: --conv-algorithm must be auto, winograd, winograd2, direct or double, got fft\nexit=2",
                   out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --loss l2")
    assert.matches("train.lua: --loss must be bce, combo, dice, focal or focal_dice, got l2\nexit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --size 48")
    assert.matches("train.lua: --size must be a positive multiple of 32\nexit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --size 64 --crop 128")
    assert.matches("train.lua: --crop 128 is larger than --size 64\nexit=2", out, 1, true)
    out = run("--data " .. data .. " --out " .. dir .. "/x --crop 64 --crop-positive 2")
    assert.matches("train.lua: --crop-positive must be", out, 1, true)
  end)
end)
