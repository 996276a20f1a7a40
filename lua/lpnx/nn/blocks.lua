-- Residual blocks of torchvision's ResNet, with torchvision's child names
-- (conv1, bn1, conv2, bn2, [conv3, bn3,] downsample.0, downsample.1) so a
-- torchvision or timm state dict loads as it is.
local lpnx = require "lpnx"
local class = require "lpnx.class"
local Module = require "lpnx.nn.module"
local layers = require "lpnx.nn.layers"

local K = lpnx.kernels
local same_size = layers.same_size
local blocks = {}

local function downsample(cin, cout, stride)
  return layers.Sequential(layers.Conv2d(cin, cout, 1, {stride = stride, bias = false}),
                           layers.BatchNorm2d(cout))
end

---------------------------------------------------------------------------
-- BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
-- The ReLUs rectify the batch-norm outputs in place (BN's backward needs
-- its input, not its output); the block's output is bn2's buffer.
blocks.BasicBlock = class("nn.BasicBlock", Module)
blocks.BasicBlock.expansion = 1

function blocks.BasicBlock:__init(cin, cout, stride)
  Module.__init(self)
  stride = stride or 1
  self:add_module("conv1", layers.Conv2d(cin, cout, 3, {stride = stride, padding = 1, bias = false}))
  self:add_module("bn1", layers.BatchNorm2d(cout))
  self:add_module("conv2", layers.Conv2d(cout, cout, 3, {padding = 1, bias = false}))
  self:add_module("bn2", layers.BatchNorm2d(cout))
  if stride ~= 1 or cin ~= cout then self:add_module("downsample", downsample(cin, cout, stride)) end
  self.bn1.inplace_backward = true -- its gy, conv2's input gradient, is spent then
  -- true where the caller is done with gy once backward returns: the
  -- gradient through the last ReLU is then written over gy.
  self.inplace_backward = false
end

function blocks.BasicBlock:forward(x)
  local h = self.bn1:forward(self.conv1:forward(x)):relu_()
  self.h = h
  local y = self.bn2:forward(self.conv2:forward(h))
  local shortcut = self.downsample and self.downsample:forward(x) or x
  self.output = y:add_(shortcut):relu_()
  return self.output
end

-- The gradient through the last ReLU (wrt the sum) goes over gy with
-- inplace_backward, else to a buffer of the block, grad_sum; the inner one
-- overwrites conv2's input gradient, which nothing else reads.
local function grad_sum(block, gy)
  if block.inplace_backward and lpnx.is_tensor(gy) and gy:is_contiguous() then
    return K.relu_backward(block.output, gy, gy)
  end
  block.grad_sum = K.relu_backward(block.output, gy, same_size(block.grad_sum, gy))
  return block.grad_sum
end

function blocks.BasicBlock:backward(x, gy)
  local g = grad_sum(self, gy)
  local gh = self.conv2:backward(self.h, self.bn2:backward(self.conv2.output, g))
  gh = K.relu_backward(self.h, gh, gh)
  local gx = self.conv1:backward(x, self.bn1:backward(self.conv1.output, gh))
  local gshort = self.downsample and self.downsample:backward(x, g) or g
  self.grad_input = gx:add_(gshort)
  return self.grad_input
end

---------------------------------------------------------------------------
-- Bottleneck (torchvision v1.5: the stride sits on the 3x3 conv):
-- relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)).
blocks.Bottleneck = class("nn.Bottleneck", Module)
blocks.Bottleneck.expansion = 4

function blocks.Bottleneck:__init(cin, planes, stride)
  Module.__init(self)
  stride = stride or 1
  local cout = planes * 4
  self:add_module("conv1", layers.Conv2d(cin, planes, 1, {bias = false}))
  self:add_module("bn1", layers.BatchNorm2d(planes))
  self:add_module("conv2", layers.Conv2d(planes, planes, 3, {stride = stride, padding = 1, bias = false}))
  self:add_module("bn2", layers.BatchNorm2d(planes))
  self:add_module("conv3", layers.Conv2d(planes, cout, 1, {bias = false}))
  self:add_module("bn3", layers.BatchNorm2d(cout))
  if stride ~= 1 or cin ~= cout then self:add_module("downsample", downsample(cin, cout, stride)) end
  -- their gy (the input gradients of conv2 and conv3) are spent then
  self.bn1.inplace_backward, self.bn2.inplace_backward = true, true
  self.inplace_backward = false -- as BasicBlock's
end

function blocks.Bottleneck:forward(x)
  self.h1 = self.bn1:forward(self.conv1:forward(x)):relu_()
  self.h2 = self.bn2:forward(self.conv2:forward(self.h1)):relu_()
  local y = self.bn3:forward(self.conv3:forward(self.h2))
  local shortcut = self.downsample and self.downsample:forward(x) or x
  self.output = y:add_(shortcut):relu_()
  return self.output
end

function blocks.Bottleneck:backward(x, gy)
  local g = grad_sum(self, gy)
  local g2 = self.conv3:backward(self.h2, self.bn3:backward(self.conv3.output, g))
  g2 = K.relu_backward(self.h2, g2, g2)
  local g1 = self.conv2:backward(self.h1, self.bn2:backward(self.conv2.output, g2))
  g1 = K.relu_backward(self.h1, g1, g1)
  local gx = self.conv1:backward(x, self.bn1:backward(self.conv1.output, g1))
  local gshort = self.downsample and self.downsample:backward(x, g) or g
  self.grad_input = gx:add_(gshort)
  return self.grad_input
end

return blocks
