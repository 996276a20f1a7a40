local lpnx = require "lpnx"
local metrics = require "lpnx.metrics"

local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function near(expected, got, tol)
  assert(math.abs(expected - got) <= (tol or 1e-12),
         ("expected %.15g, got %.15g"):format(expected, got))
end

-- 4x4 masks: pred has 4 pixels, truth 6, 3 of them shared:
-- Dice = 2*3/(4+6) = 0.6, IoU = 3/(4+6-3) = 3/7.
local PRED = {{1, 1, 0, 0},
              {1, 0, 0, 0},
              {0, 0, 0, 1},
              {0, 0, 0, 0}}
local TRUTH = {{1, 1, 1, 0},
               {1, 1, 0, 0},
               {0, 0, 0, 0},
               {0, 0, 1, 0}}
local EMPTY = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}

describe("metrics", function()
  it("score partial overlap exactly", function()
    local p, t = lpnx.tensor(PRED), lpnx.tensor(TRUTH)
    near(0.6, metrics.dice(p, t))
    near(3 / 7, metrics.iou(p, t))
    -- symmetric in pred and truth
    near(0.6, metrics.dice(t, p))
    near(3 / 7, metrics.iou(t, p))
    -- a perfect prediction
    assert.are.equal(1, metrics.dice(t, t))
    assert.are.equal(1, metrics.iou(t, t))
  end)

  it("score an empty prediction of an empty mask 1 and one-sided emptiness 0", function()
    local e, t = lpnx.tensor(EMPTY), lpnx.tensor(TRUTH)
    assert.are.equal(1, metrics.dice(e, e))
    assert.are.equal(1, metrics.iou(e, e))
    assert.are.equal(0, metrics.dice(e, t))
    assert.are.equal(0, metrics.dice(t, e))
    assert.are.equal(0, metrics.iou(e, t))
    assert.are.equal(0, metrics.iou(t, e))
  end)

  it("average per-image scores over a (N,1,H,W) batch", function()
    local pred = lpnx.tensor{{PRED}, {EMPTY}, {EMPTY}, {TRUTH}}
    local truth = lpnx.tensor{{TRUTH}, {EMPTY}, {TRUTH}, {TRUTH}}
    local d = metrics.dice_per_image(pred, truth)
    local j = metrics.iou_per_image(pred, truth)
    assert.are.same({0.6, 1, 0, 1}, d)
    assert.are.equal(4, #j)
    near(3 / 7, j[1])
    assert.are.same({1, 0, 1}, {j[2], j[3], j[4]})
    near((0.6 + 1 + 0 + 1) / 4, metrics.dice(pred, truth))
    near((3 / 7 + 1 + 0 + 1) / 4, metrics.iou(pred, truth))
    -- the mean of per-image scores, not the Dice of the pooled pixels (2*9/(10+18))
    assert.are_not.equal(2 * 9 / 28, metrics.dice(pred, truth))
  end)

  it("take (N,H,W) batches and strided views", function()
    local pred = lpnx.tensor{PRED, EMPTY}
    local truth = lpnx.tensor{TRUTH, EMPTY}
    assert.are.same({0.6, 1}, metrics.dice_per_image(pred, truth))
    near((0.6 + 1) / 2, metrics.dice(pred, truth))
    -- transposing both masks changes nothing
    local pt, tt = pred:transpose(2, 3), truth:transpose(2, 3)
    assert.is_false(pt:is_contiguous())
    assert.are.same({0.6, 1}, metrics.dice_per_image(pt, tt))
    near(3 / 7, metrics.iou_per_image(pt, tt)[1])
  end)

  it("count values above 0.5 as foreground", function()
    local probs = lpnx.tensor{{0.9, 0.51, 0.5, 0.2}}
    local truth = lpnx.tensor{{1, 1, 1, 0}}
    -- foreground: 2 predicted of 3 true, both shared: Dice 4/5, IoU 2/3
    near(0.8, metrics.dice(probs, truth))
    near(2 / 3, metrics.iou(probs, truth))
    -- 0.5 itself is background, in the truth too
    assert.are.equal(1, metrics.dice(lpnx.full({2, 2}, 0.5), lpnx.zeros(2, 2)))
  end)

  it("reject mismatched and unsupported shapes with the shapes in the message", function()
    assert.matches("metrics.dice: expected truth of the prediction's shape 2x1x4x4, got 2x1x4x5",
                   message(function() metrics.dice(lpnx.zeros(2, 1, 4, 4), lpnx.zeros(2, 1, 4, 5)) end), 1, true)
    assert.matches("metrics.iou: expected masks (N,1,H,W), (N,H,W) or (H,W), got 2x3x4x4",
                   message(function() metrics.iou(lpnx.zeros(2, 3, 4, 4), lpnx.zeros(2, 3, 4, 4)) end), 1, true)
    assert.matches("metrics.dice_per_image: expected masks (N,1,H,W), (N,H,W) or (H,W), got 16",
                   message(function() metrics.dice_per_image(lpnx.zeros(16), lpnx.zeros(16)) end), 1, true)
    assert.matches("metrics.iou_per_image: expected at least one image, got 0x4x4",
                   message(function() metrics.iou_per_image(lpnx.zeros(0, 4, 4), lpnx.zeros(0, 4, 4)) end), 1, true)
    assert.matches("metrics.dice: expected truth as a tensor, got table",
                   message(function() metrics.dice(lpnx.zeros(4, 4), EMPTY) end), 1, true)
  end)

  it("is reachable as lpnx.metrics", function()
    assert.are.equal(metrics, lpnx.metrics)
  end)
end)
