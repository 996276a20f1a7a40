-- Overlap metrics for binary masks, scored per image and averaged over the
-- images (the SIIM-ACR way).
--
--   dice(pred, truth) -> mean Dice      dice_per_image(pred, truth) -> {d1, d2, ...}
--   iou(pred, truth)  -> mean IoU       iou_per_image(pred, truth)  -> {j1, j2, ...}
--
-- pred and truth have one shape: (N,1,H,W), (N,H,W) or a single (H,W)
-- mask. Values > 0.5 are foreground, so probabilities and 0/1 masks both
-- work. Per image, Dice = 2|P n T| / (|P| + |T|) and IoU = |P n T| / |P u T|;
-- an image whose prediction and truth are both empty scores 1, one empty
-- and one not scores 0.
local lpnx = require "lpnx"
local util = require "lpnx.util"

local metrics = {}

local shape = util.shape

-- Foreground pixel counts per image: |P n T|, |P|, |T| as Lua arrays.
local function counts(name, pred, truth)
  if not lpnx.is_tensor(pred) then error(("%s: expected pred as a tensor, got %s"):format(name, type(pred)), 4) end
  if not lpnx.is_tensor(truth) then error(("%s: expected truth as a tensor, got %s"):format(name, type(truth)), 4) end
  local a = pred:size()
  if not util.same_shape(pred, truth) then
    error(("%s: expected truth of the prediction's shape %s, got %s"):format(name, shape(pred), shape(truth)), 4)
  end
  local images
  if #a == 2 then
    images = 1
  elseif #a == 3 or (#a == 4 and a[2] == 1) then
    images = a[1]
  else
    error(("%s: expected masks (N,1,H,W), (N,H,W) or (H,W), got %s"):format(name, shape(pred)), 4)
  end
  if images == 0 then error(("%s: expected at least one image, got %s"):format(name, shape(pred)), 4) end
  local p = pred:gt(0.5):reshape(images, -1)
  local t = truth:gt(0.5):reshape(images, -1)
  return (p * t):sum(2):totable(), p:sum(2):totable(), t:sum(2):totable()
end

local function dice_scores(name, pred, truth)
  local inter, np, nt = counts(name, pred, truth)
  local scores = {}
  for i = 1, #inter do
    local total = np[i] + nt[i]
    scores[i] = total == 0 and 1 or 2 * inter[i] / total
  end
  return scores
end

local function iou_scores(name, pred, truth)
  local inter, np, nt = counts(name, pred, truth)
  local scores = {}
  for i = 1, #inter do
    local union = np[i] + nt[i] - inter[i]
    scores[i] = union == 0 and 1 or inter[i] / union
  end
  return scores
end

local function mean(values)
  local s = 0
  for _, v in ipairs(values) do s = s + v end
  return s / #values
end

function metrics.dice_per_image(pred, truth) return dice_scores("metrics.dice_per_image", pred, truth) end
function metrics.iou_per_image(pred, truth) return iou_scores("metrics.iou_per_image", pred, truth) end
function metrics.dice(pred, truth) return mean(dice_scores("metrics.dice", pred, truth)) end
function metrics.iou(pred, truth) return mean(iou_scores("metrics.iou", pred, truth)) end

return metrics
