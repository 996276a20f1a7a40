-- Scores a SIIM-ACR submission against the true masks, or picks the
-- post-processing triplet on labelled images.
--   lua5.4 examples/evaluate.lua --pred pred/submission.csv --truth data/test-rle.csv --size 1024
--   lua5.4 examples/evaluate.lua --pred pred/submission.csv --truth data/test-rle.csv --sizes-from data
--   lua5.4 examples/evaluate.lua --pred pred/submission.csv --truth data/test-rle.csv --json pred/evaluation.json \
--          --plots pred/figures
--   lua5.4 examples/evaluate.lua --search --model m.safetensors --data data/dicom-images-train \
--          --truth data/train-rle.csv
-- A scoring run prints lpnx.evaluation's one-screen summary (segmentation
-- with bootstrap intervals, Dice by size, and with image scores -- --scores,
-- or the images.csv predict.lua wrote beside --pred -- detection and
-- calibration), then, last, the line
--   dice=0.xxxx iou=0.xxxx dice_positive=0.xxxx iou_positive=0.xxxx images=N positives=K
-- Exit codes: 0 done, 2 a bad flag or a missing file, 1 a failure while running.
local argparse = require "argparse"
local cli = require "lpnx.cli"
local data = require "lpnx.data"
local evaluation = require "lpnx.evaluation"
local fs = require "lpnx.fs"
local lpnx = require "lpnx"
local predict = require "lpnx.predict"

local PROGRAM = "evaluate.lua"
local fail = cli.failer(PROGRAM)

local function join(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = ("%g"):format(v) end
  return table.concat(parts, ",")
end

local grid = predict.search_grid
local parser = argparse(PROGRAM, "Score a SIIM-ACR submission: mean Dice and IoU per image (an empty prediction "
                                 .. "on an empty truth scores 1), over all images and over the positive ones, "
                                 .. "Dice by pneumothorax size, and with image scores the ROC curve, AUC, "
                                 .. "sensitivity and specificity and calibration, with 95% bootstrap intervals.")
  :epilog("With --search, runs the model on the labelled images under --data and prints the post-processing "
          .. "triplet (--top, --min-area, --bottom) of the best mean Dice, as flags for examples/predict.lua.")
parser:option("--pred", "The submission to score (ImageId,EncodedPixels)."):argname("<csv>")
  :convert(cli.file("--pred"))
parser:option("--truth", "The true masks, in the same CSV form (e.g. train-rle.csv)."):argname("<csv>")
  :convert(cli.file("--truth"))
parser:option("--size", "Height and width of every image, when all have one size.", "1024"):argname("<pixels>")
  :convert(cli.integer("--size", {min = 1}))
parser:option("--sizes-from", "A folder with the images (DICOM or PNG): each image's size is read from its file.")
  :argname("<dir>"):convert(cli.dir("--sizes-from"))
parser:option("--scores", "The image-level scores: a CSV with image_id and max_probability columns, as predict.lua "
              .. "writes images.csv (default: images.csv beside --pred, when there is one)."):argname("<csv>")
  :convert(cli.file("--scores"))
parser:option("--json", "Write the whole report (every measure, interval, ROC point, calibration bin and "
              .. "per-image score) to this JSON file."):argname("<file>")
parser:option("--plots", "Draw roc.png, calibration.png and dice_by_size.png into this folder (with gnuplot)."):argname(
  "<dir>")
parser:option("--bootstrap", "Bootstrap resamples for the 95% confidence intervals.", "2000"):argname("<n>")
  :convert(cli.integer("--bootstrap", {min = 1}))
parser:option("--seed", "Seed of the bootstrap's draws (the same seed gives the same intervals anywhere).", "1")
  :argname("<n>"):convert(cli.integer("--seed", {min = 0}))
parser:flag("--search", "Search the post-processing triplet on labelled images instead of scoring a submission.")
parser:option("--model", "--search: the model file."):argname("<file>"):convert(cli.file("--model", "a model file"))
parser:option("--data", "--search: the folder of the labelled images (DICOM files named by image id)."):argname("<dir>")
  :convert(cli.dir("--data"))
parser:option("--tops", "--search: values of --top to try.", join(grid.tops)):argname("<list>")
  :convert(cli.numbers("--tops"))
parser:option("--min-areas", "--search: values of --min-area to try (pixels of a 1024x1024 image).",
              join(grid.min_areas)):argname("<list>"):convert(cli.numbers("--min-areas"))
parser:option("--bottoms", "--search: values of --bottom to try.", join(grid.bottoms)):argname("<list>")
  :convert(cli.numbers("--bottoms"))
parser:option("--min-component", "--search: drop mask regions smaller than this (pixels), as predict.lua does.",
              "0"):argname("<pixels>"):convert(cli.integer("--min-component", {min = 0}))
parser:flag("--tta", "--search: horizontal-flip test-time augmentation, as predict.lua --tta.")
parser:option("--batch", "--search: images per forward pass.", "4"):argname("<n>")
  :convert(cli.integer("--batch", {min = 1}))
parser:option("--threads", "Threads for lpnx's kernels and OpenBLAS.", tostring(lpnx.get_num_threads())):argname("<n>")
  :convert(cli.integer("--threads", {min = 1}))

local args = cli.parse(parser, fail)
if not args.truth then fail(2, "--truth CSV is required: the true masks to score against (see --help)") end
lpnx.set_num_threads(args.threads)

-- Runs fn(...) and turns an error into one line and exit code 1.
local function attempt(fn, ...)
  local done, result, a, b = xpcall(fn, debug.traceback, ...)
  if not done then
    if os.getenv("LPNX_TRACEBACK") then io.stderr:write(result, "\n") end
    fail(1, (result:match("^[^\n]*")))
  end
  return result, a, b
end

if args.search then
  for _, key in ipairs {"model", "data"} do
    if not args[key] then fail(2, ("--search needs --%s (see --help)"):format(key)) end
  end
  local best, _, tried = attempt(predict.search, {
    model = args.model, data = args.data, csv = args.truth, tops = args.tops, min_areas = args.min_areas,
    bottoms = args.bottoms, min_component = args.min_component, tta = args.tta, batch = args.batch,
    progress = cli.reporter("search"),
  })
  if best.missing > 0 then
    print(("%d images of %s are not under %s and were left out"):format(best.missing, args.truth, args.data))
  end
  for i, t in ipairs(tried) do t.order = i end -- ties keep the order tried, as search's choice does
  table.sort(tried, function(x, y) return x.dice > y.dice or (x.dice == y.dice and x.order < y.order) end)
  print(("tried %d triplets on %d images; the best five:"):format(#tried, best.images))
  for i = 1, math.min(5, #tried) do
    local t = tried[i]
    print(("  top %-5g min_area %-6g bottom %-5g dice=%.4f iou=%.4f")
          :format(t.top, t.min_area, t.bottom, t.dice, t.iou))
  end
  print(("best: dice=%.4f iou=%.4f; for examples/predict.lua:"):format(best.dice, best.iou))
  print(("--top %g --min-area %g --bottom %g%s%s"):format(best.top, best.min_area, best.bottom,
    args.min_component > 0 and (" --min-component " .. args.min_component) or "", args.tta and " --tta" or ""))
  os.exit(0)
end

if not args.pred then fail(2, "--pred CSV is required: the submission to score (see --help)") end
local sizes
if args.sizes_from then
  local files = {}
  for _, path in ipairs(data.list_images(args.sizes_from)) do files[data.image_id(path)] = path end
  sizes = function(id)
    local path = files[id]
    if not path then error(("image %s has no .dcm or .png file under %s"):format(id, args.sizes_from), 0) end
    local img = data.read_image(path)
    return img:size(2), img:size(3)
  end
end

-- The scores: --scores, else predict.lua's images.csv beside the submission.
local scores, beside = args.scores, nil
if not scores then
  local candidate = (args.pred:match("^(.*)/[^/]*$") or ".") .. "/images.csv"
  if fs.stat(candidate) == "file" then scores, beside = candidate, true end
end
local settings = {pred = args.pred, truth = args.truth, size = args.size, sizes = sizes, scores = scores,
                  samples = args.bootstrap, seed = args.seed}
local ok, report = pcall(evaluation.report, settings)
if not ok and beside then
  -- an images.csv found beside the submission that does not cover the truth: segmentation only
  print(("no detection report: %s"):format((tostring(report):gsub("^[^:\n]*%.lua:%d+: ", ""))))
  settings.scores = nil
  report = attempt(evaluation.report, settings)
elseif not ok then
  attempt(error, report, 0)
end
local r = {dice = report.segmentation.dice.estimate, iou = report.segmentation.iou.estimate,
           dice_positive = report.segmentation.dice_positive.estimate,
           iou_positive = report.segmentation.iou_positive.estimate, images = report.images,
           positives = report.positives, missing = report.missing, extra = report.extra}
if r.missing > 0 then
  print(("%d of the %d images of %s have no row in %s: scored as empty predictions"):format(
    r.missing, r.images, args.truth, args.pred))
end
if r.extra > 0 then print(("%d images of %s are not in %s: not scored"):format(r.extra, args.pred, args.truth)) end
if args.json then
  attempt(function()
    local f, err = io.open(args.json, "w")
    if not f then error(("cannot write --json %s"):format(err), 0) end
    f:write(evaluation.json(report), "\n")
    f:close()
  end)
end
if args.plots then
  local drawn, why = attempt(evaluation.plot, report, args.plots)
  if not drawn then print(why) end
end
for _, line in ipairs(evaluation.summary(report)) do print(line) end
local function fmt(v) return v ~= v and "nan" or ("%.4f"):format(v) end
print(("dice=%s iou=%s dice_positive=%s iou_positive=%s images=%d positives=%d"):format(
  fmt(r.dice), fmt(r.iou), fmt(r.dice_positive), fmt(r.iou_positive), r.images, r.positives))
