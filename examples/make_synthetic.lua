-- Writes a synthetic SIIM-ACR data set: chest radiograph phantoms as JPEG
-- DICOM files, their pneumothorax masks as a run-length CSV, and a
-- held-out test split, all reproducible from the seed.
--   lua5.4 examples/make_synthetic.lua --out data/synth --count 200 --seed 1
--   lua5.4 examples/make_synthetic.lua --out data/hard --count 240 --preset siim
local argparse = require "argparse"
local lpnx = require "lpnx"
local cli = require "lpnx.cli"
local synth = require "lpnx.synth"

local parser = argparse("make_synthetic.lua", "Write a synthetic SIIM-ACR pneumothorax data set.")
parser:option("--out", "Folder to write: dicom-images-train/, dicom-images-test/, train-rle.csv, test-rle.csv.")
  :count(1)
parser:option("--count", "Number of images in all (train + test).", "100"):convert(cli.integer("--count", {min = 1}))
parser:option("--seed", "Seed: the same seed writes the same files.", "1"):convert(cli.integer("--seed"))
parser:option("--positive", "Share of images with a pneumothorax (default 0.4, or the preset's).")
  :convert(cli.number("--positive", {min = 0, max = 1}))
parser:option("--preset", "A harder, SIIM-like set: siim (look-alikes, devices, supine films, size classes, "
                .. "16-bit DX files; README's table gives the rates). Writes features.csv too.")
  :choices({"siim"})
parser:option("--size", "Image side in pixels (SIIM-ACR's images are 1024).", "1024")
  :convert(cli.integer("--size", {min = 64, multiple_of = 32}))
parser:option("--test-fraction", "Share of images held out in dicom-images-test.", "0.1")
  :convert(cli.number("--test-fraction", {min = 0, below = 1}))
parser:option("--quality", "JPEG quality of the DICOM files.", "95"):convert(cli.integer("--quality"))
parser:flag("--uncompressed", "Write uncompressed DICOM instead of JPEG baseline.")
parser:option("--workers", "Processes that render the images (the files are the same for any number).", "1")
  :convert(cli.integer("--workers", {min = 1}))
parser:option("--threads", "Threads for lpnx's kernels.", tostring(lpnx.get_num_threads()))
  :convert(cli.integer("--threads", {min = 1}))
local args = parser:parse()
lpnx.set_num_threads(args.threads)

local start = os.time()
local result = synth.write{
  out = args.out, count = args.count, seed = args.seed, positive = args.positive, size = args.size,
  preset = args.preset, workers = args.workers,
  test_fraction = args.test_fraction, jpeg = not args.uncompressed, quality = args.quality,
  progress = function(i, n, _, positive)
    io.stderr:write(("\r%d/%d images (%s)   "):format(i, n, positive and "pneumothorax" or "clear"))
  end,
}
io.stderr:write("\n")
print(("wrote %d training and %d test images (%d with pneumothorax) to %s in %ds"):format(
  #result.train, #result.test, result.positives, args.out, os.time() - start))
