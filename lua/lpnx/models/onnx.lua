-- lpnx.models.export_onnx: the U-Net as an ONNX graph, for the runtimes
-- hospitals deploy (ONNX Runtime, OpenVINO, TensorRT, OpenCV's DNN).
--
-- The graph is the model's inference forward, layer for layer: Conv
-- (BatchNorm folded into its weights and bias, or kept as
-- BatchNormalization nodes), Relu, MaxPool, Add for the residual blocks,
-- Resize (nearest, asymmetric, floor: PyTorch's 2x nearest upsampling),
-- Concat for the skips, and the head's Conv. Input "image" (N, C, H, W),
-- normalised as the model was trained (the metadata says how); output
-- "logits" (N, classes, H, W): a sigmoid of them is the probability.
-- The description is Lua data; lpnx/io/onnx.c encodes it with protobuf-c.
local lpnx = require "lpnx"
local core = require "lpnx.core"
local util = require "lpnx.util"

local onnx = {}

-- the IR version each supported opset belongs to (onnx/helper.py's table)
local IR_OF_OPSET = {[13] = 7, [14] = 7, [15] = 8, [16] = 8, [17] = 8}

-- The first n values of list (a grey model takes the first channel's statistics, as data.prepare does).
local function per_channel(list, n)
  return table.move(list, 1, math.min(n, #list), 1, {})
end

local function join(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = ("%.9g"):format(v) end
  return table.concat(out, ",")
end

-- A graph under construction: nodes, initializers and fresh value names.
local Graph = {}
Graph.__index = Graph

local function new_graph(fold_bn)
  return setmetatable({nodes = {}, initializers = {}, fold_bn = fold_bn}, Graph)
end

function Graph:init(name, tensor)
  self.initializers[#self.initializers + 1] = {name = name, tensor = tensor:contiguous()}
  return name
end

function Graph:node(op, name, inputs, attrs)
  local out = name
  self.nodes[#self.nodes + 1] = {op = op, name = name, inputs = inputs, outputs = {out}, attrs = attrs}
  return out
end

local function conv_attrs(conv)
  return {
    {"kernel_shape", "ints", {conv.kh, conv.kw}},
    {"strides", "ints", {conv.sh, conv.sw}},
    {"pads", "ints", {conv.ph, conv.pw, conv.ph, conv.pw}},
    {"dilations", "ints", {conv.dh, conv.dw}},
    {"group", "int", 1},
  }
end

-- conv's weight and bias with the inference batch norm bn folded in:
-- w * s and (b - mean) * s + beta, s = gamma / sqrt(var + eps), per output
-- channel, the scale worked out in double precision.
local function folded(conv, bn)
  local cout = conv.cout
  local gamma, beta = bn.weight:totable(), bn.bias:totable()
  local mean, var = bn.running_mean:totable(), bn.running_var:totable()
  local b0 = conv.bias and conv.bias:totable() or nil
  local scale, shift = {}, {}
  for o = 1, cout do
    local s = gamma[o] / math.sqrt(var[o] + bn.eps)
    scale[o] = s
    shift[o] = ((b0 and b0[o] or 0) - mean[o]) * s + beta[o]
  end
  local w = conv.weight:contiguous():view(cout, -1) * lpnx.tensor(scale):view(cout, 1)
  return w:view(conv.weight:size()), lpnx.tensor(shift)
end

-- Conv (and its batch norm, folded or as a node of its own) on x.
function Graph:conv(conv, bn, x, name)
  local inputs
  if bn and self.fold_bn then
    local w, b = folded(conv, bn)
    inputs = {x, self:init(name .. ".weight", w), self:init(name .. ".bias", b)}
  else
    inputs = {x, self:init(name .. ".weight", conv.weight)}
    if conv.bias then inputs[3] = self:init(name .. ".bias", conv.bias) end
  end
  local y = self:node("Conv", name, inputs, conv_attrs(conv))
  if bn and not self.fold_bn then
    local bname = name .. ".bn"
    y = self:node("BatchNormalization", bname, {
      y, self:init(bname .. ".weight", bn.weight), self:init(bname .. ".bias", bn.bias),
      self:init(bname .. ".running_mean", bn.running_mean), self:init(bname .. ".running_var", bn.running_var),
    }, {{"epsilon", "float", bn.eps}})
  end
  return y
end

function Graph:relu(x) return self:node("Relu", x .. ".relu", {x}) end

-- A residual block (BasicBlock or Bottleneck) of the encoder.
function Graph:block(b, x, name)
  local y = self:relu(self:conv(b.conv1, b.bn1, x, name .. ".conv1"))
  if b.conv3 then
    y = self:relu(self:conv(b.conv2, b.bn2, y, name .. ".conv2"))
    y = self:conv(b.conv3, b.bn3, y, name .. ".conv3")
  else
    y = self:conv(b.conv2, b.bn2, y, name .. ".conv2")
  end
  local shortcut = x
  if b.downsample then
    shortcut = self:conv(b.downsample:get(1), b.downsample:get(2), x, name .. ".downsample")
  end
  return self:relu(self:node("Add", name .. ".add", {y, shortcut}))
end

function Graph:encoder(e, x)
  local f = {}
  f[1] = self:relu(self:conv(e.conv1, e.bn1, x, "encoder.conv1"))
  local y = self:node("MaxPool", "encoder.maxpool", {f[1]}, {
    {"kernel_shape", "ints", {e.maxpool.kh, e.maxpool.kw}},
    {"strides", "ints", {e.maxpool.sh, e.maxpool.sw}},
    {"pads", "ints", {e.maxpool.ph, e.maxpool.pw, e.maxpool.ph, e.maxpool.pw}},
  })
  for i = 1, 4 do
    local layer = e["layer" .. i]
    for j = 1, #layer do
      y = self:block(layer:get(j), y, ("encoder.layer%d.%d"):format(i, j - 1))
    end
    f[i + 1] = y
  end
  return f
end

function Graph:decoder(d, f)
  local scales = self:init("decoder.upsample_scales", lpnx.tensor {1, 1, 2, 2})
  local x = f[5]
  for i = 1, 5 do
    local block, name = d.blocks:get(i), ("decoder.blocks.%d"):format(i - 1)
    x = self:node("Resize", name .. ".upsample", {x, "", scales}, {
      {"mode", "string", "nearest"},
      {"coordinate_transformation_mode", "string", "asymmetric"},
      {"nearest_mode", "string", "floor"},
    })
    if block.cskip > 0 then x = self:node("Concat", name .. ".concat", {x, f[5 - i]}, {{"axis", "int", 1}}) end
    x = self:relu(self:conv(block.conv1:get(1), block.conv1:get(2), x, name .. ".conv1"))
    x = self:relu(self:conv(block.conv2:get(1), block.conv2:get(2), x, name .. ".conv2"))
  end
  return x
end

local function check_options(opts)
  opts = util.check_options(opts, {"size", "batch", "opset", "fold_bn"}, "export_onnx", 4)
  local size = opts.size or 256
  local h, w
  if type(size) == "table" then h, w = size[1], size[2] else h, w = size, size end
  for _, v in ipairs {h, w} do
    if math.type(v) ~= "integer" or v < 32 or v % 32 ~= 0 then
      error(("export_onnx: size must be a multiple of 32 (or {h, w} of them), got %s"):format(tostring(v)), 3)
    end
  end
  local batch = opts.batch or "dynamic"
  if batch ~= "dynamic" and not (math.type(batch) == "integer" and batch >= 1) then
    error(("export_onnx: batch must be \"dynamic\" or a positive integer, got %s"):format(tostring(batch)), 3)
  end
  local opset = opts.opset or 17
  if not IR_OF_OPSET[opset] then
    error(("export_onnx: opset must be an integer from 13 to 17, got %s"):format(tostring(opset)), 3)
  end
  local fold_bn = opts.fold_bn
  if fold_bn == nil then fold_bn = true end
  if type(fold_bn) ~= "boolean" then error("export_onnx: fold_bn must be a boolean", 3) end
  return {h = h, w = w, batch = batch, opset = opset, fold_bn = fold_bn}
end

-- export_onnx(model, path [, {size = 256 | {h, w}, batch = "dynamic" | n, opset = 17, fold_bn = true}])
-- -> the number of graph nodes. Writes atomically: a file already at path
-- stays as it was if anything fails.
function onnx.export(model, path, opts)
  local c = type(model) == "table" and model.config
  if not c or not model.encoder or not model.decoder then
    error("export_onnx: expected a model made by lpnx.models.unet or lpnx.models.load", 2)
  end
  if type(path) ~= "string" or path == "" then error("export_onnx: path must be a file name", 2) end
  local o = check_options(opts)
  local models = require "lpnx.models"
  local g = new_graph(o.fold_bn)
  local x = g:decoder(model.decoder, g:encoder(model.encoder, "image"))
  local head = model.segmentation_head:get(1)
  g:conv(head, nil, x, "segmentation_head")
  g.nodes[#g.nodes].outputs = {"logits"}
  local n = o.batch == "dynamic" and "batch" or o.batch
  local desc = {
    ir_version = IR_OF_OPSET[o.opset], opset = o.opset,
    producer_name = "lpnx", producer_version = lpnx.version or "unknown",
    graph_name = ("lpnx_unet_%s"):format(c.encoder),
    doc = ("U-Net (%s encoder, width %d) for pneumothorax segmentation; input normalised by mean/std, "
           .. "output logits (sigmoid gives the probability)"):format(c.encoder, c.encoder_width),
    nodes = g.nodes, initializers = g.initializers,
    inputs = {{name = "image", dims = {n, c.in_channels, o.h, o.w}}},
    outputs = {{name = "logits", dims = {n, c.classes, o.h, o.w}}},
    metadata = {
      {"lpnx.version", lpnx.version or "unknown"},
      {"lpnx.model", "unet"},
      {"encoder", c.encoder},
      {"encoder_width", tostring(c.encoder_width)},
      {"decoder_channels", table.concat(c.decoder_channels, ",")},
      {"input_size", o.h == o.w and tostring(o.h) or ("%d,%d"):format(o.h, o.w)},
      {"in_channels", tostring(c.in_channels)},
      {"classes", tostring(c.classes)},
      {"mean", join(per_channel(models.imagenet_mean, c.in_channels))},
      {"std", join(per_channel(models.imagenet_std, c.in_channels))},
      {"input", "image: (N, C, H, W) float32, grey values in [0, 1] minus mean, divided by std, per channel"},
      {"output", "logits: (N, classes, H, W) float32; sigmoid(logits) is the pneumothorax probability"},
      {"batchnorm", o.fold_bn and "folded into the convolutions" or "BatchNormalization nodes"},
    },
  }
  local ok, err = pcall(core._onnx_write, path, desc)
  if not ok then error("export_onnx: " .. tostring(err), 2) end
  return #g.nodes
end

return onnx
