-- lpnx.models: the ResNet U-Net, and model files that rebuild it alone.
local lpnx = require "lpnx"
local unet = require "lpnx.models.unet"
local resnet = require "lpnx.models.resnet"

local models = {
  Unet = unet.Unet,
  ResNetEncoder = resnet.Encoder,
  -- ImageNet statistics the pretrained ResNet encoders expect on [0, 1] input.
  imagenet_mean = {0.485, 0.456, 0.406},
  imagenet_std = {0.229, 0.224, 0.225},
}

function models.unet(opts)
  return unet.Unet(opts)
end

local function join(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = tostring(v) end
  return table.concat(parts, ",")
end

local function numbers(s, key, path)
  local list = {}
  for item in tostring(s):gmatch("[^,]+") do
    local v = tonumber(item)
    if not v then error(("%s: metadata '%s' is not a list of numbers: %s"):format(path, key, s), 3) end
    list[#list + 1] = v
  end
  return list
end

-- save(path, model, {input_size=256, mean=, std=, ...}): the state dict
-- plus what rebuilds the model (encoder, widths, classes, channels) and
-- how its input is prepared (size, normalisation). Extra string/number
-- fields are kept as metadata too.
function models.save(path, model, extra)
  local c = model.config
  if not c then error("models.save: expected a model made by lpnx.models.unet", 2) end
  local meta = {
    ["lpnx.model"] = "unet",
    encoder = c.encoder,
    encoder_width = c.encoder_width,
    decoder_channels = join(c.decoder_channels),
    classes = c.classes,
    in_channels = c.in_channels,
    input_size = 256,
    mean = join(models.imagenet_mean),
    std = join(models.imagenet_std),
  }
  for k, v in pairs(extra or {}) do
    meta[k] = type(v) == "table" and join(v) or v
  end
  lpnx.save(path, (model:state_dict()), meta)
end

-- t without the prefix every name shares before the U-Net's own names
-- (PyTorch Lightning's "model.", a wrapper's attribute), or t itself.
local function unprefixed(t)
  local prefix
  for name in pairs(t) do
    prefix = prefix or name:match("^(.+%.)encoder%.conv1%.weight$")
  end
  if not prefix then return t end
  local out = {}
  for name, v in pairs(t) do
    if name:sub(1, #prefix) ~= prefix then return t end
    out[name:sub(#prefix + 1)] = v
  end
  return out
end

-- The architecture a U-Net state dict describes, from its tensors' names
-- and shapes alone (segmentation_models_pytorch's keys): the ResNet by
-- its blocks per stage (and Bottleneck's conv3), the widths by the
-- convolutions' channels. nil and the reason when it is no such U-Net.
local function architecture(t)
  local conv1, head = t["encoder.conv1.weight"], t["segmentation_head.0.weight"]
  if not conv1 or not head then
    if t["conv1.weight"] and t["layer1.0.conv1.weight"] then
      return nil, "a ResNet's weights (conv1.weight, layer1...), not a U-Net's: an encoder for train.lua --pretrained"
    end
    return nil, "no encoder.conv1.weight and segmentation_head.0.weight: not a U-Net state dict"
  end
  local counts = {}
  for i = 1, 4 do
    local n = 0
    while t[("encoder.layer%d.%d.conv1.weight"):format(i, n)] do n = n + 1 end
    counts[i] = n
  end
  local bottleneck = t["encoder.layer1.0.conv3.weight"] ~= nil
  local shape = table.concat(counts, ",")
  local name
  for k, cfg in pairs(resnet.configs) do
    if table.concat(cfg.layers, ",") == shape and (cfg.block.expansion > 1) == bottleneck then name = k end
  end
  if not name then return nil, ("an encoder of %s blocks per stage is none of resnet18, 34, 50"):format(shape) end
  local decoder = {}
  for i = 1, 5 do
    local w = t[("decoder.blocks.%d.conv1.0.weight"):format(i - 1)]
    if not w then return nil, ("no decoder.blocks.%d.conv1.0.weight"):format(i - 1) end
    decoder[i] = w:size(1)
  end
  return {encoder = name, encoder_width = conv1:size(1), in_channels = conv1:size(2), classes = head:size(1),
          decoder_channels = decoder}
end

-- load(path [, {encoder =, size =}]) -> model (eval mode), meta: rebuilds
-- the model from the file alone. The file is an lpnx model (safetensors
-- with the architecture in its metadata), or any U-Net state dict with
-- segmentation_models_pytorch's keys, as a PyTorch checkpoint or a
-- safetensors file, told apart by content; the architecture is then read
-- off the tensors' names and shapes (opts.encoder, when given, must agree),
-- and the input is taken as ImageNet-normalised at opts.size (256).
-- meta.input_size, meta.mean and meta.std come back as numbers/lists.
function models.load(path, opts)
  opts = opts or {}
  local tensors, meta = lpnx.load_weights(path)
  local cfg, input_size
  if meta["lpnx.model"] == "unet" then
    local function int(key)
      local v = math.tointeger(tonumber(meta[key]))
      if not v then
        error(("%s: metadata '%s' must be an integer, got %s"):format(path, key, tostring(meta[key])), 3)
      end
      return v
    end
    local decoder = numbers(meta.decoder_channels, "decoder_channels", path)
    for i, v in ipairs(decoder) do decoder[i] = math.tointeger(v) end
    cfg = {encoder = meta.encoder, encoder_width = int("encoder_width"), classes = int("classes"),
           in_channels = int("in_channels"), decoder_channels = decoder}
    input_size = int("input_size")
  elseif meta["lpnx.model"] ~= nil then
    error(("%s: an lpnx file of model '%s', not a U-Net"):format(path, tostring(meta["lpnx.model"])), 2)
  else
    local why
    tensors = unprefixed(tensors)
    cfg, why = architecture(tensors)
    if not cfg then error(("%s: %s"):format(path, why), 2) end
    input_size = opts.size or 256
    meta = {["lpnx.model"] = "unet", encoder = cfg.encoder, encoder_width = cfg.encoder_width,
            classes = cfg.classes, in_channels = cfg.in_channels, input_size = input_size,
            mean = join(models.imagenet_mean), std = join(models.imagenet_std),
            decoder_channels = join(cfg.decoder_channels)}
  end
  if opts.encoder and opts.encoder ~= cfg.encoder then
    error(("%s: holds a %s encoder, not %s"):format(path, cfg.encoder, opts.encoder), 2)
  end
  local model = unet.Unet(cfg)
  local ok, err = pcall(model.load_state_dict, model, tensors)
  if not ok then error(("%s: %s"):format(path, tostring(err)), 2) end
  model:eval()
  local info = {}
  for k, v in pairs(meta) do info[k] = v end
  info.input_size = input_size
  info.mean = numbers(meta.mean, "mean", path)
  info.std = numbers(meta.std, "std", path)
  return model, info
end

-- export_onnx(model, path [, {size = 256, batch = "dynamic" | n, opset = 17, fold_bn = true}]):
-- the model as an ONNX file (lpnx.models.onnx).
models.export_onnx = require("lpnx.models.onnx").export

return models
