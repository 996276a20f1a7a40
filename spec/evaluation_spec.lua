local lpnx = require "lpnx"
local cjson = require "cjson"
local h = require "spec.support.helpers"
local evaluation = require "lpnx.evaluation"

local DIR = h.fixture("evaluation")
local TRUTH, PRED, SCORES = DIR .. "/truth.csv", DIR .. "/submission.csv", DIR .. "/images.csv"

local function run_evaluate(args) return h.run_example("evaluate.lua", args) end
local lines, read = h.lines, h.read

local function near(expected, got, tol, what)
  assert(type(got) == "number" and math.abs(expected - got) <= (tol or 1e-9),
         ("%s: expected %.15g, got %s"):format(what or "value", expected, tostring(got)))
end

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local reference = cjson.decode(read(DIR .. "/reference.json"))
local null = cjson.null

-- The committed case, scored once with the reference's bootstrap settings.
local report = evaluation.report{pred = PRED, truth = TRUTH, scores = SCORES, size = 64, samples = 200, seed = 1}

-- 1-based index draws in a CSV file (one resample per line).
local function read_draws(path)
  local draws = {}
  for line in io.lines(path) do
    local d = {}
    for v in line:gmatch("[^,]+") do d[#d + 1] = math.tointeger(tonumber(v)) end
    draws[#draws + 1] = d
  end
  return draws
end

describe("evaluation.report against the independent scorer (evaluation_reference.py)", function()
  it("agrees on Dice and IoU per image, their means, Dice on positives and by size", function()
    assert.are.equal(reference.images, report.images)
    assert.are.equal(reference.positives, report.positives)
    assert.are.equal(#reference.per_image, #report.per_image)
    for i, want in ipairs(reference.per_image) do
      local got = report.per_image[i]
      assert.are.equal(want.id, got.id)
      near(want.dice, got.dice, 1e-12, want.id .. " dice")
      near(want.iou, got.iou, 1e-12, want.id .. " iou")
      assert.are.equal(want.truth_area, got.truth_area)
      assert.are.equal(want.pred_area, got.pred_area)
      near(want.fraction, got.fraction, 1e-15, want.id .. " fraction")
      local size = want.size
      if size == null then size = nil end
      assert.are.equal(size, got.size)
      assert.are.equal(want.positive, got.positive)
      assert.are.equal(want.predicted, got.predicted)
      assert.are.equal(want.score, got.score)
    end
    local seg = report.segmentation
    near(reference.dice, seg.dice.estimate, 1e-12, "dice")
    near(reference.iou, seg.iou.estimate, 1e-12, "iou")
    near(reference.dice_positive, seg.dice_positive.estimate, 1e-12, "dice_positive")
    near(reference.iou_positive, seg.iou_positive.estimate, 1e-12, "iou_positive")
    assert.are.same({"small", "medium", "large"}, {seg.by_size[1].name, seg.by_size[2].name, seg.by_size[3].name})
    for _, c in ipairs(seg.by_size) do
      assert.are.equal(reference.by_size[c.name].count, c.count)
      near(reference.by_size[c.name].dice, c.dice.estimate, 1e-12, c.name)
    end
  end)

  it("agrees on the AUC (roc_auc_score, Mann-Whitney U and the trapezoid area) and every ROC point", function()
    local det = report.detection
    near(reference.auc, det.auc.estimate, 1e-12, "auc")
    near(reference.auc_mann_whitney, det.auc.estimate, 1e-12, "auc")
    assert.are.equal(#reference.roc, #det.roc)
    local area = 0
    for k, want in ipairs(reference.roc) do
      local got = det.roc[k]
      near(want.fpr, got.fpr, 1e-12, "fpr " .. k)
      near(want.tpr, got.tpr, 1e-12, "tpr " .. k)
      if k == 1 then
        assert.are.equal(math.huge, got.threshold)
      else
        assert.are.equal(want.threshold, got.threshold)
        area = area + (got.fpr - det.roc[k - 1].fpr) * (got.tpr + det.roc[k - 1].tpr) / 2
      end
    end
    near(reference.auc_trapezoid, area, 1e-12, "trapezoid")
    near(det.auc.estimate, area, 1e-12, "trapezoid")
  end)

  it("agrees on the confusion matrix of any predicted mask, and on the 90% and 95% sensitivity thresholds", function()
    local op, want = report.detection.operating_point, reference.confusion
    for _, k in ipairs {"tp", "fp", "tn", "fn"} do assert.are.equal(want[k], op[k], k) end
    for _, k in ipairs {"sensitivity", "specificity", "ppv", "npv", "accuracy"} do near(want[k], op[k], 1e-12, k) end
    assert.are.equal(op.tp + op.fp, report.detection.predicted_positives)
    assert.are.equal(2, #report.detection.at_sensitivity)
    for k, w in ipairs(reference.at_sensitivity) do
      local got = report.detection.at_sensitivity[k]
      assert.are.equal(w.target, got.target)
      assert.are.equal(w.threshold, got.threshold)
      near(w.sensitivity, got.sensitivity, 1e-12, "sensitivity")
      near(w.specificity, got.specificity, 1e-12, "specificity")
      assert.are.equal(w.tp, got.tp)
      assert.are.equal(w.fp, got.fp)
    end
  end)

  it("agrees on the calibration bins (edges k/10, scores on the edges included) and the ECE", function()
    local cal = report.detection.calibration
    assert.are.equal(#reference.calibration.bins, #cal.bins)
    for k, want in ipairs(reference.calibration.bins) do
      local got = cal.bins[k]
      assert.are.equal(want.lo, got.lo)
      assert.are.equal(want.hi, got.hi)
      assert.are.equal(want.count, got.count, "bin " .. k)
      if want.count == 0 then
        assert.is_true(got.mean_score ~= got.mean_score and got.fraction_positive ~= got.fraction_positive)
      else
        near(want.mean_score, got.mean_score, 1e-12, "mean_score " .. k)
        near(want.fraction_positive, got.fraction_positive, 1e-12, "fraction_positive " .. k)
      end
    end
    near(reference.calibration.ece, cal.ece, 1e-12, "ece")
  end)

  it("draws the committed resamples and agrees on the bootstrap intervals computed from them with numpy", function()
    local n = report.images
    assert.are.same(read_draws(DIR .. "/resamples.csv"), evaluation.resamples(n, {samples = 200, seed = 1}))
    local labels, dice, scores = {}, {}, {}
    for i, img in ipairs(report.per_image) do labels[i], dice[i], scores[i] = img.positive, img.dice, img.score end
    assert.are.same(read_draws(DIR .. "/resamples_strata.csv"),
                    evaluation.resamples(n, {samples = 200, seed = 1, strata = labels}))
    local b = reference.bootstrap
    local _, lo, hi = evaluation.bootstrap(dice, nil, {samples = b.samples, seed = b.seed, level = b.level})
    near(b.dice[1], lo, 1e-9, "dice lo")
    near(b.dice[2], hi, 1e-9, "dice hi")
    near(b.dice[1], report.segmentation.dice.lo, 1e-9, "report dice lo")
    near(b.dice[2], report.segmentation.dice.hi, 1e-9, "report dice hi")
    near(b.auc[1], report.detection.auc.lo, 1e-9, "auc lo")
    near(b.auc[2], report.detection.auc.hi, 1e-9, "auc hi")
    -- auc_interval is the generic bootstrap of the AUC, stratified by label
    local cases = {}
    for i = 1, n do cases[i] = {scores[i], labels[i]} end
    local function auc_of(sample)
      local s, l = {}, {}
      for k, c in ipairs(sample) do s[k], l[k] = c[1], c[2] end
      return evaluation.auc(s, l)
    end
    local e, glo, ghi = evaluation.bootstrap(cases, auc_of, {samples = 200, seed = 1, strata = labels})
    local e2, ilo, ihi = evaluation.auc_interval(scores, labels, {samples = 200, seed = 1})
    near(e, e2, 1e-15, "auc")
    near(glo, ilo, 1e-12, "auc lo")
    near(ghi, ihi, 1e-12, "auc hi")
  end)
end)

describe("evaluation.bootstrap", function()
  local values = {}
  for i = 1, 40 do values[i] = (i * 37 % 11) / 10 end

  it("gives the same interval for the same seed and another for another seed", function()
    local a = {evaluation.bootstrap(values, nil, {samples = 300, seed = 5})}
    local b = {evaluation.bootstrap(values, nil, {samples = 300, seed = 5})}
    local c = {evaluation.bootstrap(values, nil, {samples = 300, seed = 6})}
    assert.are.same(a, b)
    assert.are.equal(a[1], c[1])
    assert.is_true(a[2] ~= c[2] or a[3] ~= c[3])
    assert.is_true(a[2] <= a[1] and a[1] <= a[3])
    near(evaluation.mean(values), a[1], 0, "estimate")
  end)

  it("gives a zero-width interval for the mean of a constant", function()
    local e, lo, hi = evaluation.bootstrap({0.7, 0.7, 0.7, 0.7, 0.7}, nil, {samples = 100})
    assert.are.equal(e, lo)
    assert.are.equal(e, hi)
    near(0.7, e, 1e-15)
  end)

  it("takes the type 7 percentiles of the resampled statistics", function()
    -- the statistic returns the resample's number, 1..B: the bounds are fixed by the percentile rule
    local calls = 0
    local function count() calls = calls + 1 return calls end
    local _, lo, hi = evaluation.bootstrap({1, 2, 3}, count, {samples = 101, level = 0.9})
    -- resamples give 2..102; sorted v[1..101], p = 0.05: h = 100 * 0.05 + 1 = 6 -> 7; p = 0.95: h = 96 -> 97
    near(7, lo, 1e-9)
    near(97, hi, 1e-9)
  end)

  it("covers the true mean about 95% of the time", function()
    -- 60 samples of 30 from a fixed two-point distribution (p = 0.3), 400 resamples each
    local gen = lpnx.Generator(123)
    local covered = 0
    for _ = 1, 60 do
      local sample = {}
      for i = 1, 30 do sample[i] = gen:uniform() < 0.3 and 1 or 0 end
      local _, lo, hi = evaluation.bootstrap(sample, nil, {samples = 400, seed = 9})
      if lo <= 0.3 and 0.3 <= hi then covered = covered + 1 end
    end
    assert.is_true(covered >= 50 and covered <= 60, ("covered %d of 60"):format(covered))
  end)

  it("keeps each stratum's size in every resample", function()
    local strata = {"a", "b", "a", "a", "b", "c"}
    for _, draw in ipairs(evaluation.resamples(6, {samples = 20, seed = 3, strata = strata})) do
      -- strata in order of first appearance: a (1, 3, 4), b (2, 5), c (6)
      for k = 1, 3 do assert.are.equal("a", strata[draw[k]]) end
      for k = 4, 5 do assert.are.equal("b", strata[draw[k]]) end
      assert.are.equal(6, draw[6])
    end
  end)

  it("refuses bad arguments with the argument's name", function()
    assert.matches("evaluation.bootstrap: cases must be an array, got number", message(evaluation.bootstrap, 3))
    assert.matches("evaluation.bootstrap: cases must not be empty", message(evaluation.bootstrap, {}))
    assert.matches("cases%[2%] must be a finite number for the mean, got %-?nan",
                   message(evaluation.bootstrap, {1, 0 / 0}))
    assert.matches("statistic must be a function%(sample%) %-> number, got string",
                   message(evaluation.bootstrap, {1}, "mean"))
    assert.matches("samples must be a positive integer, got 0",
                   message(evaluation.bootstrap, {1}, nil, {samples = 0}))
    assert.matches("level must be a number in %(0, 1%), got 95",
                   message(evaluation.bootstrap, {1}, nil, {level = 95}))
    assert.matches("unknown option 'sample'", message(evaluation.bootstrap, {1}, nil, {sample = 10}))
    assert.matches("strata must have one entry per case %(2%), got 1",
                   message(evaluation.bootstrap, {1, 2}, nil, {strata = {1}}))
    assert.matches("the statistic gave %-?nan on resample 1",
                   message(evaluation.bootstrap, {1, 2}, function() return 0 / 0 end, {samples = 3}))
  end)
end)

describe("evaluation.roc and evaluation.auc", function()
  it("make one ROC point per distinct score and count ties 1/2", function()
    local scores, labels = {0.9, 0.8, 0.8, 0.8, 0.1}, {1, 1, 0, 0, 0}
    local points = evaluation.roc(scores, labels)
    assert.are.equal(4, #points)
    local want = {{0, 0, math.huge}, {0, 0.5, 0.9}, {2 / 3, 1, 0.8}, {1, 1, 0.1}}
    for k, w in ipairs(want) do
      near(w[1], points[k].fpr, 1e-15)
      near(w[2], points[k].tpr, 1e-15)
      assert.are.equal(w[3], points[k].threshold)
    end
    -- 0.9 beats all three negatives; 0.8 ties two (1/2 each) and beats one: (3 + 2) / 6
    near(5 / 6, evaluation.auc(scores, labels), 1e-15)
    near(5 / 6, evaluation.auc(scores, {true, true, false, false, false}), 1e-15)
    -- every score tied: 1/2
    near(0.5, evaluation.auc({0.4, 0.4, 0.4}, {1, 0, 0}), 1e-15)
    assert.are.equal(1, evaluation.auc({0.9, 0.2}, {1, 0}))
    assert.are.equal(0, evaluation.auc({0.2, 0.9}, {1, 0}))
  end)

  it("leave the AUC undefined, with the reason, when the labels are all positive or all negative", function()
    local auc, why = evaluation.auc({0.1, 0.5, 0.9}, {1, 1, 1})
    assert.is_nil(auc)
    assert.are.equal("AUC is undefined: no negative images among 3", why)
    auc, why = evaluation.auc({0.1, 0.5}, {0, 0})
    assert.is_nil(auc)
    assert.are.equal("AUC is undefined: no positive images among 2", why)
    local e, reason = evaluation.auc_interval({0.1, 0.5}, {0, 0}, {samples = 10})
    assert.is_nil(e)
    assert.matches("no positive images", reason)
    local at, why_at = evaluation.at_sensitivity({0.1, 0.5}, {0, 0}, 0.9)
    assert.is_nil(at)
    assert.matches("no positive images", why_at)
    -- the ROC of one class has NaN for the missing rate
    local points = evaluation.roc({0.1, 0.5}, {0, 0})
    assert.is_true(points[2].tpr ~= points[2].tpr)
    assert.are.equal(1, points[3].fpr)
  end)

  it("refuse bad arguments with the argument's name", function()
    assert.matches("evaluation.auc: scores must be an array, got nil", message(evaluation.auc))
    assert.matches("evaluation.auc: scores must not be empty", message(evaluation.auc, {}, {}))
    assert.matches("evaluation.roc: scores%[2%] must be a finite number, got inf",
                   message(evaluation.roc, {0.1, math.huge}, {0, 1}))
    assert.matches("evaluation.auc: labels must have one entry per score %(2%), got 1",
                   message(evaluation.auc, {0.1, 0.2}, {1}))
    assert.matches('evaluation.auc: labels%[2%] must be true, false, 1 or 0, got "yes"',
                   message(evaluation.auc, {0.1, 0.2}, {1, "yes"}))
    assert.matches("evaluation.auc_interval: unknown option 'strata'",
                   message(evaluation.auc_interval, {0.1, 0.2}, {1, 0}, {strata = {1, 2}}))
  end)
end)

describe("evaluation.confusion and evaluation.at_sensitivity", function()
  it("count the four cells and their ratios, NaN where a ratio has no denominator", function()
    local c = evaluation.confusion({1, 1, 0, 0, 1}, {1, 0, 1, 0, 1})
    assert.are.same({2, 1, 1, 1}, {c.tp, c.fp, c.tn, c.fn})
    near(2 / 3, c.sensitivity, 1e-15)
    near(1 / 2, c.specificity, 1e-15)
    near(2 / 3, c.ppv, 1e-15)
    near(1 / 2, c.npv, 1e-15)
    near(3 / 5, c.accuracy, 1e-15)
    local none = evaluation.confusion({false, false}, {false, false})
    assert.is_true(none.sensitivity ~= none.sensitivity and none.ppv ~= none.ppv)
    assert.are.equal(1, none.specificity)
    assert.matches("evaluation.confusion: predicted%[1%] must be true, false, 1 or 0, got 2",
                   message(evaluation.confusion, {2}, {1}))
    assert.matches("evaluation.confusion: labels must have one entry per score %(2%), got 3",
                   message(evaluation.confusion, {1, 0}, {1, 0, 1}))
  end)

  it("picks the highest threshold whose sensitivity reaches the target", function()
    local scores = {0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1}
    local labels = {1, 0, 1, 1, 0, 1, 0, 0, 1, 0}
    -- 5 positives: 0.8 reaches 2/5, 0.7 3/5, 0.5 4/5, 0.2 5/5
    local at = evaluation.at_sensitivity(scores, labels, 0.8)
    assert.are.equal(0.5, at.threshold)
    near(0.8, at.sensitivity, 1e-15)
    near(3 / 5, at.specificity, 1e-15)
    assert.are.equal(0.2, evaluation.at_sensitivity(scores, labels, 0.81).threshold)
    assert.are.equal(0.95, evaluation.at_sensitivity(scores, labels, 0.2).threshold)
    assert.matches("target must be a sensitivity in %(0, 1%], got 90",
                   message(evaluation.at_sensitivity, scores, labels, 90))
  end)
end)

describe("evaluation.calibration", function()
  it("bins scores by k/B edges, each edge in the bin above it, and weighs the gaps by the counts", function()
    local bins, ece = evaluation.calibration({0, 0.3, 0.25, 1, 0.5, 0.55}, {0, 1, 0, 1, 1, 0}, {bins = 4})
    assert.are.equal(4, #bins)
    assert.are.same({0, 0.25}, {bins[1].lo, bins[1].hi})
    assert.are.same({1, 2, 2, 1}, {bins[1].count, bins[2].count, bins[3].count, bins[4].count})
    near(0.275, bins[2].mean_score, 1e-15)
    near(0.5, bins[2].fraction_positive, 1e-15)
    -- |0 - 0| * 1/6 + |0.275 - 0.5| * 2/6 + |0.525 - 0.5| * 2/6 + |1 - 1| * 1/6
    near((0.225 * 2 + 0.025 * 2) / 6, ece, 1e-15)
    assert.matches("scores%[1%] must be in %[0, 1%], got 1.5",
                   message(evaluation.calibration, {1.5}, {1}))
    assert.matches("bins must be a positive integer, got 0",
                   message(evaluation.calibration, {0.5}, {1}, {bins = 0}))
  end)
end)

describe("evaluation.size_class", function()
  it("sorts true areas into small < 1%, medium 1-5%, large >= 5% of the image", function()
    assert.is_nil(evaluation.size_class(0))
    assert.are.equal("small", evaluation.size_class(1 / 4096))
    assert.are.equal("small", evaluation.size_class(0.0099))
    assert.are.equal("medium", evaluation.size_class(0.01))
    assert.are.equal("medium", evaluation.size_class(0.0499))
    assert.are.equal("large", evaluation.size_class(0.05))
    assert.are.equal("large", evaluation.size_class(1))
    assert.matches("fraction must be a number in %[0, 1%], got 2", message(evaluation.size_class, 2))
  end)
end)

describe("evaluation.report", function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rmdir(dir) end)

  it("names an image without a score, and refuses bad options", function()
    local f = assert(io.open(dir .. "/few.csv", "w"))
    f:write("image_id,max_probability\n1.2.276.0.7230010.3.1.4.0100,0.5\n")
    f:close()
    assert.matches("evaluation.report: image 1.2.276.0.7230010.3.1.4.0101 of .*truth.csv has no max_probability "
                   .. "in .*few.csv", message(evaluation.report, {pred = PRED, truth = TRUTH, size = 64,
                                                                  scores = dir .. "/few.csv", samples = 10}))
    f = assert(io.open(dir .. "/noscore.csv", "w"))
    f:write("image_id,probability\na,0.5\n")
    f:close()
    assert.matches("noscore.csv has no max_probability column",
                   message(evaluation.report, {pred = PRED, truth = TRUTH, size = 64,
                                                 scores = dir .. "/noscore.csv"}))
    assert.matches("evaluation.report: unknown option 'bootstrap'",
                   message(evaluation.report, {pred = PRED, truth = TRUTH, bootstrap = 10}))
    assert.matches("evaluation.report: samples must be a positive integer, got 0",
                   message(evaluation.report, {pred = PRED, truth = TRUTH, samples = 0}))
    assert.matches("evaluation.report: expected truth = CSV, got nil", message(evaluation.report, {pred = PRED}))
  end)

  it("reports the AUC as undefined when no image has a pneumothorax", function()
    local f = assert(io.open(dir .. "/negatives.csv", "w"))
    f:write("ImageId,EncodedPixels\n")
    for line in io.lines(TRUTH) do
      local id = line:match("^(1%.2[^,]*),")
      if id then f:write(id, ",-1\n") end
    end
    f:close()
    local r = evaluation.report{pred = PRED, truth = dir .. "/negatives.csv", scores = SCORES, size = 64, samples = 20}
    assert.are.equal(0, r.positives)
    assert.is_nil(r.detection.auc)
    assert.matches("no positive images among 60", r.detection.auc_undefined)
    assert.is_true(r.segmentation.dice_positive.estimate ~= r.segmentation.dice_positive.estimate)
    assert.matches("no positive images", r.detection.at_sensitivity[1].undefined)
    local text = table.concat(evaluation.summary(r), "\n")
    assert.matches("AUC is undefined: no positive images among 60", text, 1, true)
    assert.matches("Dice on positives n/a   n=0", text, 1, true)
  end)

  it("prints a summary of one screen with every measure", function()
    local summary = evaluation.summary(report)
    assert.is_true(#summary >= 15 and #summary <= 20, #summary .. " lines")
    local text = table.concat(summary, "\n")
    for _, piece in ipairs {"60 images, 26 with pneumothorax", "Dice on positives", "small (< 1%)",
                            "medium (1-5%)", "large (>= 5%)", "AUC", "sensitivity", "at 90% sensitivity",
                            "at 95% sensitivity", "ECE"} do
      assert.matches(piece, text, 1, true)
    end
    assert.matches(("AUC %s [%.4f, %.4f]"):format(("%.4f"):format(reference.auc), report.detection.auc.lo,
                                                   report.detection.auc.hi), text:gsub("  +", " "), 1, true)
  end)
end)

describe("examples/evaluate.lua's report", function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rmdir(dir) end)

  -- The last line as evaluate.lua printed it before the report existed.
  local LAST = ("dice=%.4f iou=%.4f dice_positive=%.4f iou_positive=%.4f images=60 positives=26"):format(
    reference.dice, reference.iou, reference.dice_positive, reference.iou_positive)

  it("writes the report as JSON and three figures, and keeps its last line", function()
    local text, code = run_evaluate{"--pred", PRED, "--truth", TRUTH, "--size", "64", "--json", dir .. "/r.json",
                                    "--plots", dir .. "/figures", "--bootstrap", "200"}
    assert.are.equal(0, code, text)
    local out = lines(text)
    assert.are.equal("dice=0.6797 iou=0.6434 dice_positive=0.5301 iou_positive=0.4463 images=60 positives=26",
                     out[#out])
    assert.are.equal(LAST, out[#out])
    assert.matches("^1 images of .* are not in .*: not scored$", out[1])
    -- the default scores: images.csv beside --pred
    assert.matches(("AUC %.4f"):format(reference.auc), text:gsub("  +", " "), 1, true)
    local json = cjson.decode(read(dir .. "/r.json"))
    assert.are.equal(60, json.images)
    assert.are.equal(26, json.positives)
    assert.are.equal(1, json.extra)
    assert.are.equal(200, json.settings.samples)
    assert.are.equal(SCORES, json.settings.scores)
    near(reference.dice, json.segmentation.dice.estimate, 1e-15, "dice")
    near(reference.bootstrap.dice[1], json.segmentation.dice.lo, 1e-9, "dice lo")
    near(reference.auc, json.detection.auc.estimate, 1e-15, "auc")
    near(reference.bootstrap.auc[2], json.detection.auc.hi, 1e-9, "auc hi")
    near(reference.calibration.ece, json.detection.calibration.ece, 1e-15, "ece")
    assert.are.equal(reference.confusion.tp, json.detection.operating_point.tp)
    assert.are.equal(#reference.roc, #json.detection.roc)
    assert.are.equal(null, json.detection.roc[1].threshold)       -- +inf
    assert.are.equal(60, #json.per_image)
    assert.are.equal(reference.per_image[5].dice, json.per_image[5].dice)
    -- the JSON is the report: the same text from the module
    local again = evaluation.report{pred = PRED, truth = TRUTH, scores = SCORES, size = 64, samples = 200}
    assert.are.equal(evaluation.json(again) .. "\n", read(dir .. "/r.json"))
    for _, name in ipairs {"roc", "calibration", "dice_by_size"} do
      local path = ("%s/figures/%s.png"):format(dir, name)
      assert.are.equal("\137PNG\r\n\26\n", read(path):sub(1, 8), name)
      local png = lpnx.png.read(path)
      assert.is_true(png:size(2) >= 400 and png:size(3) >= 600, name)
      assert.is_true(png:max() > png:min(), name .. " is not blank")
    end
  end)

  it("prints the same last line as before, with or without scores, and names an image without a score", function()
    local f = assert(io.open(dir .. "/few.csv", "w"))
    f:write("image_id,max_probability\n1.2.276.0.7230010.3.1.4.0100,0.5\n")
    f:close()
    local text, code = run_evaluate{"--pred", PRED, "--truth", TRUTH, "--size", "64", "--scores", dir .. "/few.csv"}
    assert.are.equal(1, code, text)
    assert.matches("^evaluate.lua: evaluation.report: image 1.2.276.0.7230010.3.1.4.0101 of .* has no "
                   .. "max_probability in .*few.csv\n$", text)
    -- a submission with no images.csv beside it: segmentation only
    local sub = dir .. "/alone/submission.csv"
    lpnx.fs.mkdir_p(dir .. "/alone")
    local w = assert(io.open(sub, "wb"))
    w:write(read(PRED))
    w:close()
    text, code = run_evaluate{"--pred", sub, "--truth", TRUTH, "--size", "64", "--bootstrap", "50"}
    assert.are.equal(0, code, text)
    assert.matches("detection: no image scores", text, 1, true)
    local out = lines(text)
    assert.are.equal(LAST, out[#out])
    -- an images.csv beside it that misses an image: said, and segmentation only
    w = assert(io.open(dir .. "/alone/images.csv", "wb"))
    w:write(read(dir .. "/few.csv"))
    w:close()
    text, code = run_evaluate{"--pred", sub, "--truth", TRUTH, "--size", "64", "--bootstrap", "50"}
    assert.are.equal(0, code, text)
    assert.matches("no detection report: evaluation.report: image 1.2.276.0.7230010.3.1.4.0101", text, 1, true)
    out = lines(text)
    assert.are.equal(LAST, out[#out])
  end)

  it("refuses bad flags with one line and exit code 2", function()
    for _, case in ipairs {
      {{"--bootstrap", "0"}, "evaluate.lua: --bootstrap must be an integer >= 1"},
      {{"--seed", "x"}, "evaluate.lua: --seed expects an integer, got 'x' (see --help)"},
      {{"--scores", dir .. "/none.csv"}, "evaluate.lua: --scores " .. dir .. "/none.csv: no such file"},
    } do
      local args = {"--pred", PRED, "--truth", TRUTH, "--size", "64"}
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      local text, code = run_evaluate(args)
      assert.are.equal(2, code, text)
      assert.are.same({case[2]}, lines(text))
    end
  end)
end)
