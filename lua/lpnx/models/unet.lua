-- U-Net with a ResNet encoder: segmentation_models_pytorch's Unet, with
-- its state-dict keys (encoder.*, decoder.blocks.i.conv{1,2}.{0,1}.*,
-- segmentation_head.0.*), so weights move both ways with PyTorch.
--
--   decoder block i: nearest 2x upsample, concat the skip feature,
--                    (conv3x3 no bias, BN, ReLU) twice
--   head: conv3x3 (last decoder channels -> classes) with bias; logits out
local lpnx = require "lpnx"
local class = require "lpnx.class"
local Module = require "lpnx.nn.module"
local layers = require "lpnx.nn.layers"
local resnet = require "lpnx.models.resnet"

local K = lpnx.kernels
local same_size, fits = layers.same_size, layers.fits
local unet = {}

-- smp's Conv2dReLU; the ReLU works in place, as there (BN's backward needs
-- its input, not its output), and so does the backward of both ReLU and
-- BN: the gradient they get is the next block's (or the head's) input
-- gradient, or conv2's, spent once they have it.
local function conv_bn_relu(cin, cout)
  local bn = layers.BatchNorm2d(cout)
  bn.inplace_backward = true
  return layers.Sequential(layers.Conv2d(cin, cout, 3, {padding = 1, bias = false}), bn, layers.ReLU(true))
end

---------------------------------------------------------------------------
local DecoderBlock = class("models.DecoderBlock", Module)
unet.DecoderBlock = DecoderBlock

function DecoderBlock:__init(cin, cskip, cout)
  Module.__init(self)
  self.cin, self.cskip, self.cout = cin, cskip, cout
  self:add_module("conv1", conv_bn_relu(cin + cskip, cout))
  self:add_module("conv2", conv_bn_relu(cout, cout))
end

-- With a skip, x is upsampled image by image straight into the first cin
-- channels of the block's input buffer and the skip copied after them
-- (one image of an (N,C,H,W) tensor, cut to some channels, is contiguous),
-- so the upsampled x is never a tensor of its own.
function DecoderBlock:forward(x, skip)
  local n, h, w = x:size(1), 2 * x:size(3), 2 * x:size(4)
  local input
  if self.cskip > 0 then
    if not skip then error("DecoderBlock: this block expects a skip feature", 2) end
    if not (skip:dim() == 4 and skip:size(1) == n and skip:size(2) == self.cskip and skip:size(3) == h
            and skip:size(4) == w) then
      error(("DecoderBlock: expected a skip feature (%d,%d,%d,%d), got (%s)")
            :format(n, self.cskip, h, w, table.concat(skip:size(), ",")), 2)
    end
    input = fits(self.input, n, self.cin + self.cskip, h, w) or lpnx.empty(n, self.cin + self.cskip, h, w)
    for i = 1, n do
      K.upsample_nearest(x:narrow(1, i, 1), h, w, input:narrow(1, i, 1):narrow(2, 1, self.cin))
    end
    input:narrow(2, self.cin + 1, self.cskip):copy_(skip)
  else
    input = K.upsample_nearest(x, h, w, fits(self.input, n, self.cin, h, w))
  end
  self.input = input
  self.output = self.conv2:forward(self.conv1:forward(input))
  return self.output
end

-- Returns the gradients wrt x and wrt skip (nil without a skip); the skip's
-- is a view of conv1's input gradient.
function DecoderBlock:backward(x, gy)
  local g = self.conv1:backward(self.input, self.conv2:backward(self.conv1.output, gy))
  local h, w = x:size(3), x:size(4)
  local gx = same_size(self.grad_input, x)
  if self.cskip == 0 then
    self.grad_input = K.upsample_nearest_backward(g, h, w, gx)
    return self.grad_input
  end
  gx = gx or lpnx.empty(x:size())
  for i = 1, x:size(1) do
    K.upsample_nearest_backward(g:narrow(1, i, 1):narrow(2, 1, self.cin), h, w, gx:narrow(1, i, 1))
  end
  self.grad_input = gx
  return gx, g:narrow(2, self.cin + 1, self.cskip)
end

---------------------------------------------------------------------------
local Decoder = class("models.UnetDecoder", Module)
unet.Decoder = Decoder

-- encoder_channels: {in, f1, ..., f5}; channels: the five block outputs.
function Decoder:__init(encoder_channels, channels)
  Module.__init(self)
  local ins = {encoder_channels[6], channels[1], channels[2], channels[3], channels[4]}
  local skips = {encoder_channels[5], encoder_channels[4], encoder_channels[3], encoder_channels[2], 0}
  local list = {}
  for i = 1, 5 do list[i] = DecoderBlock(ins[i], skips[i], channels[i]) end
  self:add_module("blocks", layers.ModuleList(list))
end

function Decoder:forward(feats)
  local x = feats[5]
  self.inputs = self.inputs or {}
  for i = 1, 5 do
    self.inputs[i] = x
    x = self.blocks:get(i):forward(x, feats[5 - i])
  end
  self.output = x
  return x
end

-- Returns the gradients wrt f1..f5.
function Decoder:backward(_, gy)
  local gfeats = self.grad_input or {}
  local g = gy
  for i = 5, 1, -1 do
    local gskip
    g, gskip = self.blocks:get(i):backward(self.inputs[i], g)
    if gskip then gfeats[5 - i] = gskip end
  end
  gfeats[5] = g
  self.grad_input = gfeats
  return gfeats
end

---------------------------------------------------------------------------
local Unet = class("models.Unet", Module)
unet.Unet = Unet

unet.defaults = {
  encoder = "resnet34", classes = 1, in_channels = 3, encoder_width = 64,
  decoder_channels = {256, 128, 64, 32, 16},
}

-- unet{encoder="resnet34", classes=1, in_channels=3, encoder_width=64,
--      decoder_channels={256,128,64,32,16}}
function Unet:__init(opts)
  Module.__init(self)
  opts = opts or {}
  local cfg = {}
  for k, v in pairs(unet.defaults) do cfg[k] = opts[k] == nil and v or opts[k] end
  for k in pairs(opts) do
    if unet.defaults[k] == nil then error(("unet: unknown option '%s'"):format(tostring(k)), 3) end
  end
  if type(cfg.decoder_channels) ~= "table" or #cfg.decoder_channels ~= 5 then
    error("unet: decoder_channels must list 5 channel counts", 3)
  end
  for _, key in ipairs {"classes", "in_channels", "encoder_width"} do
    if math.type(cfg[key]) ~= "integer" or cfg[key] < 1 then
      error(("unet: %s must be a positive integer, got %s"):format(key, tostring(cfg[key])), 3)
    end
  end
  self.config = cfg
  self:add_module("encoder", resnet.Encoder{name = cfg.encoder, in_channels = cfg.in_channels,
                                            width = cfg.encoder_width})
  self:add_module("decoder", Decoder(self.encoder.out_channels, cfg.decoder_channels))
  local head = layers.Conv2d(cfg.decoder_channels[5], cfg.classes, 3, {padding = 1})
  self:add_module("segmentation_head", layers.Sequential(head))
  -- smp's initialisation: decoder convs kaiming uniform (fan_in, relu) with
  -- zero bias, head xavier uniform with zero bias.
  self.decoder:apply(function(m)
    if m.__name == "nn.Conv2d" then
      local bound = math.sqrt(6 / (m.cin * m.kh * m.kw))
      m.weight:uniform_(-bound, bound)
      if m.bias then m.bias:zero_() end
    end
  end)
  local fan_in, fan_out = head.cin * head.kh * head.kw, head.cout * head.kh * head.kw
  local bound = math.sqrt(6 / (fan_in + fan_out))
  head.weight:uniform_(-bound, bound)
  head.bias:zero_()
end

function Unet:forward(x)
  local s = x:size()
  if #s ~= 4 or s[3] % 32 ~= 0 or s[4] % 32 ~= 0 then
    error(("unet: expected input (N,C,H,W) with H and W multiples of 32, got (%s)")
      :format(table.concat(s, ",")), 2)
  end
  local feats = self.encoder:forward(x)
  self.output = self.segmentation_head:forward(self.decoder:forward(feats))
  return self.output
end

function Unet:backward(x, gy)
  local g = self.segmentation_head:backward(self.decoder.output, gy)
  local gfeats = self.decoder:backward(self.encoder.output, g)
  self.grad_input = self.encoder:backward(x, gfeats)
  return self.grad_input
end

function Unet:extra_repr()
  local c = self.config
  return ("%s, width=%d, decoder={%s}, classes=%d, in_channels=%d"):format(
    c.encoder, c.encoder_width, table.concat(c.decoder_channels, ","), c.classes, c.in_channels)
end

return unet
