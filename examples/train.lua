-- Trains the ResNet U-Net on a SIIM-ACR folder (or a synthetic one).
--   lua5.4 examples/train.lua --data demo/data --out demo/run --epochs 10
-- Data-parallel over N processes (one machine or several, with Open MPI):
--   mpirun -np 2 lua5.4 examples/train.lua --dist --sync-bn --data demo/data --out demo/run
-- Exit codes: 0 done (or stopped with a checkpoint), 2 a bad flag, a missing file or a failure while training.
local argparse = require "argparse"
local lpnx = require "lpnx"
local cli = require "lpnx.cli"
local dist = require "lpnx.dist"
local fs = require "lpnx.fs"
local progress = require "lpnx.progress"
local resnet = require "lpnx.models.resnet"
local train = require "lpnx.train"

local PROGRAM = "train.lua"
-- Under mpirun every process checks the flags; one of them speaks.
local fail = cli.failer(PROGRAM, {quiet = (os.getenv("OMPI_COMM_WORLD_RANK") or "0") ~= "0"})
local d = train.defaults

local parser = argparse(PROGRAM, "Train the pneumothorax U-Net (ResNet encoder) on SIIM-ACR-form data.")
  :epilog("Files written to --out: model.safetensors (final weights, loadable into PyTorch's smp Unet), "
          .. "best.safetensors (best validation Dice), checkpoint.safetensors (for --resume), log.csv, curves.png.")
parser:option("--data", "Folder with DICOM files anywhere below it (SIIM-ACR layout), "
              .. "or with images/ and masks/ PNG folders."):count(1):convert(cli.dir("--data"))
parser:option("--csv", "Run-length CSV of the masks (default: DATA/train-rle.csv).")
parser:option("--out", "Run folder for weights, checkpoint, log and curves."):count(1)
parser:option("--size", "Training resolution in pixels (a multiple of 32).", tostring(d.size))
  :convert(cli.integer("--size", {min = 32, multiple_of = 32}))
parser:option("--crop", "Train on random NxN windows of the --size images (a multiple of 32 below --size): "
              .. "the cost of training at N with the detail of --size. Validation and prediction see whole "
              .. "images at --size."):convert(cli.integer("--crop", {min = 32, multiple_of = 32}))
parser:option("--crop-positive", "With --crop: the share of windows placed over the pneumothorax, when the "
              .. "image has one (the others anywhere).", "0.5")
  :convert(cli.number("--crop-positive", {min = 0, max = 1}))
parser:option("--encoder", ("Encoder: %s."):format(cli.choices(resnet.configs)), d.encoder)
  :convert(cli.choice("--encoder", resnet.configs))
parser:option("--encoder-width", "Width of the encoder's first stage (64 = the standard ResNet).",
              tostring(d.encoder_width)):convert(cli.integer("--encoder-width"))
parser:option("--decoder-channels", "The five decoder block widths.", table.concat(d.decoder_channels, ","))
parser:option("--epochs", "Number of epochs.", tostring(d.epochs)):convert(cli.integer("--epochs", {min = 1}))
parser:option("--batch", "Batch size.", tostring(d.batch)):convert(cli.integer("--batch", {min = 1}))
parser:option("--lr", "Initial learning rate (--scheduler lowers it over the run).", tostring(d.lr))
  :convert(cli.number("--lr"))
parser:option("--scheduler", ("Learning-rate schedule: %s."):format(cli.choices(train.schedulers)), d.scheduler)
  :convert(cli.choice("--scheduler", train.schedulers))
parser:option("--optimizer", ("Optimizer: %s."):format(cli.choices(train.optimizers)), d.optimizer)
  :convert(cli.choice("--optimizer", train.optimizers))
parser:option("--weight-decay", "Weight decay.", tostring(d.weight_decay)):convert(cli.number("--weight-decay"))
parser:option("--loss", ("Loss: %s."):format(cli.choices(train.losses)), d.loss)
  :convert(cli.choice("--loss", train.losses))
parser:option("--positive-fraction",
              "Share of pneumothorax images per epoch: P, or START,END lowered linearly over the epochs "
              .. "(e.g. 0.8,0.4). Default: as in the data.")
parser:option("--val-fraction", "Share of image ids held out for validation.", tostring(d.val_fraction))
  :convert(cli.number("--val-fraction"))
parser:flag("--no-val", "Train on every image; no validation, best.safetensors = the final weights.")
parser:flag("--no-augment", "Train without augmentation.")
parser:option("--pretrained", "ImageNet-pretrained ResNet weights (torchvision or timm keys) for the encoder: "
              .. "a safetensors file or a PyTorch checkpoint (torch.save's .pth)."):convert(cli.file("--pretrained"))
parser:flag("--resume", "Continue from OUT/checkpoint.safetensors (starts fresh, and says so, when there is none).")
parser:option("--save-every", "Also write the checkpoint every N steps (0: only at epoch ends).",
              tostring(d.save_every)):convert(cli.integer("--save-every"))
parser:option("--seed", "Seed for weights, sampling and augmentation.", tostring(d.seed))
  :convert(cli.integer("--seed"))
parser:option("--threads", "Threads for the kernels (default: every core; under --dist the cores of each machine "
              .. "shared among its processes)."):convert(cli.integer("--threads", {min = 1}))
parser:option("--workers", "Data worker processes (0: load in the training process).", tostring(d.workers))
  :convert(cli.integer("--workers", {min = 0}))
parser:option("--conv-algorithm", "How convolutions compute: auto (the training forward summed in double, "
              .. "Winograd elsewhere), winograd (faster, gradients further from exact), winograd2, direct or double.",
              "auto"):convert(cli.choice("--conv-algorithm", lpnx.conv_algorithms))
parser:option("--clip", "Clip the global gradient norm to this value."):convert(cli.number("--clip"))
parser:flag("--skip-nonfinite", "Skip a batch whose loss is NaN or infinite instead of stopping.")
parser:option("--max-steps", "Stop (with a checkpoint) after this many steps in all.")
  :convert(cli.integer("--max-steps"))
parser:flag("--dist", "One process of a data-parallel run started by mpirun: each process trains on its share of "
            .. "every global batch of --batch images; gradients are summed over the processes; rank 0 writes.")
parser:flag("--sync-bn", "With --dist: BatchNorm statistics over the whole global batch, so that N processes "
            .. "train exactly as one process would.")

local args = cli.parse(parser, fail)
if args.sync_bn and not args.dist then fail(2, "--sync-bn needs --dist") end
if args.dist and not dist.available then
  fail(2, "--dist needs lpnx built with MPI (apt-get install openmpi-bin libopenmpi-dev, then make)")
end
lpnx.set_conv_algorithm(args.conv_algorithm)
if args.crop and args.crop > args.size then
  fail(2, ("--crop %d is larger than --size %d"):format(args.crop, args.size))
end
local csv = args.csv or (args.data .. "/train-rle.csv")
if fs.stat(csv) ~= "file" and fs.stat(args.data .. "/images") ~= "dir" then
  fail(2, ("no mask CSV at %s (give --csv)"):format(csv))
end

local ok, result = pcall(train.run, {
  data = args.data, csv = fs.stat(csv) == "file" and csv or nil, out = args.out, size = args.size,
  crop = args.crop, crop_positive = args.crop and args.crop_positive or nil,
  encoder = args.encoder, encoder_width = args.encoder_width, decoder_channels = args.decoder_channels,
  epochs = args.epochs, batch = args.batch, lr = args.lr, scheduler = args.scheduler, optimizer = args.optimizer,
  weight_decay = args.weight_decay, loss = args.loss, positive_fraction = args.positive_fraction,
  val_fraction = args.val_fraction, no_val = args.no_val, augment = not args.no_augment,
  pretrained = args.pretrained, resume = args.resume, save_every = args.save_every, seed = args.seed,
  threads = args.threads, workers = args.workers, clip = args.clip, skip_nonfinite = args.skip_nonfinite,
  max_steps = args.max_steps, dist = args.dist, sync_bn = args.sync_bn,
})
if not ok then
  if args.dist and dist.active() then
    -- one process's error ends the whole job at once instead of leaving the others waiting in a collective
    io.stderr:write(("%s: rank %d: %s\n"):format(PROGRAM, dist.rank(), tostring(result)))
    io.stderr:flush()
    dist.abort(2)
  end
  fail(2, tostring(result))
end
if args.dist then
  dist.finalize()
  if result.rank ~= 0 then os.exit(0) end
end
if result.interrupted then
  print(("stopped after step %d; the checkpoint in %s resumes it (--resume)"):format(result.steps, args.out))
  os.exit(0)
end
print(("trained %d epochs (%d steps) in %s; best val dice %s; weights in %s/model.safetensors"):format(
  result.epochs, result.steps, progress.format_duration(result.seconds),
  result.best_dice and ("%.4f"):format(result.best_dice) or "-", args.out))
