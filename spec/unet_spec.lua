local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local cjson = require "cjson"

-- Largest |a - b| relative to the largest |b|.
local function rel_err(a, b)
  return (a - b):abs():max() / math.max(b:abs():max(), 1e-12)
end

-- The model of a make_parity.py fixture with its weights loaded.
local function parity_model(path)
  local t, meta = lpnx.load(path)
  local decoder = {}
  for c in meta.decoder_channels:gmatch("%d+") do decoder[#decoder + 1] = math.tointeger(tonumber(c)) end
  local m = lpnx.models.unet{encoder = "resnet" .. meta.depth, encoder_width = math.tointeger(tonumber(meta.base)),
                             decoder_channels = decoder}
  local sd, fx = {}, {}
  for k, v in pairs(t) do
    local key = k:match("^model%.(.*)$")
    if key then sd[key] = v end
    local f = k:match("^fixture%.(.*)$")
    if f then fx[f] = v end
  end
  m:load_state_dict(sd)
  return m, fx, sd
end

-- The fixtures of spec/fixtures/gen/make_parity.sh: PyTorch's float64
-- values, and in torch_f32_relerr how far PyTorch's own float32 run lands
-- from them, check by check. lpnx is held to 3 times that, or to 1e-3 for
-- gradients and 1e-4 for outputs where PyTorch is closer still: a float32
-- implementation cannot promise less than PyTorch's float32 error, and
-- should not be far behind it.
local parity_fixtures = {"resnet18_w8_s32_b2", "resnet34_w4_s64_b2", "resnet18_w8_s96_b1", "resnet18_w8_s96_b4",
                         "resnet18_w8_s160_b2", "resnet34_w8_s64_b3"}

local function yardstick(meta)
  local yard = cjson.decode(meta.torch_f32_relerr)
  return function(check, floor)
    local y = yard[check]
    assert(y, "fixture has no torch_f32_relerr for " .. check)
    return math.max(floor, 3 * y)
  end
end

for _, name in ipairs(parity_fixtures) do
  describe("unet matches PyTorch (" .. name .. ")", function()
    local path = h.fixture("parity/" .. name .. ".safetensors")
    local _, meta = lpnx.load(path)
    local tol = yardstick(meta)

    it("has exactly smp's state-dict keys and shapes", function()
      local m, _, sd = parity_model(path)
      local own, keys = m:state_dict()
      local n = 0
      for k, v in pairs(sd) do
        n = n + 1
        assert.is_truthy(own[k], "missing key " .. k)
        assert.are.same(v:size(), own[k]:size())
      end
      assert.are.equal(n, #keys)
    end)

    it("eval-mode output within the yardstick", function()
      local m, fx = parity_model(path)
      m:eval()
      local y = m:forward(fx.x)
      assert.are.same(fx.y_eval:size(), y:size())
      local e, t = rel_err(y, fx.y_eval), tol("eval output", 1e-4)
      assert.is_true(e <= t, ("eval output: relative error %g, allowed %g"):format(e, t))
    end)

    it("train-mode output, input gradient and every parameter's gradient within the yardstick", function()
      local m, fx = parity_model(path)
      m:train()
      m:zero_grad()
      local y = m:forward(fx.x)
      local e, t = rel_err(y, fx.y_train), tol("train output", 1e-4)
      assert.is_true(e <= t, ("train output: relative error %g, allowed %g"):format(e, t))
      local gx = m:backward(fx.x, fx.grad_y)
      e, t = rel_err(gx, fx.grad_x), tol("grad_x", 1e-3)
      assert.is_true(e <= t, ("grad_x: relative error %g, allowed %g"):format(e, t))
      local checked, failed = 0, {}
      for _, p in ipairs(m:named_parameters()) do
        local want = fx["grad." .. p.name]
        assert.is_truthy(want, "fixture has no gradient for " .. p.name)
        e, t = rel_err(p.grad, want), tol("grad " .. p.name, 1e-3)
        if e > t or e ~= e then failed[#failed + 1] = ("%s: relative error %g, allowed %g"):format(p.name, e, t) end
        checked = checked + 1
      end
      assert.are.equal(#m:named_parameters(), checked)
      assert.are.same({}, failed)
      h.assert_near(m.encoder.bn1.running_mean, fx["after_train.encoder.bn1.running_mean"], 1e-5)
      h.assert_near(m.encoder.bn1.running_var, fx["after_train.encoder.bn1.running_var"], 1e-5)
      assert.are.equal(8, m.encoder.bn1.num_batches_tracked:item())
    end)
  end)
end

describe("unet", function()
  it("builds smp's layout: resnet34 widths, skips and head", function()
    local m = lpnx.models.unet{encoder = "resnet34", encoder_width = 8, decoder_channels = {32, 16, 8, 8, 4}}
    assert.are.same({3, 8, 8, 16, 32, 64}, m.encoder.out_channels)
    local ins = {}
    for i = 1, 5 do ins[i] = m.decoder.blocks:get(i).conv1:get(1).weight:size(2) end
    assert.are.same({64 + 32, 32 + 16, 16 + 8, 8 + 8, 8}, ins) -- previous block + skip (f4, f3, f2, f1, none)
    local sd = m:state_dict()
    for _, key in ipairs {"encoder.conv1.weight", "encoder.bn1.running_var", "encoder.layer2.0.downsample.0.weight",
                          "encoder.layer4.2.bn2.num_batches_tracked", "decoder.blocks.0.conv1.0.weight",
                          "decoder.blocks.0.conv1.1.bias", "decoder.blocks.4.conv2.1.running_mean",
                          "segmentation_head.0.weight", "segmentation_head.0.bias"} do
      assert.is_truthy(sd[key], key)
    end
    assert.is_nil(sd["encoder.fc.weight"])
    local y = m:forward(lpnx.randn(1, 3, 64, 32))
    assert.are.same({1, 1, 64, 32}, y:size())
  end)

  it("the full-width resnet34 U-Net has smp's 24.4M parameters", function()
    local m = lpnx.models.unet{encoder = "resnet34"}
    assert.are.equal(24436369, m:num_parameters())
  end)

  it("loads a torchvision ResNet state dict into the encoder, ignoring fc", function()
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
    local tv = {}
    for k, v in pairs(m.encoder:state_dict()) do tv[k] = lpnx.full(v:size(), 0.5) end
    tv["fc.weight"] = lpnx.zeros(1000, 32)
    tv["fc.bias"] = lpnx.zeros(1000)
    assert.has_error(function() m.encoder:load_state_dict(tv) end)
    local report = m.encoder:load_state_dict(tv, {strict = false})
    assert.are.same({"fc.bias", "fc.weight"}, report.unexpected)
    assert.are.same({}, report.missing)
    assert.are.equal(0.5, m.encoder.layer4:get(2).conv2.weight:get(1, 1, 1, 1))
  end)

  it("strict loading lists missing, unexpected and wrongly shaped keys", function()
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
    local sd = {}
    for k, v in pairs(m:state_dict()) do sd[k] = v:clone() end
    sd["encoder.conv1.weight"] = nil
    sd["decoder.extra"] = lpnx.zeros(1)
    sd["segmentation_head.0.bias"] = lpnx.zeros(2)
    local before = m.encoder.bn1.weight:clone()
    sd["encoder.bn1.weight"]:fill_(3)
    local ok, err = pcall(m.load_state_dict, m, sd)
    assert.is_false(ok)
    assert.matches("missing keys: encoder.conv1.weight", err, 1, true)
    assert.matches("unexpected keys: decoder.extra", err, 1, true)
    assert.matches("segmentation_head.0.bias: expected (1), got (2)", err, 1, true)
    assert.is_true(m.encoder.bn1.weight:equal(before)) -- nothing loaded
    local report = m:load_state_dict(sd, {strict = false})
    assert.are.same({"encoder.conv1.weight"}, report.missing)
    assert.are.equal(1, #report.mismatched)
    assert.are.equal(3, m.encoder.bn1.weight[1]) -- what matched was loaded
  end)

  it("model files rebuild the model from the file alone", function()
    local dir = h.tmpdir()
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
    m:eval()
    local x = lpnx.randn(1, 3, 32, 32)
    local y = m:forward(x)
    lpnx.models.save(dir .. "/m.safetensors", m, {input_size = 32})
    local m2, meta = lpnx.models.load(dir .. "/m.safetensors")
    assert.are.equal("resnet18", meta.encoder)
    assert.are.equal(32, meta.input_size)
    assert.are.same({0.485, 0.456, 0.406}, meta.mean)
    assert.is_true(m2:forward(x):equal(y))
    h.rmdir(dir)
  end)

  it("rejects inputs whose size is not a multiple of 32", function()
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
    local ok, err = pcall(m.forward, m, lpnx.zeros(1, 3, 40, 32))
    assert.is_false(ok)
    assert.matches("multiples of 32, got (1,3,40,32)", err, 1, true)
  end)
end)
