-- lpnx.evaluation: what a radiology paper reports about a pneumothorax
-- segmentation model, from a submission, the true masks and the
-- image-level scores predict.run writes beside the submission (images.csv).
--
--   bootstrap(cases, statistic [, {samples = 2000, seed = 1, level = 0.95, strata}]) -> estimate, lo, hi
--   resamples(n [, {samples = 2000, seed = 1, strata}]) -> {{i, ...}, ...}: the draws bootstrap makes
--   auc(scores, labels) -> auc | nil, reason
--   auc_interval(scores, labels [, {samples, seed, level}]) -> auc, lo, hi | nil, reason
--   roc(scores, labels) -> {{fpr =, tpr =, threshold =}, ...}
--   confusion(predicted, labels) -> {tp, fp, tn, fn, sensitivity, specificity, ppv, npv, accuracy}
--   at_sensitivity(scores, labels, target) -> {threshold, sensitivity, specificity, tp, fp, tn, fn} | nil, reason
--   calibration(scores, labels [, {bins = 10}]) -> bins {{lo, hi, count, mean_score, fraction_positive}, ...}, ece
--   size_class(fraction) -> "small" | "medium" | "large" | nil (no pneumothorax)
--   report{pred = CSV, truth = CSV, scores = CSV, size = 1024 | sizes = fn(id) -> h, w,
--          samples = 2000, seed = 1, level = 0.95, bins = 10, sensitivities = {0.90, 0.95}} -> report
--   summary(report) -> lines of text (one screen)
--   json(value) -> text: JSON with sorted keys; NaN and infinities as null
--   plot(report, dir) -> true | false, why: roc.png, calibration.png, dice_by_size.png (gnuplot)
--
-- Definitions:
-- - Bootstrap: percentile intervals over images. Each resample draws n
--   cases with replacement (within each stratum when strata are given, so
--   every resample keeps the strata's sizes) with g:random of a fresh
--   lpnx.Generator(seed): the same draws on every machine. The bounds are
--   the (1 - level)/2 and (1 + level)/2 quantiles of the resampled
--   statistics, interpolated linearly between order statistics (Hyndman
--   and Fan's type 7, numpy.percentile's default): for sorted v[1..B] and
--   p, h = (B - 1) p + 1 and q = v[floor h] + (h - floor h)(v[floor h + 1]
--   - v[floor h]).
-- - Labels: true or 1 positive, false or 0 negative. Scores: finite numbers;
--   an image is called positive at threshold t when its score >= t.
-- - AUC: the Mann-Whitney statistic, the probability that a positive image
--   scores above a negative one, ties counted 1/2 (equal to the trapezoid
--   area under roc()). Undefined without both positive and negative images:
--   auc returns nil and the reason. Its interval is a stratified bootstrap
--   (positives resampled among positives, negatives among negatives, as
--   pROC does by default), not DeLong's.
-- - ROC: one point per distinct score, from threshold = +inf (0, 0) down to
--   the lowest score (1, 1); tied scores move both rates in one step.
-- - at_sensitivity: the highest threshold (a score of the data) whose
--   sensitivity reaches the target, with the sensitivity and specificity
--   there.
-- - Ratios with a zero denominator (sensitivity without positives, ...) are
--   NaN.
-- - Calibration: bins of equal width on [0, 1]; bin k of B holds the scores
--   s with (k-1)/B <= s < k/B, the last one also s = 1. The expected
--   calibration error is sum over bins of count/n * |mean_score -
--   fraction_positive|. Scores outside [0, 1] are an error.
-- - Size classes, by the true mask's area as a fraction of the image's
--   pixels: small < 1%, medium 1% to < 5%, large >= 5% (SIZE_CLASSES).
--   Images without a pneumothorax have none.
-- - In report: truth positive = a non-empty true mask; predicted positive
--   (the operating point) = a non-empty submitted mask; score = the image's
--   max_probability from the scores CSV. A truth image without a score is
--   an error naming it.
local lpnx = require "lpnx"
local predict = require "lpnx.predict"
local util = require "lpnx.util"

local evaluation = {}

evaluation.defaults = {samples = 2000, seed = 1, level = 0.95, bins = 10, sensitivities = {0.90, 0.95}}

-- The size classes by the true mask's area fraction: a class holds the
-- fractions below its `below` (and at or above the previous one's).
evaluation.SIZE_CLASSES = {
  {name = "small", below = 0.01, label = "< 1%"},
  {name = "medium", below = 0.05, label = "1-5%"},
  {name = "large", below = math.huge, label = ">= 5%"},
}

local nan = 0 / 0

---------------------------------------------------------------------------
-- argument checks

local function check_list(name, what, list, level)
  if type(list) ~= "table" then
    error(("%s: %s must be an array, got %s"):format(name, what, type(list)), level + 1)
  end
  return list
end

-- scores: a non-empty array of finite numbers.
local function check_scores(name, scores, level)
  check_list(name, "scores", scores, level + 1)
  if #scores == 0 then error(("%s: scores must not be empty"):format(name), level + 1) end
  for i = 1, #scores do
    if not util.is_finite(scores[i]) then
      error(("%s: scores[%d] must be a finite number, got %s"):format(name, i, tostring(scores[i])), level + 1)
    end
  end
  return scores
end

-- labels as booleans (true/1 positive, false/0 negative), as long as n.
local function check_labels(name, labels, n, level, what)
  what = what or "labels"
  check_list(name, what, labels, level + 1)
  if #labels ~= n then
    error(("%s: %s must have one entry per score (%d), got %d"):format(name, what, n, #labels), level + 1)
  end
  local out = {}
  for i = 1, n do
    local v = labels[i]
    if v == true or v == 1 then
      out[i] = true
    elseif v == false or v == 0 then
      out[i] = false
    else
      error(("%s: %s[%d] must be true, false, 1 or 0, got %s"):format(name, what, i, util.show(v)), level + 1)
    end
  end
  return out
end

local OPTION_KEYS = {"samples", "seed", "level", "strata"}

local function bootstrap_options(name, opts, level)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: expected an options table, got %s"):format(name, type(opts)), level + 1)
  end
  opts = opts or {}
  for k in pairs(opts) do
    local known = false
    for _, key in ipairs(OPTION_KEYS) do known = known or k == key end
    if not known then
      error(("%s: unknown option '%s' (expected one of %s)"):format(name, tostring(k),
            table.concat(OPTION_KEYS, ", ")), level + 1)
    end
  end
  local samples = opts.samples or evaluation.defaults.samples
  if type(samples) == "number" then samples = math.tointeger(samples) or samples end  -- 200.0 (as in JSON) is 200
  if math.type(samples) ~= "integer" or samples < 1 then
    error(("%s: samples must be a positive integer, got %s"):format(name, util.show(samples)), level + 1)
  end
  local seed = opts.seed or evaluation.defaults.seed
  if type(seed) == "number" then seed = math.tointeger(seed) or seed end
  if math.type(seed) ~= "integer" or seed < 0 then
    error(("%s: seed must be an integer >= 0, got %s"):format(name, util.show(seed)), level + 1)
  end
  local conf = opts.level or evaluation.defaults.level
  if type(conf) ~= "number" or not (conf > 0 and conf < 1) then
    error(("%s: level must be a number in (0, 1), got %s"):format(name, util.show(conf)), level + 1)
  end
  return samples, seed, conf, opts.strata
end

---------------------------------------------------------------------------
-- the bootstrap

-- The members of each stratum, strata in order of first appearance:
-- {{i, ...}, ...}; one stratum of all n without strata.
local function groups_of(name, n, strata, level)
  if strata == nil then
    local all = {}
    for i = 1, n do all[i] = i end
    return {all}
  end
  check_list(name, "strata", strata, level + 1)
  if #strata ~= n then
    error(("%s: strata must have one entry per case (%d), got %d"):format(name, n, #strata), level + 1)
  end
  local groups, at = {}, {}
  for i = 1, n do
    local key = strata[i]
    if key == nil then error(("%s: strata[%d] is nil"):format(name, i), level + 1) end
    local g = at[key]
    if not g then
      g = {}
      groups[#groups + 1], at[key] = g, g
    end
    g[#g + 1] = i
  end
  return groups
end

-- Calls fn(draw) once per resample, draw = {i, ...}: for each stratum in
-- order, as many indices of its members as it has, drawn with replacement.
local function each_resample(groups, samples, seed, fn)
  local gen = lpnx.Generator(seed)
  local draw = {}
  for _ = 1, samples do
    local k = 0
    for _, members in ipairs(groups) do
      local m = #members
      for _ = 1, m do
        k = k + 1
        draw[k] = members[gen:random(m)]
      end
    end
    fn(draw)
  end
end

-- The quantile p of the sorted array v (type 7, numpy's default).
local function quantile(v, p)
  local h = (#v - 1) * p + 1
  local lo = math.floor(h)
  if lo >= #v then return v[#v] end
  return v[lo] + (h - lo) * (v[lo + 1] - v[lo])
end

local function interval(name, stats, conf, level)
  for b = 1, #stats do
    if not util.is_finite(stats[b]) then
      error(("%s: the statistic gave %s on resample %d"):format(name, tostring(stats[b]), b), level + 1)
    end
  end
  table.sort(stats)
  return quantile(stats, (1 - conf) / 2), quantile(stats, (1 + conf) / 2)
end

-- resamples(n [, {samples, seed, strata}]) -> the index arrays bootstrap draws.
function evaluation.resamples(n, opts)
  local name = "evaluation.resamples"
  util.positive_integer(name, "n", n)
  local samples, seed, _, strata = bootstrap_options(name, opts, 2)
  local out = {}
  each_resample(groups_of(name, n, strata, 2), samples, seed, function(draw)
    out[#out + 1] = table.move(draw, 1, n, 1, {})
  end)
  return out
end

-- bootstrap(cases, statistic [, opts]) -> statistic(cases), lo, hi.
-- statistic(sample) gets an array of cases (numbers or anything) and
-- returns a finite number; without one, the mean of numbers.
function evaluation.bootstrap(cases, statistic, opts)
  local name = "evaluation.bootstrap"
  check_list(name, "cases", cases, 2)
  local n = #cases
  if n == 0 then error(("%s: cases must not be empty"):format(name), 2) end
  if statistic == nil then
    for i = 1, n do
      if not util.is_finite(cases[i]) then
        error(("%s: cases[%d] must be a finite number for the mean, got %s"):format(name, i, tostring(cases[i])), 2)
      end
    end
    statistic = evaluation.mean
  elseif type(statistic) ~= "function" then
    error(("%s: statistic must be a function(sample) -> number, got %s"):format(name, type(statistic)), 2)
  end
  local samples, seed, conf, strata = bootstrap_options(name, opts, 2)
  local estimate = statistic(cases)
  local stats, sample = {}, {}
  each_resample(groups_of(name, n, strata, 2), samples, seed, function(draw)
    for k = 1, n do sample[k] = cases[draw[k]] end
    stats[#stats + 1] = statistic(sample)
  end)
  local lo, hi = interval(name, stats, conf, 2)
  return estimate, lo, hi
end

-- The mean of an array of numbers (NaN when empty).
function evaluation.mean(values)
  local s = 0
  for i = 1, #values do s = s + values[i] end
  return #values > 0 and s / #values or nan
end

---------------------------------------------------------------------------
-- detection: ROC, AUC, confusion matrices

-- Case indices sorted by score, descending, and the groups of equal
-- scores: {{first, last}, ...} over that order.
local function by_score(scores)
  local order = {}
  for i = 1, #scores do order[i] = i end
  table.sort(order, function(a, b)
    if scores[a] ~= scores[b] then return scores[a] > scores[b] end
    return a < b
  end)
  local ties, k = {}, 1
  while k <= #order do
    local last = k
    while last < #order and scores[order[last + 1]] == scores[order[k]] do last = last + 1 end
    ties[#ties + 1] = {k, last}
    k = last + 1
  end
  return order, ties
end

-- Mann-Whitney AUC with case weights w (nil: all 1): walking down the
-- scores, each positive beats the weight of negatives below it and ties
-- half the negatives of its own score.
local function weighted_auc(order, ties, labels, w)
  local neg_total, pos_total = 0, 0
  for i = 1, #labels do
    local wi = w and w[i] or 1
    if labels[i] then pos_total = pos_total + wi else neg_total = neg_total + wi end
  end
  local above_neg, sum = 0, 0                    -- negatives scoring higher than the current group
  for _, t in ipairs(ties) do
    local pos, neg = 0, 0
    for k = t[1], t[2] do
      local i = order[k]
      local wi = w and w[i] or 1
      if labels[i] then pos = pos + wi else neg = neg + wi end
    end
    sum = sum + pos * (neg_total - above_neg - neg) + 0.5 * pos * neg
    above_neg = above_neg + neg
  end
  return sum / (pos_total * neg_total)
end

local function class_counts(labels)
  local pos = 0
  for i = 1, #labels do if labels[i] then pos = pos + 1 end end
  return pos, #labels - pos
end

local function undefined_reason(pos, neg)
  if pos == 0 then return ("AUC is undefined: no positive images among %d"):format(neg) end
  return ("AUC is undefined: no negative images among %d"):format(pos)
end

function evaluation.auc(scores, labels)
  local name = "evaluation.auc"
  check_scores(name, scores, 2)
  labels = check_labels(name, labels, #scores, 2)
  local pos, neg = class_counts(labels)
  if pos == 0 or neg == 0 then return nil, undefined_reason(pos, neg) end
  local order, ties = by_score(scores)
  return weighted_auc(order, ties, labels)
end

-- auc_interval(scores, labels [, {samples, seed, level}]) -> auc, lo, hi:
-- the stratified bootstrap, drawn as bootstrap(cases, fn, {strata = labels})
-- draws, with the AUC of each resample computed from how often each image
-- was drawn.
function evaluation.auc_interval(scores, labels, opts)
  local name = "evaluation.auc_interval"
  check_scores(name, scores, 2)
  labels = check_labels(name, labels, #scores, 2)
  if opts ~= nil and type(opts) == "table" and opts.strata ~= nil then
    error(("%s: unknown option 'strata' (the labels are the strata)"):format(name), 2)
  end
  local samples, seed, conf = bootstrap_options(name, opts, 2)
  local pos, neg = class_counts(labels)
  if pos == 0 or neg == 0 then return nil, undefined_reason(pos, neg) end
  local order, ties = by_score(scores)
  local estimate = weighted_auc(order, ties, labels)
  local n, stats, w = #scores, {}, {}
  each_resample(groups_of(name, n, labels, 2), samples, seed, function(draw)
    for i = 1, n do w[i] = 0 end
    for k = 1, n do w[draw[k]] = w[draw[k]] + 1 end
    stats[#stats + 1] = weighted_auc(order, ties, labels, w)
  end)
  local lo, hi = interval(name, stats, conf, 2)
  return estimate, lo, hi
end

function evaluation.roc(scores, labels)
  local name = "evaluation.roc"
  check_scores(name, scores, 2)
  labels = check_labels(name, labels, #scores, 2)
  local pos, neg = class_counts(labels)
  local order, ties = by_score(scores)
  local points = {{fpr = 0, tpr = 0, threshold = math.huge}}
  local tp, fp = 0, 0
  for _, t in ipairs(ties) do
    for k = t[1], t[2] do
      if labels[order[k]] then tp = tp + 1 else fp = fp + 1 end
    end
    points[#points + 1] = {fpr = neg > 0 and fp / neg or nan, tpr = pos > 0 and tp / pos or nan,
                           threshold = scores[order[t[1]]]}
  end
  return points
end

local function ratio(a, b) return b > 0 and a / b or nan end

local function matrix(tp, fp, tn, fn)
  return {tp = tp, fp = fp, tn = tn, fn = fn, sensitivity = ratio(tp, tp + fn), specificity = ratio(tn, tn + fp),
          ppv = ratio(tp, tp + fp), npv = ratio(tn, tn + fn), accuracy = ratio(tp + tn, tp + fp + tn + fn)}
end

function evaluation.confusion(predicted, labels)
  local name = "evaluation.confusion"
  check_list(name, "predicted", predicted, 2)
  if #predicted == 0 then error(("%s: predicted must not be empty"):format(name), 2) end
  predicted = check_labels(name, predicted, #predicted, 2, "predicted")
  labels = check_labels(name, labels, #predicted, 2)
  local tp, fp, tn, fn = 0, 0, 0, 0
  for i = 1, #labels do
    if predicted[i] then
      if labels[i] then tp = tp + 1 else fp = fp + 1 end
    elseif labels[i] then
      fn = fn + 1
    else
      tn = tn + 1
    end
  end
  return matrix(tp, fp, tn, fn)
end

function evaluation.at_sensitivity(scores, labels, target)
  local name = "evaluation.at_sensitivity"
  check_scores(name, scores, 2)
  labels = check_labels(name, labels, #scores, 2)
  if type(target) ~= "number" or not (target > 0 and target <= 1) then
    error(("%s: target must be a sensitivity in (0, 1], got %s"):format(name, util.show(target)), 2)
  end
  local pos, neg = class_counts(labels)
  if pos == 0 then return nil, "no positive images: sensitivity is undefined" end
  local order, ties = by_score(scores)
  local tp, fp = 0, 0
  for _, t in ipairs(ties) do
    for k = t[1], t[2] do
      if labels[order[k]] then tp = tp + 1 else fp = fp + 1 end
    end
    if tp / pos >= target then
      local r = matrix(tp, fp, neg - fp, pos - tp)
      r.threshold, r.target = scores[order[t[1]]], target
      return r
    end
  end
  error("evaluation.at_sensitivity: unreachable") -- the lowest score reaches sensitivity 1
end

function evaluation.calibration(scores, labels, opts)
  local name = "evaluation.calibration"
  check_scores(name, scores, 2)
  labels = check_labels(name, labels, #scores, 2)
  opts = util.check_keys(name, opts, {"bins"})
  local bins = opts.bins or evaluation.defaults.bins
  if math.type(bins) ~= "integer" or bins < 1 then
    error(("%s: bins must be a positive integer, got %s"):format(name, util.show(bins)), 2)
  end
  local out = {}
  for k = 1, bins do out[k] = {lo = (k - 1) / bins, hi = k / bins, count = 0, sum = 0, positives = 0} end
  for i, s in ipairs(scores) do
    if s < 0 or s > 1 then
      error(("%s: scores[%d] must be in [0, 1], got %s"):format(name, i, util.show(s)), 2)
    end
    local k = math.min(bins, math.floor(s * bins) + 1)
    if k > 1 and s < out[k].lo then k = k - 1 end    -- s * bins rounded up across an edge
    if k < bins and s >= out[k].hi then k = k + 1 end
    local b = out[k]
    b.count, b.sum = b.count + 1, b.sum + s
    if labels[i] then b.positives = b.positives + 1 end
  end
  local ece = 0
  for _, b in ipairs(out) do
    b.mean_score, b.fraction_positive = ratio(b.sum, b.count), ratio(b.positives, b.count)
    if b.count > 0 then ece = ece + b.count / #scores * math.abs(b.mean_score - b.fraction_positive) end
    b.sum = nil
  end
  return out, ece
end

---------------------------------------------------------------------------
-- segmentation by size

function evaluation.size_class(fraction)
  if not util.is_finite(fraction) or fraction < 0 or fraction > 1 then
    error(("evaluation.size_class: fraction must be a number in [0, 1], got %s"):format(tostring(fraction)), 2)
  end
  if fraction == 0 then return nil end
  for _, c in ipairs(evaluation.SIZE_CLASSES) do
    if fraction < c.below then return c.name end
  end
end

---------------------------------------------------------------------------
-- the report

-- image_id -> max_probability from a scores CSV (predict.run's images.csv).
local function read_scores(name, path)
  local ok, header, rows = pcall(lpnx.csv.read, path, {header = true})
  if not ok then error(("%s: %s"):format(name, (tostring(header):gsub("^lpnx%.csv%.read: ", ""))), 3) end
  local column = {}
  for i, h in ipairs(header) do column[h:match("^%s*(.-)%s*$")] = column[h] or i end
  for _, want in ipairs {"image_id", "max_probability"} do
    if not column[want] then
      error(("%s: %s has no %s column (expected predict.lua's images.csv: image_id,...,max_probability)")
            :format(name, path, want), 3)
    end
  end
  local scores = {}
  for r, row in ipairs(rows) do
    local id = (row[column.image_id] or ""):match("^%s*(.-)%s*$")
    local v = tonumber(row[column.max_probability] or "")
    if not util.is_finite(v) then
      error(("%s: %s: row %d (image %s): max_probability must be a number, got '%s'")
            :format(name, path, r + 1, id, tostring(row[column.max_probability] or "")), 3)
    end
    scores[id] = v
  end
  return scores
end

local function with_interval(values, opts)
  if #values == 0 then return {estimate = nan, lo = nan, hi = nan, count = 0} end
  local e, lo, hi = evaluation.bootstrap(values, nil, opts)
  return {estimate = e, lo = lo, hi = hi, count = #values}
end

local REPORT_KEYS = {"pred", "truth", "scores", "size", "sizes", "samples", "seed", "level", "bins", "sensitivities"}

-- report{...} -> {images, positives, missing, extra, settings = {...},
--   segmentation = {dice, iou, dice_positive, iou_positive = {estimate, lo, hi, count},
--                   by_size = {{name, label, below, count, dice = {estimate, lo, hi}}, ...}},
--   detection = {predicted_positives, auc = {estimate, lo, hi} | nil, auc_undefined = reason | nil,
--                roc = {{fpr, tpr, threshold}, ...}, operating_point = confusion,
--                at_sensitivity = {{target, threshold, sensitivity, specificity, ...} | {target, undefined}, ...},
--                calibration = {bins = {...}, ece}} | nil without scores,
--   per_image = {{id, dice, iou, truth_area, pred_area, pixels, fraction, size, positive, predicted, score}, ...}}
-- Segmentation scores are predict.evaluate's (so the means equal its
-- last line's), each with its bootstrap interval; every interval uses a
-- fresh generator seeded with seed.
function evaluation.report(opts)
  local name = "evaluation.report"
  if type(opts) ~= "table" then
    error(("%s: expected {pred = CSV, truth = CSV, scores = CSV, size = 1024}"):format(name), 2)
  end
  util.check_keys(name, opts, REPORT_KEYS)
  if opts.scores ~= nil and type(opts.scores) ~= "string" then
    error(("%s: expected scores = CSV (predict.lua's images.csv), got %s"):format(name, type(opts.scores)), 2)
  end
  local boot = {samples = opts.samples, seed = opts.seed, level = opts.level}
  bootstrap_options(name, boot, 2)
  local bins = opts.bins or evaluation.defaults.bins
  if math.type(bins) ~= "integer" or bins < 1 then
    error(("%s: bins must be a positive integer, got %s"):format(name, util.show(bins)), 2)
  end
  local targets = opts.sensitivities or evaluation.defaults.sensitivities
  util.number_list(name, "sensitivities", targets, 0, 1)
  local scores = opts.scores and read_scores(name, opts.scores)
  local ok, r = pcall(predict.evaluate, {pred = opts.pred, truth = opts.truth, size = opts.size, sizes = opts.sizes})
  if not ok then error((tostring(r):gsub("^predict%.evaluate", name)), 2) end

  local all_dice, all_iou, pos_dice, pos_iou, by_class = {}, {}, {}, {}, {}
  local labels, predicted, image_scores = {}, {}, {}
  for _, c in ipairs(evaluation.SIZE_CLASSES) do by_class[c.name] = {} end
  for i, img in ipairs(r.per_image) do
    img.fraction = img.truth_area / img.pixels
    img.size = evaluation.size_class(img.fraction)
    img.positive, img.predicted = img.truth_area > 0, img.pred_area > 0
    all_dice[i], all_iou[i] = img.dice, img.iou
    labels[i], predicted[i] = img.positive, img.predicted
    if img.positive then
      pos_dice[#pos_dice + 1], pos_iou[#pos_iou + 1] = img.dice, img.iou
      local list = by_class[img.size]
      list[#list + 1] = img.dice
    end
    if scores then
      img.score = scores[img.id]
      if img.score == nil then
        error(("%s: image %s of %s has no max_probability in %s"):format(name, img.id, opts.truth, opts.scores), 2)
      end
      image_scores[i] = img.score
    end
  end

  local seg = {dice = with_interval(all_dice, boot), iou = with_interval(all_iou, boot),
               dice_positive = with_interval(pos_dice, boot), iou_positive = with_interval(pos_iou, boot),
               by_size = {}}
  -- the means are predict.evaluate's, summed in its order
  seg.dice.estimate, seg.iou.estimate = r.dice, r.iou
  seg.dice_positive.estimate, seg.iou_positive.estimate = r.dice_positive, r.iou_positive
  for _, c in ipairs(evaluation.SIZE_CLASSES) do
    local d = with_interval(by_class[c.name], boot)
    seg.by_size[#seg.by_size + 1] = {name = c.name, label = c.label, below = c.below, count = d.count,
                                     dice = {estimate = d.estimate, lo = d.lo, hi = d.hi}}
  end

  local report = {images = r.images, positives = r.positives, missing = r.missing, extra = r.extra,
                  settings = {samples = boot.samples or evaluation.defaults.samples,
                              seed = boot.seed or evaluation.defaults.seed,
                              level = boot.level or evaluation.defaults.level, bins = bins,
                              size_classes = evaluation.SIZE_CLASSES, pred = opts.pred, truth = opts.truth,
                              scores = opts.scores},
                  segmentation = seg, per_image = r.per_image}
  if scores then
    local det = {operating_point = evaluation.confusion(predicted, labels), at_sensitivity = {}}
    det.predicted_positives = det.operating_point.tp + det.operating_point.fp
    local e, lo, hi = evaluation.auc_interval(image_scores, labels, boot)
    if e then det.auc = {estimate = e, lo = lo, hi = hi} else det.auc_undefined = lo end
    det.roc = evaluation.roc(image_scores, labels)
    for k, target in ipairs(targets) do
      local at, why = evaluation.at_sensitivity(image_scores, labels, target)
      det.at_sensitivity[k] = at or {target = target, undefined = why}
    end
    local cal, ece = evaluation.calibration(image_scores, labels, {bins = bins})
    det.calibration = {bins = cal, ece = ece}
    report.detection = det
  end
  return report
end

---------------------------------------------------------------------------
-- text

local function num(v, digits)
  if v == nil or v ~= v then return "n/a" end
  return ("%." .. (digits or 4) .. "f"):format(v)
end

local function with_ci(t)
  if t.estimate ~= t.estimate then return "n/a" end
  return ("%s [%s, %s]"):format(num(t.estimate), num(t.lo), num(t.hi))
end

-- The one-screen summary of a report, as lines.
function evaluation.summary(report)
  local s, lines = report.settings, {}
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  local seg, det = report.segmentation, report.detection
  add("== evaluation: %d images, %d with pneumothorax; %g%% intervals from %d bootstrap resamples (seed %d)",
      report.images, report.positives, s.level * 100, s.samples, s.seed)
  add("segmentation, per image (an empty prediction on an empty truth scores 1)")
  add("  Dice              %s", with_ci(seg.dice))
  add("  IoU               %s", with_ci(seg.iou))
  add("  Dice on positives %s   n=%d", with_ci(seg.dice_positive), seg.dice_positive.count)
  for _, c in ipairs(seg.by_size) do
    add("    %-14s  %s   n=%d", ("%s (%s)"):format(c.name, c.label), with_ci(c.dice), c.count)
  end
  if not det then
    add("detection: no image scores (give --scores images.csv, as predict.lua writes it)")
    return lines
  end
  add("detection, image level (positive = any predicted mask; score = highest probability)")
  add("  AUC               %s", det.auc and with_ci(det.auc) or det.auc_undefined)
  local op = det.operating_point
  add("  operating point   sensitivity %s  specificity %s  PPV %s  NPV %s",
      num(op.sensitivity), num(op.specificity), num(op.ppv), num(op.npv))
  add("                    truth +  truth -")
  add("    predicted +     %7d  %7d", op.tp, op.fp)
  add("    predicted -     %7d  %7d", op.fn, op.tn)
  for _, at in ipairs(det.at_sensitivity) do
    if at.undefined then
      add("  at %g%% sensitivity: %s", at.target * 100, at.undefined)
    else
      add("  at %g%% sensitivity: threshold %s  sensitivity %s  specificity %s",
          at.target * 100, num(at.threshold), num(at.sensitivity), num(at.specificity))
    end
  end
  add("calibration of the score: ECE %s over %d bins", num(det.calibration.ece), #det.calibration.bins)
  return lines
end

---------------------------------------------------------------------------
-- JSON

local function encode(v, out)
  local t = type(v)
  if t == "number" then
    if not util.is_finite(v) then
      out[#out + 1] = "null"
    elseif math.type(v) == "integer" then
      out[#out + 1] = tostring(v)
    else
      local text = ("%.15g"):format(v)                 -- the shortest of 15-17 digits that reads back as v
      if tonumber(text) ~= v then text = ("%.16g"):format(v) end
      if tonumber(text) ~= v then text = ("%.17g"):format(v) end
      out[#out + 1] = text
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      local named = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r"}
      return named[c] or ("\\u%04x"):format(c:byte())
    end) .. '"'
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "nil" then
    out[#out + 1] = "null"
  elseif t == "table" then
    if next(v) == nil or v[1] ~= nil then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then error(("evaluation.json: a table mixes key types (%s)"):format(type(k)), 0) end
        keys[#keys + 1] = k
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        encode(v[k], out)
      end
      out[#out + 1] = "}"
    end
  else
    error(("evaluation.json: cannot encode a %s"):format(t), 0)
  end
end

-- JSON text of a report (or any value of tables, numbers, strings and
-- booleans): object keys sorted, numbers in the fewest digits (up to 17)
-- that read back exactly, NaN and infinities as null, an empty table as [].
function evaluation.json(value)
  local out = {}
  local ok, err = pcall(encode, value, out)
  if not ok then error(err, 2) end
  return table.concat(out)
end

---------------------------------------------------------------------------
-- figures

local ROC = [[
set terminal pngcairo size 640,680 font ',11'
set output '$DIR/roc.png'
set title "$TITLE"
set xlabel '1 - specificity (false positive rate)'
set ylabel 'sensitivity (true positive rate)'
set xrange [-0.02:1.02]
set yrange [-0.02:1.02]
set size ratio 1
set grid
set key below left Left reverse font ',10'
$$roc << EOD
$ROC_POINTS
EOD
$MARKER_DATA
plot $$roc using 1:2 with lines lw 2 lc rgb '#3050a0' title 'ROC (one step per distinct score)', \
     x with lines dt 2 lc rgb '#909090' title 'chance'$MARKER_PLOTS
]]

local CALIBRATION = [[
set terminal pngcairo size 640,680 font ',11'
set output '$DIR/calibration.png'
set title "$TITLE"
set xlabel 'score (highest probability in the image)'
set ylabel 'fraction of images with pneumothorax'
set xrange [0:1]
set yrange [0:1.1]
set size ratio 1
set grid
set key below left Left reverse
set style fill solid 0.35 border lc rgb '#3050a0'
$$bins << EOD
$BIN_ROWS
EOD
plot $$bins using 1:2:3 with boxes lc rgb '#3050a0' title 'fraction positive per bin', \
     $$bins using 4:2 with linespoints pt 7 ps 1.2 lc rgb '#c03020' title 'at the mean score of the bin', \
     x with lines dt 2 lc rgb '#606060' title 'perfect calibration', \
     $$bins using 1:($$2 + 0.03):5 with labels font ',9' notitle
]]

local DICE_BY_SIZE = [[
set terminal pngcairo size 640,480 font ',11'
set output '$DIR/dice_by_size.png'
set title "$TITLE"
set ylabel 'Dice (mean over images)'
set yrange [0:1.12]
set xrange [-0.6:$XMAX]
set grid ytics
set style fill solid 0.5 border lc rgb '#3050a0'
set boxwidth 0.6
$$d << EOD
$ROWS
EOD
plot $$d using 1:2:xticlabels(6) with boxes lc rgb '#3050a0' notitle, \
     $$d using 1:2:3:4 with yerrorbars pt 7 ps 0 lw 2 lc rgb '#202020' notitle, \
     $$d using 1:(0.04):5 with labels notitle
]]

-- Writes dir/roc.png, dir/calibration.png and dir/dice_by_size.png with
-- gnuplot: true, or false and why (gnuplot missing or failing). ROC and
-- calibration need the report's detection part.
function evaluation.plot(report, dir)
  local name = "evaluation.plot"
  if type(report) ~= "table" or not report.segmentation then
    error(("%s: expected a report from evaluation.report, got %s"):format(name, type(report)), 2)
  end
  if type(dir) ~= "string" then error(("%s: expected dir = a folder, got %s"):format(name, type(dir)), 2) end
  if not util.installed("gnuplot") then return false, "gnuplot is not installed: no figures" end
  util.make_folder(dir)
  local level = ("%g%%"):format(report.settings.level * 100)
  local scripts = {}
  local function fill(script, fields)
    fields.DIR = dir:gsub("'", "''")
    return (script:gsub("%$%$", "\1"):gsub("%$(%u[%u_]*)", fields):gsub("\1", "$"))
  end
  local rows = {}
  for k, c in ipairs(report.segmentation.by_size) do
    local d = c.dice
    local ok = d.estimate == d.estimate
    rows[k] = ("%d %s %s %s \"n=%d\" \"%s (%s)\""):format(k - 1, ok and num(d.estimate, 6) or "NaN",
      ok and num(d.lo, 6) or "NaN", ok and num(d.hi, 6) or "NaN", c.count, c.name, c.label)
  end
  local dp = report.segmentation.dice_positive
  local all_ok = dp.estimate == dp.estimate
  rows[#rows + 1] = ("%d %s %s %s \"n=%d\" \"all positive\""):format(#rows, all_ok and num(dp.estimate, 6) or "NaN",
    all_ok and num(dp.lo, 6) or "NaN", all_ok and num(dp.hi, 6) or "NaN", dp.count)
  scripts[#scripts + 1] = fill(DICE_BY_SIZE, {ROWS = table.concat(rows, "\n"), XMAX = tostring(#rows - 0.4),
    TITLE = ("Dice on images with pneumothorax, by true size (%s CI)"):format(level)})
  local det = report.detection
  if det then
    local pts = {}
    for k, p in ipairs(det.roc) do pts[k] = ("%.6f %.6f"):format(p.fpr, p.tpr) end
    local op = det.operating_point
    local markers = {{1 - op.specificity, op.sensitivity, 7, "#c03020",
      ("operating point (any mask): sens %.3f, spec %.3f"):format(op.sensitivity, op.specificity)}}
    for _, at in ipairs(det.at_sensitivity) do
      if not at.undefined then
        markers[#markers + 1] = {1 - at.specificity, at.sensitivity, #markers == 1 and 6 or 4, "#208040",
          ("%g%% target, score >= %.4f: sens %.3f, spec %.3f"):format(at.target * 100, at.threshold,
                                                                           at.sensitivity, at.specificity)}
      end
    end
    local marker_data, marker_plots = {}, {}
    for k, m in ipairs(markers) do
      if m[1] == m[1] and m[2] == m[2] then
        marker_data[#marker_data + 1] = ("$m%d << EOD\n%.6f %.6f\nEOD"):format(k, m[1], m[2])
        marker_plots[#marker_plots + 1] = (", \\\n     $m%d using 1:2 with points pt %d ps 2 lw 2 lc rgb '%s' "
                                           .. "title '%s'"):format(k, m[3], m[4], m[5])
      end
    end
    local title = det.auc and ("ROC, AUC %.3f [%.3f, %.3f] (%s CI), %d images"):format(det.auc.estimate,
      det.auc.lo, det.auc.hi, level, report.images) or ("ROC (%s)"):format(det.auc_undefined)
    scripts[#scripts + 1] = fill(ROC, {ROC_POINTS = table.concat(pts, "\n"), TITLE = title,
                                       MARKER_DATA = table.concat(marker_data, "\n"),
                                       MARKER_PLOTS = table.concat(marker_plots)})
    local brows = {}
    for _, b in ipairs(det.calibration.bins) do
      local centre = (b.lo + b.hi) / 2
      if b.count > 0 then
        brows[#brows + 1] = ("%.6f %.6f %.6f %.6f \"n=%d\""):format(centre, b.fraction_positive, b.hi - b.lo,
                                                                   b.mean_score, b.count)
      end
    end
    scripts[#scripts + 1] = fill(CALIBRATION, {BIN_ROWS = table.concat(brows, "\n"),
      TITLE = ("Reliability of the image score, ECE %.3f"):format(det.calibration.ece)})
  end
  for _, script in ipairs(scripts) do
    if not util.gnuplot(script) then return false, "gnuplot could not draw the figures in " .. dir end
  end
  return true
end

return evaluation
