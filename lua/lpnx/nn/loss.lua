-- Losses on logits (no sigmoid in the model's head), Torch7 criterion style:
--   loss:forward(logits, target) -> number
--   loss:backward(logits, target) -> gradient wrt logits (a new tensor)
-- logits and target share one shape, any (typically (N,1,H,W)); target
-- values are in [0, 1] (hard masks or soft labels). The arithmetic is in
-- the C kernels of lpnx.kernels.
--
-- Data-parallel training (one batch spread over several processes):
--   loss:distribute(sync, share)
-- with sync a function that sums a list of numbers over the processes
-- (lpnx.dist.summer()) and share this process's part of the batch
-- (its images / all images). forward then returns the loss of the whole
-- batch (the same number in every process) and backward this process's
-- part of its gradient, so that summing parameter gradients over the
-- processes gives the gradient of the whole batch. Means are weighted by
-- share; the Dice loss sums its three sums over the processes.
-- loss:distribute(nil) returns to one process.
--
-- lpnx.nn.losses: the losses by name ("combo", "bce", ...), at the end.
local lpnx = require "lpnx"
local class = require "lpnx.class"
local util = require "lpnx.util"

local K = lpnx.kernels
local loss = {}

local check_options, check_number = util.check_options, util.check_number

-- Raises unless logits and target are tensors of one shape.
local function check_pair(name, logits, target)
  if not lpnx.is_tensor(logits) then
    error(("%s: expected logits as a tensor, got %s"):format(name, type(logits)), 3)
  end
  if not lpnx.is_tensor(target) then
    error(("%s: expected target as a tensor, got %s"):format(name, type(target)), 3)
  end
  if not util.same_shape(logits, target) then
    error(("%s: expected target of the logits' shape %s, got %s")
      :format(name, util.shape(logits), util.shape(target)), 3)
  end
end

-- criterion:distribute(sync, share): see the top of this file.
local function distribute(self, sync, share)
  if sync ~= nil and type(sync) ~= "function" then
    error(("%s:distribute: sync must be a function or nil, got %s"):format(self.__name, type(sync)), 2)
  end
  share = share == nil and 1 or share
  if type(share) ~= "number" or not (share > 0 and share <= 1) then
    error(("%s:distribute: share must be in (0, 1], got %s"):format(self.__name, tostring(share)), 2)
  end
  self.sync, self.share = sync, share
  return self
end

-- A mean over this process's elements -> the mean over the whole batch.
local function global_mean(self, value)
  if not self.sync then return value end
  return self.sync({value * self.share})[1]
end

-- This process's part of the gradient of a mean.
local function scaled(self, grad)
  if self.share and self.share ~= 1 then grad:mul_(self.share) end
  return grad
end

-- The checks below run in constructors: they raise at level 4, the caller
-- of Class(...) (the class helper's __call sits between).
local CTOR = 4

local function check_pos_weight(name, w)
  if w == nil or lpnx.is_tensor(w) then return w end
  if type(w) ~= "number" then
    error(("%s: pos_weight must be a number or a tensor, got %s"):format(name, type(w)), CTOR)
  end
  return check_number(name, "pos_weight", w, 0, nil, nil, CTOR + 1)
end

---------------------------------------------------------------------------
-- BCEWithLogitsLoss{pos_weight=} : mean binary cross-entropy on logits,
-- PyTorch's torch.nn.BCEWithLogitsLoss; pos_weight (a number, or a tensor
-- broadcastable to the target) weighs the positive term.
loss.BCEWithLogitsLoss = class("nn.BCEWithLogitsLoss")

function loss.BCEWithLogitsLoss:__init(opts)
  opts = check_options(opts, {"pos_weight"}, "BCEWithLogitsLoss")
  self.pos_weight = check_pos_weight("BCEWithLogitsLoss", opts.pos_weight)
end

function loss.BCEWithLogitsLoss:forward(logits, target)
  check_pair("BCEWithLogitsLoss", logits, target)
  return global_mean(self, K.bce_with_logits(logits, target, self.pos_weight))
end

function loss.BCEWithLogitsLoss:backward(logits, target)
  check_pair("BCEWithLogitsLoss", logits, target)
  return scaled(self, K.bce_with_logits_backward(logits, target, self.pos_weight))
end

loss.BCEWithLogitsLoss.distribute = distribute

---------------------------------------------------------------------------
-- DiceLoss{eps=1} : soft Dice on p = sigmoid(logits) over the whole batch,
-- 1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps).
loss.DiceLoss = class("nn.DiceLoss")

function loss.DiceLoss:__init(opts)
  opts = check_options(opts, {"eps"}, "DiceLoss")
  self.eps = check_number("DiceLoss", "eps", opts.eps == nil and 1 or opts.eps, 0)
end

-- The three Dice sums over every process.
local function global_sums(self, logits, target)
  local s = self.sync({K.dice_sums(logits, target)})
  return s[1], s[2], s[3]
end

function loss.DiceLoss:forward(logits, target)
  check_pair("DiceLoss", logits, target)
  if not self.sync then return K.dice_loss(logits, target, self.eps) end
  local spt, sp, st = global_sums(self, logits, target)
  return 1 - (2 * spt + self.eps) / (sp + st + self.eps)
end

function loss.DiceLoss:backward(logits, target)
  check_pair("DiceLoss", logits, target)
  if not self.sync then return K.dice_loss_backward(logits, target, self.eps) end
  local spt, sp, st = global_sums(self, logits, target)
  return K.dice_loss_backward_sums(logits, target, spt, sp, st, self.eps)
end

loss.DiceLoss.distribute = distribute

---------------------------------------------------------------------------
-- FocalLoss{gamma=2, alpha=nil} : mean sigmoid focal loss (Lin et al.;
-- torchvision.ops.sigmoid_focal_loss with reduction "mean"); alpha in
-- [0, 1] weighs positives by alpha and negatives by 1 - alpha.
loss.FocalLoss = class("nn.FocalLoss")

function loss.FocalLoss:__init(opts)
  opts = check_options(opts, {"gamma", "alpha"}, "FocalLoss")
  self.gamma = check_number("FocalLoss", "gamma", opts.gamma == nil and 2 or opts.gamma, 0)
  if opts.alpha ~= nil then self.alpha = check_number("FocalLoss", "alpha", opts.alpha, 0, 1) end
end

function loss.FocalLoss:forward(logits, target)
  check_pair("FocalLoss", logits, target)
  return global_mean(self, K.focal_loss(logits, target, self.gamma, self.alpha))
end

function loss.FocalLoss:backward(logits, target)
  check_pair("FocalLoss", logits, target)
  return scaled(self, K.focal_loss_backward(logits, target, self.gamma, self.alpha))
end

loss.FocalLoss.distribute = distribute

---------------------------------------------------------------------------
-- ComboLoss{bce=1, dice=1, focal=0, eps=1, gamma=2, alpha=nil, pos_weight=nil}:
-- bce * BCE + dice * Dice + focal * Focal; terms with weight 0 are not
-- computed at all.
loss.ComboLoss = class("nn.ComboLoss")

function loss.ComboLoss:__init(opts)
  local name = "ComboLoss"
  opts = check_options(opts, {"bce", "dice", "focal", "eps", "gamma", "alpha", "pos_weight"}, name)
  local function weight(key, default)
    local v = opts[key]
    if v == nil then v = default end
    return check_number(name, key .. " weight", v, 0, nil, nil, CTOR + 1)
  end
  self.weights = {bce = weight("bce", 1), dice = weight("dice", 1), focal = weight("focal", 0)}
  if self.weights.bce + self.weights.dice + self.weights.focal == 0 then
    error("ComboLoss: every weight is 0 (set bce, dice or focal)", CTOR - 1)
  end
  -- Checked here too so that errors name ComboLoss.
  if opts.eps ~= nil then check_number(name, "eps", opts.eps, 0) end
  if opts.gamma ~= nil then check_number(name, "gamma", opts.gamma, 0) end
  if opts.alpha ~= nil then check_number(name, "alpha", opts.alpha, 0, 1) end
  check_pos_weight(name, opts.pos_weight)
  self.bce = loss.BCEWithLogitsLoss{pos_weight = opts.pos_weight}
  self.dice = loss.DiceLoss{eps = opts.eps}
  self.focal = loss.FocalLoss{gamma = opts.gamma, alpha = opts.alpha}
end

local TERMS = {"bce", "dice", "focal"}

function loss.ComboLoss:forward(logits, target)
  check_pair("ComboLoss", logits, target)
  local total = 0
  for _, term in ipairs(TERMS) do
    local w = self.weights[term]
    if w ~= 0 then total = total + w * self[term]:forward(logits, target) end
  end
  return total
end

function loss.ComboLoss:backward(logits, target)
  check_pair("ComboLoss", logits, target)
  local grad
  for _, term in ipairs(TERMS) do
    local w = self.weights[term]
    if w ~= 0 then
      local g = self[term]:backward(logits, target)
      if w ~= 1 then g:mul_(w) end
      if grad then grad:add_(g) else grad = g end
    end
  end
  return grad
end

function loss.ComboLoss:distribute(sync, share)
  distribute(self, sync, share)
  for _, term in ipairs(TERMS) do self[term]:distribute(sync, share) end
  return self
end

---------------------------------------------------------------------------
-- The losses by name, as lpnx.train's loss option and train.lua's --loss
-- offer them: name -> {make = function() -> a new loss, about = what it is}.
loss.losses = {
  combo = {about = "BCE + Dice", make = function() return loss.ComboLoss{bce = 1, dice = 1} end},
  bce = {about = "binary cross-entropy", make = function() return loss.BCEWithLogitsLoss{} end},
  dice = {about = "soft Dice", make = function() return loss.DiceLoss{} end},
  focal = {about = "focal, gamma 2", make = function() return loss.FocalLoss{gamma = 2} end},
  focal_dice = {about = "focal + Dice", make = function() return loss.ComboLoss{bce = 0, dice = 1, focal = 1} end},
}

return loss
