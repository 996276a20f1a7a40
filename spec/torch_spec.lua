-- lpnx.load_torch: checkpoints written by Debian's PyTorch with torch.save
-- (spec/fixtures/gen/make_torch_fixtures.py), each held to a safetensors
-- twin that the same script wrote with Python's standard library; and the
-- checkpoints it must refuse without running anything.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local function fixture(name) return h.fixture("torch/" .. name) end

-- every tensor of a equal, bit for bit, to b's, and the same names
local function assert_same_tensors(a, b)
  local n = 0
  for name, t in pairs(b) do
    assert.is_truthy(a[name], "missing " .. name)
    assert.are.same(t:size(), a[name]:size(), name)
    if t:numel() > 0 then assert.are.equal(0, h.max_diff(a[name], t), name) end
    n = n + 1
  end
  for name in pairs(a) do assert.is_truthy(b[name], "extra " .. name) end
  return n
end

describe("lpnx.load_torch", function()
  it("reads torch.save(state_dict) to the values of its safetensors twin, in the file's order", function()
    local tensors, info, names = lpnx.load_torch(fixture("unet_state.pth"))
    local twin = lpnx.load(fixture("unet_state.safetensors"))
    assert.are.equal(#names, assert_same_tensors(tensors, twin))
    assert.are.equal("encoder.conv1.weight", names[1])
    assert.are.same({}, info)
    -- and into lpnx's U-Net, whose forward pass then matches the twin's
    local function model(weights)
      local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {16, 8, 8, 4, 4}}
      m:load_state_dict(weights)
      m:eval()
      return m
    end
    local x = lpnx.randn(1, 3, 64, 64, lpnx.Generator(3))
    local a, b = model(tensors):forward(x), model(twin):forward(x)
    assert.are.equal(0, h.max_diff(a, b))
  end)

  -- the weights and other values of the training checkpoint the fixture script saved
  local function assert_training_checkpoint(file)
    local tensors, info = lpnx.load_torch(fixture(file))
    assert_same_tensors(tensors, lpnx.load(fixture("unet_training.safetensors")))
    assert.are.equal(7, info.epoch)
    assert.are.equal(0.8125, info.best_dice)
    assert.are.equal("unet-resnet18", info.arch)
    assert.matches("^%(%d+ tensors, not loaded%)$", info.optimizer)
  end

  -- the U-Net models.load rebuilds from file gives the twin's model's logits, bit for bit
  local function assert_predicts_as_twin(file)
    local a = lpnx.models.load(fixture(file))
    local b = lpnx.models.load(fixture("unet_training.safetensors"))
    local x = lpnx.randn(1, 3, 64, 64, lpnx.Generator(4))
    assert.are.equal(0, h.max_diff(a:forward(x), b:forward(x)))
  end

  it("finds the weights of a training checkpoint and returns its other values", function()
    assert_training_checkpoint("unet_training.pth")
  end)

  it("removes DataParallel's module. prefix", function()
    local tensors, _, names = lpnx.load_torch(fixture("unet_dataparallel.pth"))
    assert_same_tensors(tensors, lpnx.load(fixture("unet_training.safetensors")))
    for _, n in ipairs(names) do assert.is_nil(n:find("^module%.")) end
  end)

  it("honours offsets, strides and shared storages, and converts every element type", function()
    local tensors, _, names = lpnx.load_torch(fixture("views.pth"))
    assert_same_tensors(tensors, lpnx.load(fixture("views.safetensors")))
    assert.are.same({"base", "tail", "transposed", "every_other", "tied", "half", "bfloat", "double", "long", "byte",
                     "flag", "scalar", "empty", "param", "sub.inner", "sub.deeper.x"}, names)
    -- base viewed 4x6 and transposed: its first row is base's elements 1, 7, 13 and 19
    assert.are.same({{-1, -0.25, 0.5, 1.25}}, tensors.transposed:narrow(1, 1, 1):totable())
    assert.are.same({3, -4, 1099511627776}, tensors.long:totable())
    assert.are.same({1, 0, 1}, tensors.flag:totable())
    assert.are.same({0, 3}, tensors.empty:size())
    -- each tensor is its own copy: changing one leaves the tensor that shared its storage alone
    tensors.base:fill_(9)
    assert.are.equal(-1 + 5 / 8, tensors.tail:totable()[1])
  end)

  it("reads the legacy format of PyTorch before 1.6 to the same values", function()
    assert_training_checkpoint("unet_training_legacy.pth")
    local views, _, names = lpnx.load_torch(fixture("views_legacy.pth"))
    assert_same_tensors(views, lpnx.load(fixture("views.safetensors")))
    assert.are.equal(16, #names)
    -- and the model it holds predicts as the twin's does
    assert_predicts_as_twin("unet_training_legacy.pth")
  end)

  it("reads numpy scalars among a checkpoint's values, and the legacy format at pickle protocol 4", function()
    local tensors, info = lpnx.load_torch(fixture("numpy_scalars.pth"))
    assert.are.same({1, 1}, tensors.w:totable())
    assert.are.equal(0.8125, info.best_dice)
    assert.are.equal(3, info.epoch)
    assert.are.equal(math.type(3), math.type(info.epoch))
    assert.are.equal(0.5, info.lr)
    assert.are.equal(-1.5, info.half)
    assert.are.equal(true, info.improved)
    assert.are.equal(-7, info.small)
    -- torch.compile's "_orig_mod." under DataParallel's "module.", both removed
    local p, _, names = lpnx.load_torch(fixture("prefixed_legacy_p4.pth"))
    assert_same_tensors(p, lpnx.load(fixture("prefixed.safetensors")))
    assert.are.same({"a", "b"}, names)
  end)

  it("finds a U-Net under the prefix PyTorch Lightning puts before its names", function()
    assert_predicts_as_twin("unet_lightning.ckpt")
  end)

  it("names a truncated or damaged legacy file and what is wrong with it", function()
    local dir = h.tmpdir()
    local f = assert(io.open(fixture("unet_training_legacy.pth"), "rb"))
    local bytes = f:read("a")
    f:close()
    local function write(name, b)
      local path = dir .. "/" .. name
      local o = assert(io.open(path, "wb"))
      o:write(b)
      o:close()
      return path
    end
    local cases = {
      {write("cut_storage.pth", bytes:sub(1, #bytes - 100)), "cut_storage.pth: the file ends inside storage"},
      {write("cut_pickle.pth", bytes:sub(1, 400)), "cut_pickle.pth: the legacy checkpoint's object: .*ends"},
      {write("tail.pth", bytes .. "xx"), "tail.pth: 2 bytes after the last storage"},
      {write("no_magic.pth", "\128\2K\1." .. bytes:sub(16)), "no_magic.pth: a bare pickle without PyTorch's magic"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(lpnx.load_torch, c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end
    h.rmdir(dir)
  end)

  it("refuses a pickle that would call os.system or eval, and runs nothing", function()
    local marker = "/tmp/lpnx-torch-fixture-ran"
    os.remove(marker)
    local ok, err = pcall(lpnx.load_torch, fixture("evil_system.pth"))
    assert.is_false(ok)
    assert.matches("evil_system.pth: .*data.pkl: pickle: at byte %d+: global posix.system is not allowed", err)
    assert.is_nil(io.open(marker))
    ok, err = pcall(lpnx.load_torch, fixture("evil_eval.pth"))
    assert.is_false(ok)
    assert.matches("global __builtin__.eval is not allowed", err, 1, true)
    ok, err = pcall(lpnx.load_torch, fixture("whole_module.pth"))
    assert.is_false(ok)
    assert.matches("global torch.nn.modules.linear.Linear is not allowed", err, 1, true)
  end)

  it("load_weights tells a checkpoint from a safetensors file by its bytes, not its name", function()
    local dir = h.tmpdir()
    local renamed = dir .. "/weights.safetensors"
    assert(os.execute(("cp %s %s"):format(h.quote(fixture("unet_state.pth")), h.quote(renamed))))
    local a = lpnx.load_weights(renamed)
    local b = lpnx.load_weights(fixture("unet_state.safetensors"))
    assert_same_tensors(a, b)
    h.rmdir(dir)
  end)

  -- What train.run logs when it starts (and trains max_steps steps) from the
  -- fixture file as its pretrained encoder.
  local function train_log(file, max_steps)
    local dir = h.tmpdir()
    local data = dir .. "/data"
    lpnx.synth.write{out = data, count = 4, seed = 2, positive = 0.5, size = 64, test_fraction = 0}
    local lines = {}
    lpnx.train.run{data = data, out = dir .. "/run", size = 64, encoder = "resnet18", encoder_width = 4,
                   decoder_channels = {16, 8, 8, 4, 4}, epochs = 1, batch = 2, workers = 0, no_val = true,
                   pretrained = fixture(file), progress = false, augment = false, max_steps = max_steps,
                   log_fn = function(l) lines[#lines + 1] = l end}
    h.rmdir(dir)
    return table.concat(lines, "\n")
  end

  it("takes a ResNet file with torchvision's names as the encoder, its fc.* ignored, and says it is no U-Net",
     function()
    assert.matches("(2 keys ignored)", train_log("resnet_torchvision_names.pth", 0), 1, true)
    local resnet = lpnx.load_torch(fixture("resnet_torchvision_names.pth"))
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {16, 8, 8, 4, 4}}
    local report = m.encoder:load_state_dict(resnet, {strict = false})
    assert.are.same({"fc.bias", "fc.weight"}, report.unexpected)
    assert.are.same({}, report.missing)
    local twin = lpnx.load(fixture("unet_training.safetensors"))
    assert.are.equal(0, h.max_diff(m.encoder.layer4:get(2).bn2.running_var, twin["encoder.layer4.1.bn2.running_var"]))
    local ok, err = pcall(lpnx.models.load, fixture("resnet_torchvision_names.pth"))
    assert.is_false(ok)
    assert.matches("a ResNet's weights %(conv1.weight, layer1...%), not a U%-Net's", err)
  end)

  it("gives train's --pretrained a PyTorch checkpoint's encoder", function()
    local text = train_log("unet_state.pth")
    -- the decoder's and the head's keys are the ones ignored
    local tensors = lpnx.load_torch(fixture("unet_state.pth"))
    local other = 0
    for name in pairs(tensors) do if not name:find("^encoder%.") then other = other + 1 end end
    assert.matches(("pretrained encoder weights from %s (%d keys ignored)"):format(fixture("unet_state.pth"), other),
                   text, 1, true)
  end)

  it("says what is wrong with other files, naming them", function()
    local cases = {
      {"/nonexistent/x.pth", "/nonexistent/x.pth: cannot read it"},
      {fixture("short_storage.pth"), "short_storage.pth: views/data/0 holds 10 bytes, but its storage is 24 "
                                     .. "elements of float32 %(96 bytes%)"},
      {fixture("unet_state.safetensors"), "unet_state.safetensors: not a PyTorch checkpoint %(Not a zip archive%)"},
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(lpnx.load_torch, c[1])
      assert.is_false(ok)
      assert.matches(c[2], err)
    end
    assert.has_error(function() lpnx.load_torch(3) end, "lpnx.load_torch: expected a path, got number")
  end)

  it("gives a clear error, never a crash, for truncated and damaged checkpoints", function()
    local bytes = h.read(fixture("unet_state.pth"))
    local dir = h.tmpdir()
    local path = dir .. "/cut.pth"
    for _, len in ipairs {0, 10, 100, 1000, 4096, #bytes // 2, #bytes - 100, #bytes - 1} do
      local f = assert(io.open(path, "wb"))
      f:write(bytes:sub(1, len))
      f:close()
      local ok, err = pcall(lpnx.load_torch, path)
      assert.is_false(ok, "cut at " .. len)
      assert.matches("^lpnx.load_torch: " .. dir:gsub("%p", "%%%0") .. "/cut.pth: ", err)
    end
    -- bytes changed inside the archive's records: libzip's checksums catch them
    local g = lpnx.Generator(5)
    local damaged = 0
    for _ = 1, 40 do
      local at = g:random(200, #bytes - 200)
      local b = bytes:sub(1, at - 1) .. string.char((bytes:byte(at) + 1 + g:random(254)) % 256) .. bytes:sub(at + 1)
      local f = assert(io.open(path, "wb"))
      f:write(b)
      f:close()
      local ok, err = pcall(lpnx.load_torch, path)
      if not ok then
        damaged = damaged + 1
        assert.matches("cut.pth: ", err)
      end
    end
    assert.is_true(damaged >= 30, "damaged files refused: " .. damaged)
    h.rmdir(dir)
  end)
end)
