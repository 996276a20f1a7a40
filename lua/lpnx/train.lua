-- lpnx.train: the training recipe. A run folder holds
--   model.safetensors       final weights (smp Unet keys + model metadata)
--   best.safetensors        the weights with the best validation Dice
--   checkpoint.safetensors  model + optimizer + schedule + epoch + step + RNG,
--                           written atomically; run{resume = true} continues
--                           from it exactly
--   log.csv                 step, epoch, loss, lr, val_dice, val_iou, seconds
--   curves.png              loss and validation Dice (with gnuplot)
--
-- With dist = true the run is one process of a data-parallel job started
-- by mpirun (lpnx.dist): every process plans the same global batches of
-- `batch` images and trains on its share of each; the losses are those of
-- the whole global batch and the gradients are summed over the processes
-- before each optimizer step, so every process takes the same step.
-- sync_bn = true makes BatchNorm use the statistics of the whole global
-- batch, which makes N processes equal one process step for step (to
-- float rounding). Validation is split over the processes; only rank 0
-- writes files and prints.
local lpnx = require "lpnx"
local cjson = require "cjson"

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
                     "epochs", "optimizer", "weight_decay", "positive_fraction", "val_fraction", "in_channels"}

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

local function make_loss(name)
  local nn = lpnx.nn
  if name == "combo" then return nn.ComboLoss{bce = 1, dice = 1} end
  if name == "bce" then return nn.BCEWithLogitsLoss{} end
  if name == "dice" then return nn.DiceLoss{} end
  if name == "focal" then return nn.FocalLoss{gamma = 2} end
  if name == "focal_dice" then return nn.ComboLoss{bce = 0, dice = 1, focal = 1} end
  error(("unknown loss '%s' (combo, bce, dice, focal or focal_dice)"):format(tostring(name)), 0)
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

-- curves.png from log.csv with gnuplot, when it is installed: the loss per
-- step, and the validation Dice and IoU when the run has them.
function train.plot(run)
  local has = io.popen("command -v gnuplot 2>/dev/null"):read("a")
  if has == "" then return false, "gnuplot is not installed: no curves.png (log.csv has the numbers)" end
  local with_val = false
  for line in io.lines(run .. "/log.csv") do
    if line:match("^%d+,%d+,[^,]*,[^,]*,[%d.]+,") then with_val = true break end
  end
  local script = {
    "set terminal pngcairo size " .. (with_val and "1000,420" or "560,420") .. " font ',10'",
    ("set output '%s/curves.png'"):format(run),
    "set datafile separator ','",
    "set datafile missing ''",
    with_val and "set multiplot layout 1,2" or "",
    "set title 'training loss'",
    "set xlabel 'step'",
    ("plot '%s/log.csv' using 1:3 with lines lw 1 lc rgb '#b0b0d0' title 'loss per step', \\"):format(run),
    "     '' using 1:3 smooth bezier lw 2 lc rgb '#3050a0' title 'smoothed'",
  }
  if with_val then
    for _, line in ipairs {
      "set title 'validation'", "set key bottom right", "set yrange [0:1]",
      ("plot '%s/log.csv' using 1:($5 == $5 ? $5 : 1/0) with linespoints pt 7 ps 0.6 title 'Dice', \\"):format(run),
      "     '' using 1:($6 == $6 ? $6 : 1/0) with linespoints pt 5 ps 0.6 title 'IoU'",
      "unset multiplot",
    } do script[#script + 1] = line end
  end
  local p = io.popen("gnuplot >/dev/null 2>&1", "w")
  p:write(table.concat(script, "\n"), "\n")
  if not p:close() then return false, "gnuplot could not draw curves.png (log.csv has the numbers)" end
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
    local d = lpnx.metrics.dice_per_image(pred, batch.masks)
    local i = lpnx.metrics.iou_per_image(pred, batch.masks)
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
  epochs = 10, batch = 8, lr = 3e-4, loss = "combo", optimizer = "adam", weight_decay = 0,
  seed = 1, val_fraction = 0.1, workers = 1, save_every = 0, augment = true, in_channels = 3,
}

-- run{data = DIR, csv = FILE, out = RUN, ...train.defaults..., pretrained = FILE,
--     resume = bool, no_val = bool, threads = n, max_steps = n (stop early, for tests),
--     log_fn = function(line), progress = bool}
-- Returns a summary {epochs, steps, best_dice, val_dice, val_iou, seconds, resumed}.
function train.run(opts)
  for k, v in pairs(train.defaults) do if opts[k] == nil then opts[k] = v end end
  if type(opts.decoder_channels) == "string" then
    local list = {}
    for c in opts.decoder_channels:gmatch("%d+") do list[#list + 1] = math.tointeger(tonumber(c)) end
    opts.decoder_channels = list
  end
  -- data parallel: this process's rank among nproc; only rank 0 writes and talks
  local dist, rank, nproc = nil, 0, 1
  if opts.dist then
    dist = lpnx.dist
    rank, nproc = dist.init()
    -- the machine's cores shared among the processes on it
    opts.threads = opts.threads or math.max(1, lpnx.get_num_threads() // dist.local_size())
  elseif opts.sync_bn then
    error("sync_bn needs dist (a data-parallel run under mpirun)", 0)
  end
  local root = rank == 0
  if not root then
    local quiet = {}
    for k, v in pairs(opts) do quiet[k] = v end
    quiet.log_fn, quiet.progress = function() end, false
    opts = quiet
  end
  local sum = dist and dist.summer() or nil
  if opts.threads then lpnx.set_num_threads(opts.threads) end
  if root then lpnx.fs.mkdir_p(opts.out) end
  -- Ctrl-C and TERM from here on end the run with a checkpoint at the next
  -- step boundary, not mid-write
  lpnx.sys.catch_signal("INT")
  lpnx.sys.catch_signal("TERM")
  local run = opts.out
  local ckpt_path = run .. "/checkpoint.safetensors"

  -- data (the workers fork now, before the model exists, so they stay small)
  local ds = lpnx.data.siim{root = opts.data, csv = opts.csv or (opts.data .. "/train-rle.csv"), size = opts.size}
  local train_ids, val_ids = ds.ids, {}
  if not opts.no_val then train_ids, val_ids = lpnx.data.split(ds.ids, {val_fraction = opts.val_fraction}) end
  if #train_ids < 2 then error(("only %d training images: need at least 2"):format(#train_ids), 0) end
  local norm = {mean = lpnx.models.imagenet_mean, std = lpnx.models.imagenet_std, in_channels = opts.in_channels}
  local augment = opts.augment and lpnx.transforms.siim_train(opts.size) or nil
  if dist and opts.sync_bn and (opts.batch % nproc ~= 0 or nproc & (nproc - 1) ~= 0) then
    say(opts, "note: %d processes share each batch of %d%s: the run matches a 1-process run to rounding only, "
        .. "not bit for bit (that takes 2 processes and an even batch)", nproc, opts.batch,
        opts.batch % nproc ~= 0 and " unevenly" or "")
  end
  if dist and opts.batch < nproc then
    error(("a global batch of %d images cannot be shared by %d processes: use --batch %d or more")
          :format(opts.batch, nproc, nproc), 0)
  end
  local loader = lpnx.data.loader(ds:subset(train_ids), {
    batch = opts.batch, shuffle = true, transform = augment, seed = opts.seed, workers = opts.workers,
    drop_last = #train_ids > opts.batch, meta = norm,
    positive_fraction = fraction_schedule(opts.positive_fraction, opts.epochs),
    shard = dist and {rank = rank, size = nproc} or nil,
  })
  local validating = #val_ids > 0
  local my_val = dist and dist.shard(val_ids, rank, nproc) or val_ids
  local val_loader = #my_val > 0 and lpnx.data.loader(ds:subset(my_val), {
    batch = opts.batch, shuffle = false, seed = opts.seed, workers = 0, meta = norm}) or nil
  loader:start()

  -- model, optimizer, schedule, loss
  lpnx.manual_seed(opts.seed)
  local model = lpnx.models.unet{encoder = opts.encoder, encoder_width = opts.encoder_width,
                                 decoder_channels = opts.decoder_channels, in_channels = opts.in_channels}
  if opts.pretrained then
    local sd = lpnx.load(opts.pretrained)
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
  model.encoder.conv1.need_input_grad = false
  model:train()
  if dist then
    dist.broadcast_module(model, 0) -- every process starts from rank 0's weights
    if opts.sync_bn then dist.sync_batchnorm(model) end
    -- group the images of each shared batch as one process would the whole batch
    if nproc & (nproc - 1) == 0 then dist.share_batch(model, nproc) end
  end
  local params, grads = model:parameters()
  local Opt = opts.optimizer == "adamw" and lpnx.optim.AdamW or lpnx.optim.Adam
  if opts.optimizer ~= "adam" and opts.optimizer ~= "adamw" then
    error(("unknown optimizer '%s' (adam or adamw)"):format(tostring(opts.optimizer)), 0)
  end
  local opt = Opt(params, grads, {lr = opts.lr, weight_decay = opts.weight_decay})
  local per_epoch = loader:batches_per_epoch(1)
  local sched = lpnx.optim.CosineAnnealingLR(opt, {T_max = opts.epochs * per_epoch, eta_min = opts.lr * 0.01})
  local criterion = make_loss(opts.loss)

  local state = {model = model, opt = opt, sched = sched, epoch = 1, batch = 0, step = 0, best_dice = nil,
                 seconds = 0, config = config_of(opts),
                 running = {loss = 0, dice = 0, seen = 0}} -- this epoch's running means, for the log and bar
  local resumed = false
  if opts.resume then
    local found = lpnx.fs.stat(ckpt_path) == "file"
    if dist then
      local seen = math.tointeger(sum({found and 1 or 0})[1])
      if seen > 0 and seen < nproc then
        error(("%s is visible to %d of %d processes: resuming needs --out on a file system every process "
               .. "shares"):format(ckpt_path, seen, nproc), 0)
      end
    end
    if found then
      load_checkpoint(ckpt_path, state)
      resumed = true
      say(opts, "resuming from %s: epoch %d, batch %d, step %d", ckpt_path, state.epoch, state.batch, state.step)
    else
      say(opts, "no checkpoint in %s: starting fresh", run)
    end
  end
  local log = root and open_log(run .. "/log.csv", resumed and state.step or nil) or nil
  local meta_extra = {}
  local function save_weights(path)
    if root then lpnx.models.save(path, model, model_meta(opts, meta_extra)) end
  end
  local function checkpoint()
    if root then save_checkpoint(ckpt_path, state) end
  end
  local function write_log(...)
    if log then log_row(log, ...) end
  end

  local t_start = lpnx.sys.now() - state.seconds
  local last_val_dice, last_val_iou
  local interrupted = false
  for epoch = state.epoch, opts.epochs do
    state.epoch = epoch
    local start = state.batch + 1
    local bar = opts.progress ~= false and lpnx.progress.new{
      total = per_epoch, label = ("epoch %d/%d"):format(epoch, opts.epochs), unit = "batch",
      initial = start - 1} or nil -- a resumed epoch's rate counts only the batches done now
    local run_stats = state.running
    if start == 1 then run_stats.loss, run_stats.dice, run_stats.seen = 0, 0, 0 end
    for b, batch in loader:iter(epoch, {start = start}) do
      opt:zero_grad()
      if dist then criterion:distribute(sum, batch.images:size(1) / batch.total) end
      local logits = model:forward(batch.images)
      local loss = criterion:forward(logits, batch.masks)
      if loss ~= loss or loss == math.huge or loss == -math.huge then
        if opts.skip_nonfinite then
          say(opts, "step %d: loss is %s; batch skipped", state.step + 1, tostring(loss))
          goto continue
        end
        loader:close()
        error(("step %d (epoch %d, batch %d): the loss is %s; stopping before it reaches the weights "
               .. "(the last checkpoint is intact; --skip-nonfinite skips such batches)")
              :format(state.step + 1, epoch, b, tostring(loss)), 0)
      end
      model:backward(batch.images, criterion:backward(logits, batch.masks))
      if dist then dist.allreduce_list(grads, "sum") end
      if opts.clip then lpnx.optim.clip_grad_norm(grads, opts.clip) end
      opt:step()
      sched:step()
      state.step = state.step + 1
      do
        local d = lpnx.metrics.dice(logits:sigmoid():gt(0.5), batch.masks) -- mean over this batch's images
        if dist then -- over the whole global batch
          local n = batch.images:size(1)
          local t = sum({d * n, n})
          d = t[1] / t[2]
        end
        local r = run_stats
        r.loss = (r.seen * r.loss + loss) / (r.seen + 1)
        r.dice = (r.seen * r.dice + d) / (r.seen + 1)
        r.seen = r.seen + 1
      end
      ::continue::
      state.batch = b
      state.seconds = lpnx.sys.now() - t_start
      write_log(state.step, epoch, loss, opt.lr, nil, nil, state.seconds)
      if bar then bar:update(b, {loss = run_stats.loss, dice = run_stats.dice}) end
      if opts.save_every > 0 and state.step % opts.save_every == 0 then checkpoint() end
      local stop = lpnx.sys.signal_pending("INT", true) or lpnx.sys.signal_pending("TERM", true)
      if dist then stop = sum({stop and 1 or 0})[1] > 0 end -- every process stops at the same step
      if stop then
        interrupted = true
        break
      end
      if opts.max_steps and state.step >= opts.max_steps then
        interrupted = true
        break
      end
    end
    if bar then bar:finish({loss = run_stats.loss, dice = run_stats.dice}) end
    if interrupted then
      checkpoint()
      break
    end
    -- end of epoch: validate, keep the best, checkpoint
    state.epoch, state.batch = epoch + 1, 0
    -- without sync_bn each process has its own running statistics: take rank 0's
    if dist and not opts.sync_bn then dist.broadcast_buffers(model, 0) end
    if validating then
      local vd, vi, vp, n = train.validate(model, val_loader, sum)
      last_val_dice, last_val_iou = vd, vi
      say(opts, "epoch %d/%d: val dice %.4f iou %.4f (positives %s) on %d images", epoch, opts.epochs, vd, vi,
          vp and ("%.4f"):format(vp) or "-", n)
      write_log(state.step, epoch, nil, opt.lr, vd, vi, state.seconds)
      if not state.best_dice or vd > state.best_dice then
        state.best_dice = vd
        meta_extra.val_dice = ("%.6f"):format(vd)
        save_weights(run .. "/best.safetensors")
      end
    end
    checkpoint()
  end
  if log then log:close() end
  loader:close()
  if dist and not opts.sync_bn then dist.broadcast_buffers(model, 0) end
  lpnx.sys.default_signal("INT")
  lpnx.sys.default_signal("TERM")
  if not interrupted then
    save_weights(run .. "/model.safetensors")
    if not validating then save_weights(run .. "/best.safetensors") end
  end
  if root then
    local ok, why = train.plot(run)
    if not ok then say(opts, "%s", why) end
  end
  return {epochs = opts.epochs, steps = state.step, best_dice = state.best_dice, val_dice = last_val_dice,
          val_iou = last_val_iou, seconds = lpnx.sys.now() - t_start, resumed = resumed, interrupted = interrupted,
          model = model, rank = rank, size = nproc}
end

return train
