-- Segments pneumothorax on chest X-rays with a trained lpnx model: one
-- SIIM-ACR submission row per image, a PNG mask and a review overlay; on
-- request a DICOM Segmentation per image and a review page for the batch.
--   lua5.4 examples/predict.lua --model runs/best.safetensors --data data/dicom-images-test --out pred
--   lua5.4 examples/predict.lua --model m.safetensors --data a.dcm b.dcm --out pred --threshold 0.5 --tta
--   lua5.4 examples/predict.lua --model m.safetensors --data test --out pred --dicom-seg --report --truth test-rle.csv
--   lua5.4 examples/predict.lua --model smp_unet.pth --encoder resnet34 --data test --out pred
--   lua5.4 examples/predict.lua --model runs/best.safetensors --export-onnx unet.onnx
-- One bad input never stops the batch: a file that cannot be read, or that is not a frontal chest
-- X-ray by lpnx.predict.chest_rules (another modality or body part, a lateral view, several frames,
-- colour), is left out with its reason: a "skipped" line here and a row of OUT/skipped.csv.
-- Exit codes: 0 every input predicted; 3 some inputs skipped, the others predicted (the outputs are
-- complete for them); 2 a bad flag or a missing file; 1 a failure while running, or no input could be
-- predicted.
local argparse = require "argparse"
local cli = require "lpnx.cli"
local data = require "lpnx.data"
local lpnx = require "lpnx"
local predict = require "lpnx.predict"
local report = require "lpnx.report"

local PROGRAM = "predict.lua"
local fail = cli.failer(PROGRAM)
local d = predict.defaults

local parser = argparse(PROGRAM, "Predict pneumothorax masks with a trained lpnx U-Net and write a SIIM-ACR "
                                 .. "submission, PNG masks and overlays.")
  :epilog("Post-processing: by default the SIIM-ACR triplet: an image is positive only when at least --min-area "
          .. "pixels (counted on a 1024x1024 image, scaled to each image's size) have a probability above --top; "
          .. "its mask is then every pixel above --bottom. --threshold T instead keeps every pixel above T. "
          .. "examples/evaluate.lua --search picks the triplet on labelled images. "
          .. "An input that cannot be read, or is not a single-frame gray frontal chest radiograph "
          .. "(lpnx.predict.chest_rules; --any-image turns the check off), is skipped with its reason: a line here "
          .. "and a row of OUT/skipped.csv. Exit status: 0 every input predicted, 3 some skipped and the rest "
          .. "predicted, 2 a bad flag or missing file, 1 a failure or no input predicted.")
parser:option("--model", "Model file written by lpnx.models.save or the trainer (safetensors), or a U-Net's weights "
                        .. "alone with segmentation_models_pytorch's names: a PyTorch checkpoint (.pth) or a "
                        .. "safetensors state dict. Told apart by content; the architecture of a weights-only "
                        .. "file is read off its tensors."):argname("<file>")
  :convert(cli.file("--model", "a model file"))
parser:option("--encoder", "The ResNet a weights-only --model must hold (resnet18, resnet34, resnet50): "
                          .. "checked against its tensors."):argname("<name>")
  :convert(cli.choice("--encoder", {"resnet18", "resnet34", "resnet50"}))
parser:option("--input-size", "The side a weights-only --model's input is resized to (a multiple of 32; 256 when "
                             .. "not given); lpnx model files say their own."):argname("<pixels>")
  :convert(cli.integer("--input-size", {32, 8192}))
parser:option("--export-onnx", "Also write the model as ONNX to this file (lpnx.models.export_onnx: its input size, "
                              .. "any batch size, BatchNorm folded). Without --data and --out, only that.")
  :argname("<file>")
parser:option("--data", ("A folder (searched recursively for files with the extension %s) or image files.")
  :format(cli.choices(data.readers)))
  :argname("<path>"):args("+"):convert(cli.path("--data"))
parser:option("--out", "Output folder: submission.csv, images.csv (view, area in cm^2 and where its pixel spacing "
                       .. "came from), skipped.csv (path,image_id,reason), masks/ID.png, overlays/ID.png.")
  :argname("<dir>")
parser:flag("--tta", "Average the prediction with the one on the horizontally flipped image.")
cli.postprocess_flags(parser, d)
parser:option("--batch", "Images per forward pass.", tostring(d.batch)):argname("<n>")
  :convert(cli.integer("--batch", {min = 1}))
parser:option("--threads", "Threads for lpnx's kernels and OpenBLAS.", tostring(lpnx.get_num_threads())):argname("<n>")
  :convert(cli.integer("--threads", {min = 1}))
parser:flag("--dicom-seg", "Write seg/ID.dcm: a DICOM Segmentation (one binary segment, \"Pneumothorax\") of each "
                           .. "DICOM input with a predicted mask, referencing its source image, for PACS viewers.")
parser:flag("--dicom-seg-empty", "With --dicom-seg, also write an empty-segment object for images without one.")
parser:flag("--report", "Write index.html (and report/): a self-contained page to review the batch in a browser.")
parser:option("--truth", "SIIM-form CSV of the true masks: the report shows each image's Dice and flags "
                         .. "disagreements (needs --report)."):argname("<csv>"):convert(cli.file("--truth"))
parser:option("--report-size", "Long side of the report's full-size images, in pixels.", "1024"):argname("<pixels>")
  :convert(cli.integer("--report-size", {min = 16}))
parser:flag("--any-image", "Predict every readable image: no check that it is a single-frame, gray, frontal chest "
                           .. "radiograph (Modality CR, DX, SC or OT; BodyPartExamined a chest; ViewPosition not "
                           .. "lateral; empty attributes pass).")
parser:flag("--no-overlays", "Do not write overlays/.")
parser:flag("--no-masks", "Do not write masks/.")
parser:flag("--quiet", "No progress on stderr.")

local args = cli.parse(parser, fail)
-- what the converters cannot check: flags that go together
if args.model == nil then fail(2, "--model is required (see --help)") end
if args.input_size and args.input_size % 32 ~= 0 then
  fail(2, ("--input-size must be a multiple of 32, got %d"):format(args.input_size))
end
local ok_model, model, meta = pcall(lpnx.models.load, args.model, {encoder = args.encoder, size = args.input_size})
if not ok_model then fail(2, model) end
if args.export_onnx then
  local ok, nodes = pcall(lpnx.models.export_onnx, model, args.export_onnx, {size = meta.input_size})
  if not ok then fail(1, nodes) end
  print(("wrote %s: the %s U-Net as ONNX, %d nodes, input (batch, %d, %d, %d)"):format(
    args.export_onnx, meta.encoder, nodes, model.config.in_channels, meta.input_size, meta.input_size))
  if args.data == nil and args.out == nil then os.exit(0) end
end
for _, key in ipairs {"data", "out"} do
  if args[key] == nil then fail(2, ("--%s is required (see --help)"):format(key)) end
end
local conflict = cli.postprocess_conflict(args)
if conflict then fail(2, conflict) end
if args.dicom_seg_empty and not args.dicom_seg then fail(2, "--dicom-seg-empty needs --dicom-seg") end
if args.truth and not args.report then fail(2, "--truth is shown in the report: add --report") end

local paths = {}
for _, item in ipairs(args.data) do
  local list = data.list_images(item)
  if #list == 0 then fail(2, ("--data %s: no .dcm or .png images in it"):format(item)) end
  for _, p in ipairs(list) do paths[#paths + 1] = p end
end

local review, page, reviewed
local done, summary = xpcall(function()
  if args.report then review = report.new{out = args.out, truth = args.truth, view_size = args.report_size} end
  local s = predict.run{
    model = model, meta = meta, inputs = paths, out = args.out, tta = args.tta, batch = args.batch,
    threads = args.threads,
    top = args.top, min_area = args.min_area, bottom = args.bottom, threshold = args.threshold,
    min_component = args.min_component, write_masks = not args.no_masks, write_overlays = not args.no_overlays,
    dicom_seg = args.dicom_seg, dicom_seg_empty = args.dicom_seg_empty, any_image = args.any_image,
    each = review and function(result, image, mask) review:add(result, image, mask) end,
    progress = not args.quiet and cli.reporter("predict") or nil,
    on_skip = function(entry)
      io.stdout:write(("skipped %s (%s): %s\n"):format(entry[2], entry[1], entry[3]))
      io.stdout:flush()
    end,
    on_warning = function(id, message)
      io.stdout:write(("warning: %s: %s\n"):format(id, message))
      io.stdout:flush()
    end,
  }
  if review then page, reviewed = review:finish{segs = args.dicom_seg and s.segs or nil, skipped = #s.skipped} end
  return s
end, debug.traceback)
if not done then
  if os.getenv("LPNX_TRACEBACK") then io.stderr:write(summary, "\n") end
  fail(1, (summary:match("^[^\n]*")))
end

if args.dicom_seg then
  local dicoms = 0
  for _, r in ipairs(summary.results) do
    if r.path:lower():match("%.dcm$") or r.path:lower():match("%.dicom$") then dicoms = dicoms + 1 end
  end
  print(("wrote %d DICOM Segmentation%s to %s/seg (%d DICOM input%s%s)"):format(
    summary.segs, summary.segs == 1 and "" or "s", args.out, dicoms, dicoms == 1 and "" or "s",
    args.dicom_seg_empty and "" or ", images without a predicted mask get none"))
end
if page then
  print(("wrote the review page %s: %d cases%s"):format(page, reviewed.cases,
    reviewed.mean_dice and (", mean Dice %.4f, %d flagged"):format(reviewed.mean_dice, reviewed.flagged) or ""))
end

local post = args.threshold and ("threshold %g"):format(args.threshold)
  or ("triplet top %g, min_area %g, bottom %g"):format(args.top or d.top, args.min_area or d.min_area,
                                                       args.bottom or d.bottom)
print(("predicted %d images, %d with pneumothorax (%s%s%s) in %.1fs: %s"):format(
  summary.images, summary.positive, post, args.min_component > 0 and (", min_component " .. args.min_component) or "",
  args.tta and ", tta" or "", summary.seconds, summary.submission))
if #summary.skipped > 0 then
  print(("skipped %d of %d inputs: %s"):format(#summary.skipped, summary.inputs, summary.skipped_csv))
  if summary.images == 0 then fail(1, "no input could be predicted (see " .. summary.skipped_csv .. ")") end
  os.exit(3)
end
