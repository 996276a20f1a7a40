-- Times the ResNet U-Net: training steps (forward + backward + Adam) and
-- inference passes on random data, and with --layers where the time goes;
-- then lpnx.dicom.read of a 1024 x 1024 JPEG baseline file (dicom_read_ms).
--   lua5.4 examples/bench.lua --encoder resnet34 --size 256 --batch 4 --threads 2 --layers
local argparse = require "argparse"
local lpnx = require "lpnx"
local cli = require "lpnx.cli"
local models = require "lpnx.models"
local nn = require "lpnx.nn"
local optim = require "lpnx.optim"
local resnet = require "lpnx.models.resnet"

local PROGRAM = "bench.lua"
local parser = argparse(PROGRAM, "Time training and inference of the U-Net on random data.")
parser:option("--encoder", ("%s."):format(cli.choices(resnet.configs)), "resnet34")
  :convert(cli.choice("--encoder", resnet.configs))
parser:option("--encoder-width", "Encoder base width.", "64"):convert(cli.integer("--encoder-width", {min = 1}))
parser:option("--size", "Input size (a multiple of 32).", "256"):convert(cli.integer("--size", {min = 1}))
parser:option("--batch", "Batch size.", "4"):convert(cli.integer("--batch", {min = 1}))
parser:option("--threads", "Threads.", "2"):convert(cli.integer("--threads", {min = 1}))
parser:option("--steps", "Timed training steps (and as many inference passes).", "3")
  :convert(cli.integer("--steps", {min = 1}))
parser:option("--warmup", "Untimed steps first.", "1"):convert(cli.integer("--warmup", {min = 0}))
parser:option("--conv-algorithm",
              "Convolutions: auto, winograd, winograd2, direct or double (lpnx.set_conv_algorithm).", "auto")
  :convert(cli.choice("--conv-algorithm", lpnx.conv_algorithms))
parser:flag("--layers", "Also print time and GFLOP/s per kernel and resolution.")
local args = cli.parse(parser, cli.failer(PROGRAM))

lpnx.set_num_threads(args.threads)
lpnx.set_conv_algorithm(args.conv_algorithm)
lpnx.manual_seed(0)
local now = lpnx.sys.now
local w = args.encoder_width
local decoder = w == 64 and {256, 128, 64, 32, 16} or {w * 4, w * 2, w, w // 2, w // 4}
local model = models.unet{encoder = args.encoder, encoder_width = w, decoder_channels = decoder}
local x = lpnx.randn(args.batch, 3, args.size, args.size)
local y = lpnx.rand(args.batch, 1, args.size, args.size):gt(0.9)
local criterion = nn.ComboLoss{bce = 1, dice = 1}
local params, grads = model:parameters()
local opt = optim.Adam(params, grads, {lr = 1e-3})
model.encoder.conv1.need_input_grad = false

-- Per-kernel timing: every lpnx.kernels function is wrapped while --layers
-- is on; convolutions also count their multiply-adds.
local stats, order = {}, {}
local phase = "train"
local function conv_flops(x_, w_, y_)
  local n, cout, ho, wo = y_:size(1), y_:size(2), y_:size(3), y_:size(4)
  return 2 * n * cout * ho * wo * w_:size(2) * w_:size(3) * w_:size(4), x_
end
local function record(name, res, seconds, flops)
  local key = ("%s %-26s %5s"):format(phase, name, res)
  local s = stats[key]
  if not s then
    s = {calls = 0, seconds = 0, flops = 0}
    stats[key] = s
    order[#order + 1] = key
  end
  s.calls, s.seconds, s.flops = s.calls + 1, s.seconds + seconds, s.flops + (flops or 0)
end
local forward_flops
if args.layers then
  for name, fn in pairs(lpnx.kernels) do
    lpnx.kernels[name] = function(...)
      local t0 = now()
      local r1, r2 = fn(...)
      local dt = now() - t0
      local a = select(1, ...)
      local res = lpnx.is_tensor(a) and a:dim() == 4 and (a:size(3) .. "x" .. a:size(4)) or "-"
      local flops
      if name == "conv2d_forward" then flops = conv_flops(a, select(2, ...), r1)
      elseif name == "conv2d_backward" then
        local gy = select(3, ...)
        flops = 2 * conv_flops(a, select(2, ...), gy) -- weight and input gradients
      end
      record(name, res, dt, flops)
      return r1, r2
    end
  end
end

-- One forward pass's convolution multiply-adds, counted once.
do
  local f = lpnx.kernels.conv2d_forward
  local count = 0
  lpnx.kernels.conv2d_forward = function(a, wt, ...)
    local out = f(a, wt, ...)
    count = count + conv_flops(a, wt, out)
    return out
  end
  model:eval()
  model:forward(x)
  lpnx.kernels.conv2d_forward = f
  forward_flops = count / args.batch
  model:train()
end

local function train_step()
  opt:zero_grad()
  local logits = model:forward(x)
  criterion:forward(logits, y)
  model:backward(x, criterion:backward(logits, y))
  opt:step()
end

local function timed(fn, n)
  local best = math.huge
  for _ = 1, n do
    local t0 = now()
    fn()
    best = math.min(best, now() - t0)
  end
  return best
end

phase = "warmup"
for _ = 1, args.warmup do train_step() end
phase = "train"
local train_s = timed(train_step, args.steps)
model:eval()
local function infer() model:forward(x) end
phase = "warmup"
for _ = 1, args.warmup do infer() end
phase = "infer"
local infer_s = timed(infer, args.steps)

-- lpnx.dicom.read of a 1024 x 1024 8-bit JPEG baseline file (a synthetic
-- radiograph, quality 95, as make_synthetic.lua writes): the best of 10;
-- and, where Debian's python3-pydicom is installed, pydicom's dcmread and
-- pixel_array of the same file (nil without it).
local PYDICOM_TIMING = [[
import sys, time, pydicom
best = 1e9
for _ in range(11):
    t = time.perf_counter()
    pydicom.dcmread(sys.argv[1]).pixel_array
    best = min(best, time.perf_counter() - t)
print(best)
]]
local function dicom_read_s()
  local synth = require "lpnx.synth"
  local path = os.tmpname()
  local img = synth.render{size = 1024, positive = true, generator = lpnx.Generator(7)}
  lpnx.dicom.write(path, (img * 255):round_(), {}, {jpeg = true, quality = 95})
  lpnx.dicom.read(path)
  local best = timed(function() lpnx.dicom.read(path) end, 10)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(PYDICOM_TIMING)
  f:close()
  local py = io.popen(("/usr/bin/python3 '%s' '%s' 2>/dev/null"):format(script, path))
  local py_best = py and tonumber(py:read("a"):match("^%s*([%d.e-]+)"))
  if py then py:close() end
  os.remove(script)
  os.remove(path)
  return best, py_best
end
local dicom_s, pydicom_s = dicom_read_s()

local function peak_rss_mb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s*(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

if args.layers then
  table.sort(order, function(a, b) return stats[a].seconds > stats[b].seconds end)
  print(("%-5s %-26s %5s %7s %10s %9s"):format("phase", "kernel", "input", "calls", "seconds", "GFLOP/s"))
  for _, key in ipairs(order) do
    local s = stats[key]
    if key:match("^warmup") then goto next end
    local gf = s.flops > 0 and ("%9.1f"):format(s.flops / s.seconds / 1e9) or "        -"
    print(("%s %7d %10.4f %s"):format(key, s.calls, s.seconds, gf))
    ::next::
  end
  print(("(totals are over %d timed steps and %d inference passes, warm-up excluded)"):format(
    args.steps, args.steps))
end

local per_train, per_infer = train_s / args.batch, infer_s / args.batch
print(("lpnx %s-unet size=%d batch=%d threads=%d train_s_per_image=%.4f infer_s_per_image=%.4f "
       .. "gflops_train=%.1f gflops_infer=%.1f peak_rss_mb=%.0f dicom_read_ms=%.1f"):format(
  args.encoder, args.size, args.batch, args.threads, per_train, per_infer,
  3 * forward_flops / per_train / 1e9, forward_flops / per_infer / 1e9, peak_rss_mb(), dicom_s * 1000)
  .. (pydicom_s and (" pydicom_read_ms=%.1f"):format(pydicom_s * 1000) or ""))
