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

-- load(path) -> model (eval mode), meta: rebuilds the model from the file alone.
-- meta.input_size, meta.mean and meta.std come back as numbers/lists.
function models.load(path)
  local tensors, meta = lpnx.load(path)
  if meta["lpnx.model"] ~= "unet" then
    error(("%s: not an lpnx model file (no 'lpnx.model' = 'unet' in its metadata)"):format(path), 2)
  end
  local function int(key)
    local v = math.tointeger(tonumber(meta[key]))
    if not v then error(("%s: metadata '%s' must be an integer, got %s"):format(path, key, tostring(meta[key])), 3) end
    return v
  end
  local decoder = numbers(meta.decoder_channels, "decoder_channels", path)
  for i, v in ipairs(decoder) do decoder[i] = math.tointeger(v) end
  local model = unet.Unet{
    encoder = meta.encoder, encoder_width = int("encoder_width"), classes = int("classes"),
    in_channels = int("in_channels"), decoder_channels = decoder,
  }
  local ok, err = pcall(model.load_state_dict, model, tensors)
  if not ok then error(("%s: %s"):format(path, tostring(err)), 2) end
  model:eval()
  local info = {}
  for k, v in pairs(meta) do info[k] = v end
  info.input_size = int("input_size")
  info.mean = numbers(meta.mean, "mean", path)
  info.std = numbers(meta.std, "std", path)
  return model, info
end

return models
