-- lpnx.train: the training recipe. A run folder holds
--   model.safetensors       final weights (smp Unet keys + model metadata)
--   best.safetensors        the weights with the best validation Dice
--   checkpoint.safetensors  model + optimizer + schedule + epoch + step + RNG,
--                           written atomically; run{resume = true} continues
--                           from it exactly
--   log.csv                 step, epoch, loss, lr, val_dice, val_iou, seconds
--   curves.png              loss and validation Dice (with gnuplot)
--
-- train.run reads as four parts: setup (options, processes, data, model,
-- optimizer, schedule, loss, resume), step (one optimizer step on one
-- batch), end_epoch (validate, keep the best weights, checkpoint) and
-- finish (final weights, curves, the summary).
--
-- With dist = true the run is one process of a data-parallel job started
-- by mpirun (lpnx.dist): every process plans the same global batches of
-- `batch` images and trains on its share of each; the losses are those of
-- the whole global batch and the gradients are summed over the processes
-- before each optimizer step, so every process takes the same step.
-- sync_bn = true makes BatchNorm use the statistics of the whole global
-- batch, which makes N processes equal one process step for step (to
-- float rounding). Validation is split over the processes; only rank 0
-- writes files and prints. A plain run is a group of one process
-- (lpnx.dist.single()): both run the same code.
--
-- The losses, optimizers and schedules are picked by name from
-- train.losses, train.optimizers and train.schedulers.
local lpnx = require "lpnx"
local cjson = require "cjson"
local data = require "lpnx.data"
local dist = require "lpnx.dist"
local fs = require "lpnx.fs"
local metrics = require "lpnx.metrics"
local models = require "lpnx.models"
local nn = require "lpnx.nn"
local optim = require "lpnx.optim"
local progress = require "lpnx.progress"
local transforms = require "lpnx.transforms"
local util = require "lpnx.util"

local train = {}

local CHECKPOINT_FORMAT = "1"

---------------------------------------------------------------------------
-- helpers

local function say(opts, fmt, ...)
  local line = fmt:format(...)
  if opts.log_fn then opts.log_fn(line) else io.stderr:write(line, "\n") end
end

-- Settings that must agree for a checkpoint to resume this run.
local RESUME_KEYS = {"encoder", "encoder_width", "decoder_channels", "size", "batch", "lr", "loss", "seed",
                     "epochs", "optimizer", "weight_decay", "positive_fraction", "val_fraction", "in_channels", "crop",
                     "crop_positive"}

local function config_of(opts)
  local c = {}
  for _, k in ipairs(RESUME_KEYS) do
    local v = opts[k]
    if type(v) == "table" then v = table.concat(v, ",") end
    c[k] = v ~= nil and tostring(v) or ""
  end
  return c
end

-- positive_fraction "0.8,0.4": linear from the first value at epoch 1 to
-- the second at the last epoch; one value: constant; nil/"": natural.
local function fraction_schedule(spec, epochs)
  if spec == nil or spec == "" then return nil end
  local a, b = tostring(spec):match("^%s*([%d.]+)%s*,%s*([%d.]+)%s*$")
  a, b = tonumber(a), tonumber(b)
  if not a then
    a = tonumber(spec)
    if not a then error(("positive fraction must be P or START,END, got '%s'"):format(tostring(spec)), 0) end
    b = a
  end
  for _, v in ipairs {a, b} do
    if v < 0 or v > 1 then error(("positive fraction %g is not in [0, 1]"):format(v), 0) end
  end
  return function(epoch)
    if epochs <= 1 then return a end
    return a + (b - a) * (epoch - 1) / (epochs - 1)
  end
end

---------------------------------------------------------------------------
-- what the losses, optimizers and schedules are picked from, by name

-- name -> {make = function() -> loss, about = text}
train.losses = nn.losses
-- name -> optimizer class: Class(params, grads, {lr =, weight_decay =})
train.optimizers = optim.by_name
-- name -> {make = function(opt, {steps =, lr =}) -> scheduler stepped after every optimizer step, about = text}
train.schedulers = {
  cosine = {
    about = "annealed to 1% of the initial rate over the run",
    make = function(opt, plan) return optim.CosineAnnealingLR(opt, {T_max = plan.steps, eta_min = plan.lr * 0.01}) end,
  },
}

-- Raises unless names knows name; the error lists the names there are.
local function check_name(kind, names, name)
  if names[name] == nil then
    error(("unknown %s '%s' (%s)"):format(kind, tostring(name), util.either(util.names_of(names))), 0)
  end
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

-- The model metadata saved with every weights file.
local function model_meta(opts, extra)
  local meta = {input_size = opts.size}
  for k, v in pairs(extra or {}) do meta[k] = v end
  return meta
end

---------------------------------------------------------------------------
-- the log

-- One row per step (the loss of that step's batch) and one more at each
-- epoch end with the validation scores.
local LOG_HEADER = "step,epoch,loss,lr,val_dice,val_iou,seconds"

-- Keeps the rows up to step (a resumed run rewrites what came after its
-- checkpoint), then appends.
local function open_log(path, keep_until)
  local rows = {}
  if keep_until then
    local f = io.open(path, "r")
    if f then
      for line in f:lines() do
        local step = tonumber(line:match("^(%d+),"))
        if step and step <= keep_until then rows[#rows + 1] = line end
      end
      f:close()
    end
  end
  local f = assert(io.open(path, "w"))
  f:write(LOG_HEADER, "\n")
  for _, r in ipairs(rows) do f:write(r, "\n") end
  f:flush()
  return f
end

local function log_row(f, step, epoch, loss, lr, vd, vi, seconds)
  local function num(v, fmt) return v and (fmt):format(v) or "" end
  f:write(("%d,%d,%s,%s,%s,%s,%s\n"):format(step, epoch, num(loss, "%.6f"), num(lr, "%.6g"), num(vd, "%.6f"),
                                             num(vi, "%.6f"), num(seconds, "%.2f")))
  f:flush()
end

-- The gnuplot script of curves.png: the loss per step, and beside it
-- (CURVES_VALIDATION) the validation Dice and IoU of each epoch. $RUN is
-- the run folder, $SIZE the picture's size in pixels, $MULTIPLOT the
-- layout line of two plots.
local CURVES = [[
set terminal pngcairo size $SIZE font ',10'
set output '$RUN/curves.png'
set datafile separator ','
set datafile missing ''
$MULTIPLOT
set title 'training loss'
set xlabel 'step'
plot '$RUN/log.csv' using 1:3 with lines lw 1 lc rgb '#b0b0d0' title 'loss per step', \
     '' using 1:3 smooth bezier lw 2 lc rgb '#3050a0' title 'smoothed'
]]
local CURVES_VALIDATION = [[
set title 'validation'
set key bottom right
set yrange [0:1]
plot '$RUN/log.csv' using 1:($5 == $5 ? $5 : 1/0) with linespoints pt 7 ps 0.6 title 'Dice', \
     '' using 1:($6 == $6 ? $6 : 1/0) with linespoints pt 5 ps 0.6 title 'IoU'
unset multiplot
]]

local installed = util.installed

-- curves.png from log.csv with gnuplot, when it is installed: the loss per
-- step, and the validation Dice and IoU when the run has them.
function train.plot(run)
  if not installed("gnuplot") then
    return false, "gnuplot is not installed: no curves.png (log.csv has the numbers)"
  end
  local with_val = false
  for line in io.lines(run .. "/log.csv") do
    if line:match("^%d+,%d+,[^,]*,[^,]*,[%d.]+,") then with_val = true break end
  end
  local script = (CURVES .. (with_val and CURVES_VALIDATION or "")):gsub("%$(%u+)", {
    RUN = run, SIZE = with_val and "1000,420" or "560,420", MULTIPLOT = with_val and "set multiplot layout 1,2" or ""})
  if not util.gnuplot(script) then return false, "gnuplot could not draw curves.png (log.csv has the numbers)" end
  return true
end

---------------------------------------------------------------------------
-- validation

-- Mean Dice and IoU over the validation images (SIIM rule) at threshold 0.5,
-- the mean Dice over positive images, and the image count. loader may be
-- nil (no images here); sum, when given, adds a list of numbers up over
-- the processes of a data-parallel run (each validates its share).
function train.validate(model, loader, sum)
  model:eval()
  -- dice, iou, images, dice of positives, positives
  local t = {0, 0, 0, 0, 0}
  for _, batch in (loader and loader:iter(1) or function() end) do
    local pred = model:forward(batch.images):sigmoid():gt(0.5)
    local d = metrics.dice_per_image(pred, batch.masks)
    local i = metrics.iou_per_image(pred, batch.masks)
    local truth_area = batch.masks:view(batch.masks:size(1), -1):sum(2)
    for k = 1, #d do
      t[1], t[2], t[3] = t[1] + d[k], t[2] + i[k], t[3] + 1
      if truth_area[k] > 0 then t[4], t[5] = t[4] + d[k], t[5] + 1 end
    end
  end
  model:train()
  if sum then t = sum(t) end
  local n, npos = math.tointeger(t[3]) or t[3], t[5]
  if n == 0 then return nil, nil, nil, 0 end
  return t[1] / n, t[2] / n, npos > 0 and t[4] / npos or nil, n
end

---------------------------------------------------------------------------
-- checkpoints

local function save_checkpoint(path, state)
  local tensors = {}
  for k, v in pairs(state.model:state_dict()) do tensors["model." .. k] = v end
  local opt_tensors, opt_meta = state.opt:state_dict("optim.")
  for k, v in pairs(opt_tensors) do tensors[k] = v end
  local meta = {
    ["lpnx.checkpoint"] = CHECKPOINT_FORMAT,
    epoch = state.epoch, batch = state.batch, step = state.step,
    best_dice = state.best_dice or "", seconds = ("%.3f"):format(state.seconds),
    running = cjson.encode(state.running),
    rng = hex(lpnx.get_rng_state()),
    scheduler = cjson.encode(state.sched:state_dict()),
    config = cjson.encode(state.config),
    optimizer = cjson.encode(opt_meta),
  }
  lpnx.save(path, tensors, meta)
end

local function load_checkpoint(path, state)
  local tensors, meta = lpnx.load(path)
  if meta["lpnx.checkpoint"] ~= CHECKPOINT_FORMAT then
    error(("%s is not an lpnx training checkpoint"):format(path), 0)
  end
  local saved = cjson.decode(meta.config or "{}")
  local diffs = {}
  for _, k in ipairs(RESUME_KEYS) do
    if (saved[k] or "") ~= state.config[k] then
      diffs[#diffs + 1] = ("%s: checkpoint %s, now %s"):format(k, tostring(saved[k]), state.config[k])
    end
  end
  if #diffs > 0 then
    error(("%s was made with other settings; resume with the same ones or use another --out:\n  %s")
      :format(path, table.concat(diffs, "\n  ")), 0)
  end
  local sd = {}
  for k, v in pairs(tensors) do
    local key = k:match("^model%.(.*)$")
    if key then sd[key] = v end
  end
  state.model:load_state_dict(sd)
  state.opt:load_state_dict(tensors, cjson.decode(meta.optimizer), "optim.")
  state.sched:load_state_dict(cjson.decode(meta.scheduler))
  lpnx.set_rng_state(unhex(meta.rng))
  state.epoch = math.tointeger(tonumber(meta.epoch))
  state.batch = math.tointeger(tonumber(meta.batch))
  state.step = math.tointeger(tonumber(meta.step))
  state.best_dice = tonumber(meta.best_dice)
  state.seconds = tonumber(meta.seconds) or 0
  state.running = cjson.decode(meta.running or "null") or state.running
end

---------------------------------------------------------------------------
-- the run

train.defaults = {
  size = 256, encoder = "resnet34", encoder_width = 64, decoder_channels = {256, 128, 64, 32, 16},
  epochs = 10, batch = 8, lr = 3e-4, loss = "combo", optimizer = "adam", scheduler = "cosine", weight_decay = 0,
  seed = 1, val_fraction = 0.1, workers = 1, save_every = 0, augment = true, in_channels = 3,
}

-- The options with their defaults filled in (in opts itself), checked as
-- far as they can be before any work.
local function settle(opts)
  for k, v in pairs(train.defaults) do if opts[k] == nil then opts[k] = v end end
  if type(opts.decoder_channels) == "string" then
    local list = {}
    for c in opts.decoder_channels:gmatch("%d+") do list[#list + 1] = math.tointeger(tonumber(c)) end
    opts.decoder_channels = list
  end
  if opts.sync_bn and not opts.dist then error("sync_bn needs dist (a data-parallel run under mpirun)", 0) end
  if opts.crop ~= nil and not (math.tointeger(opts.crop) and opts.crop >= 32 and opts.crop % 32 == 0
                               and opts.crop <= opts.size) then
    error(("crop must be a multiple of 32 from 32 to the size %d, got %s"):format(opts.size, tostring(opts.crop)), 0)
  end
  if opts.crop_positive ~= nil and not (type(opts.crop_positive) == "number" and opts.crop_positive >= 0
                                        and opts.crop_positive <= 1) then
    error(("crop_positive must be in [0, 1], got %s"):format(tostring(opts.crop_positive)), 0)
  end
  check_name("loss", train.losses, opts.loss)
  check_name("optimizer", train.optimizers, opts.optimizer)
  check_name("scheduler", train.schedulers, opts.scheduler)
  return opts
end

-- The processes of the run: those of mpirun with dist, else this one.
-- Sets the thread count: by default the machine's cores shared among the
-- processes on it.
local function join(opts)
  local group = opts.dist and dist.group() or dist.single()
  lpnx.set_num_threads(opts.threads or math.max(1, lpnx.get_num_threads() // group:local_size()))
  return group
end

-- opts for a process other than rank 0: it neither prints nor draws a bar.
local function quieted(opts)
  local quiet = {}
  for k, v in pairs(opts) do quiet[k] = v end
  quiet.log_fn, quiet.progress = function() end, false
  return quiet
end

-- Raises when the processes cannot share a batch; says when they share it
-- in a way that matches one process only to rounding.
local function check_sharing(opts, n)
  if n == 1 then return end
  if opts.sync_bn and (opts.batch % n ~= 0 or n & (n - 1) ~= 0) then
    say(opts, "note: %d processes share each batch of %d%s: the run matches a 1-process run to rounding only, "
        .. "not bit for bit (that takes 2 processes and an even batch)", n, opts.batch,
        opts.batch % n ~= 0 and " unevenly" or "")
  end
  if opts.batch < n then
    error(("a global batch of %d images cannot be shared by %d processes: use --batch %d or more")
          :format(opts.batch, n, n), 0)
  end
end

-- The training loader (this process's share of every batch) and the
-- validation loader (its share of the validation images, nil for none)
-- over opts.data. The data workers start now, before the model exists,
-- so that they stay small.
local function open_data(run)
  local opts, group = run.opts, run.group
  local ds = data.siim{root = opts.data, csv = opts.csv or (opts.data .. "/train-rle.csv"), size = opts.size}
  local train_ids, val_ids = ds.ids, {}
  if not opts.no_val then train_ids, val_ids = data.split(ds.ids, {val_fraction = opts.val_fraction}) end
  if #train_ids < 2 then error(("only %d training images: need at least 2"):format(#train_ids), 0) end
  local norm = {mean = models.imagenet_mean, std = models.imagenet_std, in_channels = opts.in_channels}
  local crop = opts.crop and opts.crop < opts.size and opts.crop or nil
  local augment
  if opts.augment then
    augment = transforms.siim_train(opts.size, {crop = crop, crop_positive = opts.crop_positive})
  elseif crop then
    augment = transforms.random_crop {size = crop, positive = opts.crop_positive}
  end
  check_sharing(opts, group:size())
  run.loader = data.loader(ds:subset(train_ids), {
    batch = opts.batch, shuffle = true, transform = augment, seed = opts.seed, workers = opts.workers,
    drop_last = #train_ids > opts.batch, meta = norm,
    positive_fraction = fraction_schedule(opts.positive_fraction, opts.epochs),
    shard = {rank = group:rank(), size = group:size()},
  })
  run.validating = #val_ids > 0
  local my_val = group:shard(val_ids)
  run.val_loader = #my_val > 0 and data.loader(ds:subset(my_val), {
    batch = opts.batch, shuffle = false, seed = opts.seed, workers = 0, meta = norm}) or nil
  run.loader:start()
end

-- Puts the encoder weights of opts.pretrained into model.
local function load_pretrained(model, opts)
  local sd = lpnx.load_weights(opts.pretrained)   -- safetensors or a PyTorch checkpoint
  local enc = {}
  for k, v in pairs(sd) do
    local key = k:match("^encoder%.(.*)$") or k:match("^model%.encoder%.(.*)$") or k
    enc[key] = v
  end
  local report = model.encoder:load_state_dict(enc, {strict = false})
  if #report.missing > 0 or #report.mismatched > 0 then
    error(("%s does not fit the %s encoder: %d missing, %d wrongly shaped keys (first: %s)"):format(
      opts.pretrained, opts.encoder, #report.missing, #report.mismatched,
      report.missing[1] or report.mismatched[1]), 0)
  end
  say(opts, "pretrained encoder weights from %s (%d keys ignored)", opts.pretrained, #report.unexpected)
end

-- The U-Net from the seed (and pretrained encoder weights), rank 0's in
-- every process.
local function build_model(opts, group)
  lpnx.manual_seed(opts.seed)
  local model = models.unet{encoder = opts.encoder, encoder_width = opts.encoder_width,
                            decoder_channels = opts.decoder_channels, in_channels = opts.in_channels}
  if opts.pretrained then load_pretrained(model, opts) end
  model.encoder.conv1.need_input_grad = false
  model:train()
  group:broadcast_module(model)
  if opts.sync_bn then group:sync_batchnorm(model) end
  -- the convolutions group the images of each shared batch as one process would the whole batch
  local n = group:size()
  if n & (n - 1) == 0 then dist.share_batch(model, n) end
  return model
end

-- Continues from the checkpoint in the run folder when there is one.
local function resume(run)
  local opts, group, path = run.opts, run.group, run.checkpoint_path
  local found = fs.stat(path) == "file"
  local seen = math.tointeger(group:sum({found and 1 or 0})[1])
  if seen > 0 and seen < group:size() then
    error(("%s is visible to %d of %d processes: resuming needs --out on a file system every process "
           .. "shares"):format(path, seen, group:size()), 0)
  end
  if found then
    load_checkpoint(path, run.state)
    run.resumed = true
    say(opts, "resuming from %s: epoch %d, batch %d, step %d", path, run.state.epoch, run.state.batch,
        run.state.step)
  else
    say(opts, "no checkpoint in %s: starting fresh", opts.out)
  end
end

-- Everything a run needs, from its options: the table the other parts of
-- the recipe share.
local function setup(opts)
  opts = settle(opts)
  local group = join(opts)
  if group:is_root() then fs.mkdir_p(opts.out) else opts = quieted(opts) end
  -- Ctrl-C and TERM from here on end the run with a checkpoint at the next
  -- step boundary, not mid-write
  lpnx.sys.catch_signal("INT")
  lpnx.sys.catch_signal("TERM")
  local run = {opts = opts, group = group, checkpoint_path = opts.out .. "/checkpoint.safetensors",
               resumed = false, stopped = false, weights_meta = {}}
  open_data(run)
  run.model = build_model(opts, group)
  local params, grads = run.model:parameters()
  run.grads = grads
  run.opt = train.optimizers[opts.optimizer](params, grads, {lr = opts.lr, weight_decay = opts.weight_decay})
  run.per_epoch = run.loader:batches_per_epoch(1)
  run.sched = train.schedulers[opts.scheduler].make(run.opt, {steps = opts.epochs * run.per_epoch, lr = opts.lr})
  run.criterion = train.losses[opts.loss].make()
  run.state = {model = run.model, opt = run.opt, sched = run.sched, epoch = 1, batch = 0, step = 0,
               best_dice = nil, seconds = 0, config = config_of(opts),
               running = {loss = 0, dice = 0, seen = 0}} -- this epoch's running means, for the log and bar
  if opts.resume then resume(run) end
  run.log = group:is_root() and open_log(opts.out .. "/log.csv", run.resumed and run.state.step or nil) or nil
  run.t_start = lpnx.sys.now() - run.state.seconds
  return run
end

-- Rank 0 writes the weights (name: a file in the run folder).
local function save_weights(run, name)
  if run.group:is_root() then
    models.save(run.opts.out .. "/" .. name, run.model, model_meta(run.opts, run.weights_meta))
  end
end

local function checkpoint(run)
  if run.group:is_root() then save_checkpoint(run.checkpoint_path, run.state) end
end

local function write_log(run, ...)
  if run.log then log_row(run.log, ...) end
end

-- One optimizer step on one batch; returns the batch's loss. A loss that
-- is not finite stops the run before it reaches the weights, or with
-- skip_nonfinite skips the batch.
local function step(run, batch, epoch, b)
  local opts, state, model, criterion = run.opts, run.state, run.model, run.criterion
  run.opt:zero_grad()
  run.group:distribute(criterion, batch.images:size(1) / batch.total)
  local logits = model:forward(batch.images)
  local loss = criterion:forward(logits, batch.masks)
  if loss ~= loss or loss == math.huge or loss == -math.huge then
    if opts.skip_nonfinite then
      say(opts, "step %d: loss is %s; batch skipped", state.step + 1, tostring(loss))
      return loss
    end
    run.loader:close()
    error(("step %d (epoch %d, batch %d): the loss is %s; stopping before it reaches the weights "
           .. "(the last checkpoint is intact; --skip-nonfinite skips such batches)")
          :format(state.step + 1, epoch, b, tostring(loss)), 0)
  end
  model:backward(batch.images, criterion:backward(logits, batch.masks))
  run.group:sum_tensors(run.grads)
  if opts.clip then optim.clip_grad_norm(run.grads, opts.clip) end
  run.opt:step()
  run.sched:step()
  state.step = state.step + 1
  -- the Dice of the whole global batch: the mean of every process's mean over its images
  local dice = run.group:mean(metrics.dice(logits:sigmoid():gt(0.5), batch.masks), batch.images:size(1))
  local r = state.running
  r.loss = (r.seen * r.loss + loss) / (r.seen + 1)
  r.dice = (r.seen * r.dice + dice) / (r.seen + 1)
  r.seen = r.seen + 1
  return loss
end

-- Whether to stop after this step: a signal (in any process, so that
-- every process stops at the same step) or max_steps.
local function should_stop(run)
  local signalled = lpnx.sys.signal_pending("INT", true) or lpnx.sys.signal_pending("TERM", true)
  if run.group:sum({signalled and 1 or 0})[1] > 0 then return true end
  return run.opts.max_steps ~= nil and run.state.step >= run.opts.max_steps
end

-- The steps of one epoch, from where a resumed run left off, with the log
-- and the progress bar. A run that stops early writes a checkpoint and
-- sets run.stopped.
local function train_epoch(run, epoch)
  local opts, state = run.opts, run.state
  state.epoch = epoch
  local start = state.batch + 1
  local bar = opts.progress ~= false and progress.new{
    total = run.per_epoch, label = ("epoch %d/%d"):format(epoch, opts.epochs), unit = "batch",
    initial = start - 1} or nil -- a resumed epoch's rate counts only the batches done now
  local stats = state.running
  if start == 1 then stats.loss, stats.dice, stats.seen = 0, 0, 0 end
  for b, batch in run.loader:iter(epoch, {start = start}) do
    local loss = step(run, batch, epoch, b)
    state.batch = b
    state.seconds = lpnx.sys.now() - run.t_start
    write_log(run, state.step, epoch, loss, run.opt.lr, nil, nil, state.seconds)
    if bar then bar:update(b, {loss = stats.loss, dice = stats.dice}) end
    if opts.save_every > 0 and state.step % opts.save_every == 0 then checkpoint(run) end
    if should_stop(run) then
      run.stopped = true
      break
    end
  end
  if bar then bar:finish({loss = stats.loss, dice = stats.dice}) end
  if run.stopped then checkpoint(run) end
end

-- After an epoch: validate, keep the best weights, checkpoint.
local function end_epoch(run, epoch)
  local opts, state = run.opts, run.state
  state.epoch, state.batch = epoch + 1, 0
  -- without sync_bn each process has its own running statistics: take rank 0's
  if not opts.sync_bn then run.group:broadcast_buffers(run.model) end
  if run.validating then
    local vd, vi, vp, n = train.validate(run.model, run.val_loader, run.group:summer())
    run.val_dice, run.val_iou = vd, vi
    say(opts, "epoch %d/%d: val dice %.4f iou %.4f (positives %s) on %d images", epoch, opts.epochs, vd, vi,
        vp and ("%.4f"):format(vp) or "-", n)
    write_log(run, state.step, epoch, nil, run.opt.lr, vd, vi, state.seconds)
    if not state.best_dice or vd > state.best_dice then
      state.best_dice = vd
      run.weights_meta.val_dice = ("%.6f"):format(vd)
      save_weights(run, "best.safetensors")
    end
  end
  checkpoint(run)
end

-- The final weights (unless the run stopped early), the curves, and the
-- summary train.run returns.
local function finish(run)
  local opts, state = run.opts, run.state
  if run.log then run.log:close() end
  run.loader:close()
  if not opts.sync_bn then run.group:broadcast_buffers(run.model) end
  lpnx.sys.default_signal("INT")
  lpnx.sys.default_signal("TERM")
  if not run.stopped then
    save_weights(run, "model.safetensors")
    if not run.validating then save_weights(run, "best.safetensors") end
  end
  if run.group:is_root() then
    local ok, why = train.plot(opts.out)
    if not ok then say(opts, "%s", why) end
  end
  return {epochs = opts.epochs, steps = state.step, best_dice = state.best_dice, val_dice = run.val_dice,
          val_iou = run.val_iou, seconds = lpnx.sys.now() - run.t_start, resumed = run.resumed,
          interrupted = run.stopped, model = run.model, rank = run.group:rank(), size = run.group:size()}
end

-- run{data = DIR, csv = FILE, out = RUN, ...train.defaults..., pretrained = FILE,
--     resume = bool, no_val = bool, threads = n, max_steps = n (stop early, for tests),
--     dist = bool, sync_bn = bool, clip = max_norm, skip_nonfinite = bool,
--     log_fn = function(line), progress = bool}
-- Returns a summary {epochs, steps, best_dice, val_dice, val_iou, seconds, resumed, interrupted,
-- model, rank, size}.
function train.run(opts)
  local run = setup(opts)
  for epoch = run.state.epoch, run.opts.epochs do
    train_epoch(run, epoch)
    if run.stopped then break end
    end_epoch(run, epoch)
  end
  return finish(run)
end

return train
