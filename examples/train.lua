-- Trains the ResNet U-Net on a SIIM-ACR folder (or a synthetic one).
--   lua5.4 examples/train.lua --data demo/data --out demo/run --epochs 10
-- Data-parallel over N processes (one machine or several, with Open MPI):
--   mpirun -np 2 lua5.4 examples/train.lua --dist --sync-bn --data demo/data --out demo/run
local argparse = require "argparse"
local lpnx = require "lpnx"

local d = lpnx.train.defaults
local parser = argparse("train.lua", "Train the pneumothorax U-Net (ResNet encoder) on SIIM-ACR-form data.")
  :epilog("Files written to --out: model.safetensors (final weights, loadable into PyTorch's smp Unet), "
          .. "best.safetensors (best validation Dice), checkpoint.safetensors (for --resume), log.csv, curves.png.")
parser:option("--data", "Folder with DICOM files anywhere below it (SIIM-ACR layout), "
              .. "or with images/ and masks/ PNG folders."):count(1)
parser:option("--csv", "Run-length CSV of the masks (default: DATA/train-rle.csv).")
parser:option("--out", "Run folder for weights, checkpoint, log and curves."):count(1)
parser:option("--size", "Training resolution in pixels (a multiple of 32).", tostring(d.size)):convert(math.tointeger)
parser:option("--encoder", "Encoder: resnet18, resnet34 or resnet50.", d.encoder)
parser:option("--encoder-width", "Width of the encoder's first stage (64 = the standard ResNet).",
              tostring(d.encoder_width)):convert(math.tointeger)
parser:option("--decoder-channels", "The five decoder block widths.", table.concat(d.decoder_channels, ","))
parser:option("--epochs", "Number of epochs.", tostring(d.epochs)):convert(math.tointeger)
parser:option("--batch", "Batch size.", tostring(d.batch)):convert(math.tointeger)
parser:option("--lr", "Initial learning rate (cosine-annealed to 1% over the run).", tostring(d.lr)):convert(tonumber)
parser:option("--optimizer", "adam or adamw.", d.optimizer)
parser:option("--weight-decay", "Weight decay.", tostring(d.weight_decay)):convert(tonumber)
parser:option("--loss", "combo (BCE + Dice), bce, dice, focal or focal_dice.", d.loss)
parser:option("--positive-fraction",
              "Share of pneumothorax images per epoch: P, or START,END lowered linearly over the epochs "
              .. "(e.g. 0.8,0.4). Default: as in the data.")
parser:option("--val-fraction", "Share of image ids held out for validation.", tostring(d.val_fraction))
  :convert(tonumber)
parser:flag("--no-val", "Train on every image; no validation, best.safetensors = the final weights.")
parser:flag("--no-augment", "Train without augmentation.")
parser:option("--pretrained", "Safetensors file of ImageNet-pretrained ResNet weights (torchvision or timm keys) "
              .. "for the encoder.")
parser:flag("--resume", "Continue from OUT/checkpoint.safetensors (starts fresh, and says so, when there is none).")
parser:option("--save-every", "Also write the checkpoint every N steps (0: only at epoch ends).",
              tostring(d.save_every)):convert(math.tointeger)
parser:option("--seed", "Seed for weights, sampling and augmentation.", tostring(d.seed)):convert(math.tointeger)
parser:option("--threads", "Threads for the kernels (default: every core; under --dist the cores of each machine "
              .. "shared among its processes)."):convert(math.tointeger)
parser:option("--workers", "Data worker processes (0: load in the training process).", tostring(d.workers))
  :convert(math.tointeger)
parser:option("--conv-algorithm", "How convolutions compute: auto (the training forward summed in double, "
              .. "Winograd elsewhere), winograd (faster, gradients further from exact), winograd2, direct or double.",
              "auto")
parser:option("--clip", "Clip the global gradient norm to this value."):convert(tonumber)
parser:flag("--skip-nonfinite", "Skip a batch whose loss is NaN or infinite instead of stopping.")
parser:option("--max-steps", "Stop (with a checkpoint) after this many steps in all."):convert(math.tointeger)
parser:flag("--dist", "One process of a data-parallel run started by mpirun: each process trains on its share of "
            .. "every global batch of --batch images; gradients are summed over the processes; rank 0 writes.")
parser:flag("--sync-bn", "With --dist: BatchNorm statistics over the whole global batch, so that N processes "
            .. "train exactly as one process would.")

-- Under mpirun every process checks the flags; one of them speaks.
local quiet = (os.getenv("OMPI_COMM_WORLD_RANK") or "0") ~= "0"
local ok_parse, args = parser:pparse()
if not ok_parse then
  if not quiet then io.stderr:write("train.lua: ", args, "\n(see --help)\n") end
  os.exit(2)
end
local function fail(msg)
  if not quiet then io.stderr:write("train.lua: ", msg, "\n") end
  os.exit(2)
end
for _, k in ipairs {"size", "encoder_width", "epochs", "batch", "seed", "workers", "save_every"} do
  if not args[k] then fail(("--%s must be an integer"):format(k:gsub("_", "-"))) end
end
if args.sync_bn and not args.dist then fail("--sync-bn needs --dist") end
if args.dist and not lpnx.dist.available then
  fail("--dist needs lpnx built with MPI (apt-get install openmpi-bin libopenmpi-dev, then make)")
end
for _, k in ipairs {"lr", "weight_decay", "val_fraction"} do
  if not args[k] then fail(("--%s must be a number"):format(k:gsub("_", "-"))) end
end
if args.size < 32 or args.size % 32 ~= 0 then fail("--size must be a positive multiple of 32") end
if args.epochs < 1 or args.batch < 1 then fail("--epochs and --batch must be at least 1") end
if (args.threads and args.threads < 1) or args.workers < 0 then
  fail("--threads must be at least 1 and --workers at least 0")
end
if not pcall(lpnx.set_conv_algorithm, args.conv_algorithm) then
  fail(("--conv-algorithm must be auto, winograd, winograd2, direct or double, got %s"):format(args.conv_algorithm))
end
if lpnx.fs.stat(args.data) ~= "dir" then fail(("--data %s is not a folder"):format(args.data)) end
local csv = args.csv or (args.data .. "/train-rle.csv")
if lpnx.fs.stat(csv) ~= "file" and lpnx.fs.stat(args.data .. "/images") ~= "dir" then
  fail(("no mask CSV at %s (give --csv)"):format(csv))
end
if args.pretrained and lpnx.fs.stat(args.pretrained) ~= "file" then
  fail(("--pretrained %s: no such file"):format(args.pretrained))
end

local ok, result = pcall(lpnx.train.run, {
  data = args.data, csv = lpnx.fs.stat(csv) == "file" and csv or nil, out = args.out, size = args.size,
  encoder = args.encoder, encoder_width = args.encoder_width, decoder_channels = args.decoder_channels,
  epochs = args.epochs, batch = args.batch, lr = args.lr, optimizer = args.optimizer,
  weight_decay = args.weight_decay, loss = args.loss, positive_fraction = args.positive_fraction,
  val_fraction = args.val_fraction, no_val = args.no_val, augment = not args.no_augment,
  pretrained = args.pretrained, resume = args.resume, save_every = args.save_every, seed = args.seed,
  threads = args.threads, workers = args.workers, clip = args.clip, skip_nonfinite = args.skip_nonfinite,
  max_steps = args.max_steps, dist = args.dist, sync_bn = args.sync_bn,
})
if not ok then
  if args.dist and lpnx.dist.active() then
    -- one process's error ends the whole job at once instead of leaving the others waiting in a collective
    io.stderr:write(("train.lua: rank %d: %s\n"):format(lpnx.dist.rank(), tostring(result)))
    io.stderr:flush()
    lpnx.dist.abort(2)
  end
  fail(tostring(result))
end
if args.dist then
  lpnx.dist.finalize()
  if result.rank ~= 0 then os.exit(0) end
end
if result.interrupted then
  print(("stopped after step %d; the checkpoint in %s resumes it (--resume)"):format(result.steps, args.out))
  os.exit(0)
end
print(("trained %d epochs (%d steps) in %s; best val dice %s; weights in %s/model.safetensors"):format(
  result.epochs, result.steps, lpnx.progress.format_duration(result.seconds),
  result.best_dice and ("%.4f"):format(result.best_dice) or "-", args.out))
