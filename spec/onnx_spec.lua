-- lpnx.models.export_onnx against the real tools: every exported file must
-- pass onnx.checker.check_model (with shape inference) and, run in
-- OpenCV's DNN module, give lpnx's logits (spec/support/onnx_run.py,
-- Debian's python3-onnx and python3-opencv). And models.load by content:
-- weights-only files (PyTorch or safetensors) with the architecture read
-- off their tensors.
local lpnx = require "lpnx"
local cjson = require "cjson"
local fs = require "lpnx.fs"
local h = require "spec.support.helpers"

-- Debian's Python with onnx and cv2, outside the sanitizer of make ASAN=1
local PY = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS /usr/bin/python3"
local RUN = "spec/support/onnx_run.py"
local TORCH = "spec/fixtures/torch/"

local tmp
setup(function() tmp = h.tmpdir() end)
teardown(function() h.rmdir(tmp) end)

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

-- A narrow U-Net in eval mode with batch-norm statistics far from the
-- defaults, so that folding them is tested.
local function model_of(encoder, seed)
  lpnx.manual_seed(seed or 3)
  local m = lpnx.models.unet{encoder = encoder, encoder_width = 8, decoder_channels = {32, 16, 16, 8, 8}}
  m:apply(function(x)
    if x.running_mean then
      x.running_mean:uniform_(-0.3, 0.3)
      x.running_var:uniform_(0.4, 2.5)
      x.weight:uniform_(0.5, 1.5)
      x.bias:uniform_(-0.2, 0.2)
    end
  end)
  m:eval()
  return m
end

-- Exports m, runs the file in OpenCV on x; returns OpenCV's logits and the
-- facts onnx_run.py printed about the model.
local function run_onnx(m, x, opts, name)
  local path = ("%s/%s.onnx"):format(tmp, name)
  lpnx.models.export_onnx(m, path, opts)
  local input, output = tmp .. "/in.safetensors", tmp .. "/out.safetensors"
  lpnx.save(input, {image = x})
  local ok, out = sh(("%s %s %s %s %s"):format(PY, RUN, path, input, output))
  assert(ok, "onnx_run.py failed: " .. out)
  local facts
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then facts = cjson.decode(line) end
  end
  assert(facts, "onnx_run.py printed no facts: " .. out)
  return lpnx.load(output).logits, facts
end

-- OpenCV agrees with lpnx to 1e-4 of the logits' scale (at least 1).
local function assert_agrees(got, want)
  assert.are.same(want:size(), got:size())
  local scale = math.max(1, want:abs():max())
  local d = (got - want):abs():max()
  assert(d <= 1e-4 * scale, ("OpenCV's logits differ from lpnx's by %g (scale %g)"):format(d, scale))
end

local ALLOWED = {Conv = true, BatchNormalization = true, Relu = true, MaxPool = true, Resize = true,
                 Concat = true, Add = true}

describe("export_onnx", function()
  it("writes a ResNet-18 U-Net that passes the ONNX checker and runs in OpenCV to lpnx's logits", function()
    local m = model_of("resnet18")
    local x = lpnx.randn(2, 3, 64, 64, lpnx.Generator(5))
    local want = m:forward(x):clone()
    local got, facts = run_onnx(m, x, {size = 64}, "r18")
    assert_agrees(got, want)
    assert.are.equal(8, facts.ir_version)
    assert.are.equal(17, facts.opset)
    assert.are.equal("image", facts.input)
    assert.are.equal("logits", facts.output)
    assert.are.same({"batch", 3, 64, 64}, facts.input_dims)
    for _, op in ipairs(facts.ops) do assert(ALLOWED[op], "unexpected op " .. op) end
    assert.is_nil(facts.ops.BatchNormalization)
    local meta = facts.metadata
    assert.are.equal(lpnx.version, meta["lpnx.version"])
    assert.are.equal("resnet18", meta.encoder)
    assert.are.equal("64", meta.input_size)
    assert.are.equal("0.485,0.456,0.406", meta.mean)
    assert.are.equal("0.229,0.224,0.225", meta.std)
    assert.are.equal("folded into the convolutions", meta.batchnorm)
  end)

  it("keeps BatchNormalization nodes with fold_bn = false, and a fixed batch at opset 13", function()
    local m = model_of("resnet18", 4)
    local x = lpnx.randn(3, 3, 64, 96, lpnx.Generator(6))
    local want = m:forward(x):clone()
    local got, facts = run_onnx(m, x, {size = {64, 96}, fold_bn = false, batch = 3, opset = 13}, "bn")
    assert_agrees(got, want)
    assert.are.equal(7, facts.ir_version)
    assert.are.equal(13, facts.opset)
    assert.are.same({3, 3, 64, 96}, facts.input_dims)
    local has_bn = false
    for _, op in ipairs(facts.ops) do has_bn = has_bn or op == "BatchNormalization" end
    assert.is_true(has_bn)
  end)

  it("exports the Bottleneck blocks of ResNet-50 and a one-channel input", function()
    lpnx.manual_seed(7)
    local m = lpnx.models.unet{encoder = "resnet50", encoder_width = 4, decoder_channels = {16, 16, 8, 8, 4},
                               in_channels = 1, classes = 2}
    m:eval()
    local x = lpnx.randn(1, 1, 64, 64, lpnx.Generator(8))
    local want = m:forward(x):clone()
    local got, facts = run_onnx(m, x, {size = 64, opset = 15}, "r50")
    assert_agrees(got, want)
    assert.are.same({"batch", 1, 64, 64}, facts.input_dims)
    assert.are.equal("2", facts.metadata.classes)
    assert.are.equal("0.485", facts.metadata.mean)
    assert.are.equal("0.229", facts.metadata.std)
  end)

  it("refuses bad options and a model that is no U-Net, naming what is wrong", function()
    local m = model_of("resnet18")
    local path = tmp .. "/bad.onnx"
    local function refuses(opts, pattern)
      local ok, err = pcall(lpnx.models.export_onnx, m, path, opts)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    refuses({size = 100}, "size must be a multiple of 32")
    refuses({opset = 12}, "opset must be an integer from 13 to 17, got 12")
    refuses({batch = 0}, "batch must be \"dynamic\" or a positive integer, got 0")
    refuses({fold_bn = "yes"}, "fold_bn must be a boolean")
    refuses({sizes = 64}, "unknown option 'sizes'")
    local ok, err = pcall(lpnx.models.export_onnx, {}, path)
    assert.is_false(ok)
    assert.matches("expected a model made by lpnx.models.unet", err)
    assert.is_nil(fs.stat(path))
  end)

  it("names the file it cannot write", function()
    local ok, err = pcall(lpnx.models.export_onnx, model_of("resnet18"), tmp .. "/no/such/dir/m.onnx", {size = 64})
    assert.is_false(ok)
    assert.matches("no/such/dir/m.onnx", err)
  end)
end)

describe("models.load by content", function()
  it("rebuilds a U-Net from a PyTorch checkpoint's weights alone, as from their safetensors twin", function()
    local a, ia = lpnx.models.load(TORCH .. "unet_state.pth")
    local b = lpnx.models.load(TORCH .. "unet_state.safetensors")
    assert.are.equal("resnet18", ia.encoder)
    assert.are.equal(256, ia.input_size)
    assert.are.same(lpnx.models.imagenet_mean, ia.mean)
    local x = lpnx.randn(1, 3, 64, 64, lpnx.Generator(2))
    assert.are.equal(0, (a:forward(x) - b:forward(x)):abs():max())
    local _, ic = lpnx.models.load(TORCH .. "unet_training.pth", {encoder = "resnet18", size = 512})
    assert.are.equal(512, ic.input_size)
  end)

  it("refuses a file whose weights are no U-Net, or hold another encoder than the one asked for", function()
    local ok, err = pcall(lpnx.models.load, TORCH .. "views.pth")
    assert.is_false(ok)
    assert.matches("views.pth: no encoder.conv1.weight and segmentation_head.0.weight", err)
    ok, err = pcall(lpnx.models.load, TORCH .. "unet_state.pth", {encoder = "resnet34"})
    assert.is_false(ok)
    assert.matches("unet_state.pth: holds a resnet18 encoder, not resnet34", err)
  end)
end)

describe("predict.lua with PyTorch weights and --export-onnx", function()
  it("exports a checkpoint to ONNX that OpenCV runs to lpnx's logits, and predicts from it", function()
    local onnx_path = tmp .. "/cli.onnx"
    local ok, out = sh(("lua5.4 examples/predict.lua --model %sunet_state.pth --encoder resnet18 --input-size 64 "
                        .. "--export-onnx %s"):format(TORCH, onnx_path))
    assert(ok, out)
    assert.matches("wrote .*cli.onnx: the resnet18 U%-Net as ONNX, %d+ nodes, input %(batch, 3, 64, 64%)", out)
    local m = lpnx.models.load(TORCH .. "unet_state.pth")
    local x = lpnx.randn(1, 3, 64, 64, lpnx.Generator(9))
    local want = m:forward(x):clone()
    lpnx.save(tmp .. "/in.safetensors", {image = x})
    local ran, msg = sh(("%s %s %s %s %s"):format(PY, RUN, onnx_path, tmp .. "/in.safetensors",
                                                  tmp .. "/o.safetensors"))
    assert(ran, msg)
    assert_agrees(lpnx.load(tmp .. "/o.safetensors").logits, want)
    local bad, err, code = sh(("lua5.4 examples/predict.lua --model %sunet_state.pth --encoder resnet50 "
                               .. "--export-onnx %s/x.onnx"):format(TORCH, tmp))
    assert.is_falsy(bad)
    assert.are.equal(2, code)
    assert.matches("holds a resnet18 encoder, not resnet50", err)
    local png = tmp .. "/film.png"
    lpnx.png.write(png, lpnx.rand(1, 96, 80, lpnx.Generator(4)))
    ok, out = sh(("lua5.4 examples/predict.lua --model %sunet_state.pth --input-size 64 --data %s --out %s/pred "
                  .. "--quiet"):format(TORCH, png, tmp))
    assert(ok, out)
    assert.matches("predicted 1 images", out)
    local rows = 0
    for _ in io.lines(tmp .. "/pred/submission.csv") do rows = rows + 1 end
    assert.are.equal(2, rows)
  end)
end)
