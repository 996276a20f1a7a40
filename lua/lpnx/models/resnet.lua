-- ResNet encoder: torchvision's ResNet without avgpool and fc, returning
-- the five feature maps a U-Net decoder takes:
--   f1 = relu(bn1(conv1(x)))      /2   w
--   f2 = layer1(maxpool(f1))      /4   w * expansion
--   f3 = layer2(f2)               /8   2w * expansion
--   f4 = layer3(f3)               /16  4w * expansion
--   f5 = layer4(f4)               /32  8w * expansion
-- Keys match torchvision (conv1.weight, layer2.0.downsample.0.weight, ...),
-- so an ImageNet-pretrained file loads with load_state_dict(sd, {strict=false})
-- (its fc.* keys are reported as unexpected and ignored).
local lpnx = require "lpnx"
local class = require "lpnx.class"
local Module = require "lpnx.nn.module"
local layers = require "lpnx.nn.layers"
local blocks = require "lpnx.nn.blocks"

local K = lpnx.kernels

local resnet = {}

resnet.configs = {
  resnet18 = {block = blocks.BasicBlock, layers = {2, 2, 2, 2}},
  resnet34 = {block = blocks.BasicBlock, layers = {3, 4, 6, 3}},
  resnet50 = {block = blocks.Bottleneck, layers = {3, 4, 6, 3}},
}

local Encoder = class("models.ResNetEncoder", Module)
resnet.Encoder = Encoder

-- Encoder{name="resnet34", in_channels=3, width=64}
function Encoder:__init(opts)
  Module.__init(self)
  local cfg = resnet.configs[opts.name]
  if not cfg then
    error(("unknown encoder '%s' (resnet18, resnet34 or resnet50)"):format(tostring(opts.name)), 3)
  end
  local w, cin = opts.width or 64, opts.in_channels or 3
  self.name = opts.name
  self:add_module("conv1", layers.Conv2d(cin, w, 7, {stride = 2, padding = 3, bias = false}))
  self:add_module("bn1", layers.BatchNorm2d(w))
  self.bn1.inplace_backward = true -- its gy is maxpool's input gradient, spent then
  self:add_module("maxpool", layers.MaxPool2d(3, 2, 1))
  local expansion = cfg.block.expansion
  local c = w
  for i, n in ipairs(cfg.layers) do
    local planes = w * (1 << (i - 1))
    local layer = layers.Sequential()
    for j = 1, n do
      local stride = (j == 1 and i > 1) and 2 or 1
      local block = cfg.block(c, planes, stride)
      -- a block's gy is the next block's input gradient, or one that
      -- backward below (or the decoder) is done with once it is passed on
      block.inplace_backward = true
      layer:add(block)
      c = planes * expansion
    end
    self:add_module("layer" .. i, layer)
  end
  -- channels of the input and of f1..f5, as smp's encoder.out_channels
  self.out_channels = {cin, w, w * expansion, 2 * w * expansion, 4 * w * expansion, 8 * w * expansion}
  -- torchvision's initialisation: kaiming normal (fan_out, relu) for convs
  self:apply(function(m)
    if m.__name == "nn.Conv2d" then
      local std = math.sqrt(2 / (m.cout * m.kh * m.kw))
      m.weight:normal_(0, std)
    end
  end)
end

-- The features are the buffers of the layers that make them (f1 is bn1's,
-- rectified in place), overwritten by the next forward.
function Encoder:forward(x)
  local f = self.output or {}
  f[1] = self.bn1:forward(self.conv1:forward(x)):relu_()
  f[2] = self.layer1:forward(self.maxpool:forward(f[1]))
  f[3] = self.layer2:forward(f[2])
  f[4] = self.layer3:forward(f[3])
  f[5] = self.layer4:forward(f[4])
  self.output = f
  return f
end

-- gfeats: gradients wrt f1..f5 (nil where a feature got none). Each is
-- added into the gradient the layers pass down, which is theirs to change;
-- gfeats[5] itself is written over (layer4's last block works in place).
function Encoder:backward(x, gfeats)
  local f = self.output
  local function plus(a, b)
    if a == nil then return b end
    if b == nil then return a end
    return a:add_(b)
  end
  local g = gfeats[5]
  g = plus(self.layer4:backward(f[4], g), gfeats[4])
  g = plus(self.layer3:backward(f[3], g), gfeats[3])
  g = plus(self.layer2:backward(f[2], g), gfeats[2])
  g = self.layer1:backward(self.maxpool.output, g)
  g = plus(self.maxpool:backward(f[1], g), gfeats[1])
  g = K.relu_backward(f[1], g, g) -- maxpool's input gradient, in place
  self.grad_input = self.conv1:backward(x, self.bn1:backward(self.conv1.output, g))
  return self.grad_input
end

return resnet
