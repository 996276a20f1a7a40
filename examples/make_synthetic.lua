-- Writes a synthetic SIIM-ACR data set: chest radiograph phantoms as JPEG
-- DICOM files, their pneumothorax masks as a run-length CSV, and a
-- held-out test split, all reproducible from the seed.
--   lua5.4 examples/make_synthetic.lua --out data/synth --count 200 --seed 1
local argparse = require "argparse"
local lpnx = require "lpnx"

local parser = argparse("make_synthetic.lua", "Write a synthetic SIIM-ACR pneumothorax data set.")
parser:option("--out", "Folder to write: dicom-images-train/, dicom-images-test/, train-rle.csv, test-rle.csv.")
  :count(1)
parser:option("--count", "Number of images in all (train + test).", "100"):convert(math.tointeger)
parser:option("--seed", "Seed: the same seed writes the same files.", "1"):convert(math.tointeger)
parser:option("--positive", "Share of images with a pneumothorax.", "0.4"):convert(tonumber)
parser:option("--size", "Image side in pixels (SIIM-ACR's images are 1024).", "1024"):convert(math.tointeger)
parser:option("--test-fraction", "Share of images held out in dicom-images-test.", "0.1"):convert(tonumber)
parser:option("--quality", "JPEG quality of the DICOM files.", "95"):convert(math.tointeger)
parser:flag("--uncompressed", "Write uncompressed DICOM instead of JPEG baseline.")
parser:option("--threads", "Threads for lpnx's kernels.", tostring(lpnx.get_num_threads())):convert(math.tointeger)
local args = parser:parse()

for _, key in ipairs {"count", "seed", "size", "quality", "threads"} do
  if not args[key] then parser:error(("--%s must be an integer"):format(key)) end
end
if args.count < 1 then parser:error("--count must be at least 1") end
if args.size < 64 or args.size % 32 ~= 0 then parser:error("--size must be a multiple of 32, at least 64") end
if not args.positive or args.positive < 0 or args.positive > 1 then parser:error("--positive must be in [0, 1]") end
if not args.test_fraction or args.test_fraction < 0 or args.test_fraction >= 1 then
  parser:error("--test-fraction must be in [0, 1)")
end
lpnx.set_num_threads(args.threads)

local start = os.time()
local result = lpnx.synth.write{
  out = args.out, count = args.count, seed = args.seed, positive = args.positive, size = args.size,
  test_fraction = args.test_fraction, jpeg = not args.uncompressed, quality = args.quality,
  progress = function(i, n, _, positive)
    io.stderr:write(("\r%d/%d images (%s)   "):format(i, n, positive and "pneumothorax" or "clear"))
  end,
}
io.stderr:write("\n")
print(("wrote %d training and %d test images (%d with pneumothorax) to %s in %ds"):format(
  #result.train, #result.test, result.positives, args.out, os.time() - start))
