-- Load on the DICOM node: N synthetic X-rays sent by concurrent storescu
-- senders (modalities) to a private Orthanc, which routes them to the node
-- (examples/serve.lua); the node sends its results back. Prints the
-- throughput, the latency from the start of a send to the moment Orthanc
-- acknowledged the image's last result, and whether every result arrived.
--   lua5.4 examples/bench_serve.lua --images 200 --senders 4 --encoder resnet34 --input-size 256 --tta
-- Needs Orthanc (Debian's orthanc package), DCMTK's storescu and curl: make deps installs them.
package.path = "./?.lua;" .. package.path
local argparse = require "argparse"
local lpnx = require "lpnx"
local cli = require "lpnx.cli"
local resnet = require "lpnx.models.resnet"
local serve = require "lpnx.serve"
local pacs = require "spec.support.pacs"

local PROGRAM = "bench_serve.lua"
local fail = cli.failer(PROGRAM)
local parser = argparse(PROGRAM, "Send synthetic X-rays through a private Orthanc to the lpnx node and time it.")
parser:option("--images", "X-rays to send.", "200"):convert(cli.integer("--images", {min = 1}))
parser:option("--senders", "Concurrent storescu senders.", "4"):convert(cli.integer("--senders", {min = 1}))
parser:option("--size", "Side of the synthetic X-rays (JPEG DICOM).", "1024"):convert(cli.integer("--size", {min = 64}))
parser:option("--encoder", ("%s."):format(cli.choices(resnet.configs)), "resnet34")
  :convert(cli.choice("--encoder", resnet.configs))
parser:option("--input-size", "The model's input size.", "256"):convert(cli.integer("--input-size", {min = 32}))
parser:flag("--tta", "Predict with horizontal-flip TTA.")
parser:flag("--sr", "The node sends an SR per image as well.")
parser:option("--interval", "Seconds each sender waits between two sends (0: as fast as it can).", "0")
  :convert(cli.number("--interval", {min = 0}))
parser:option("--workers", "The node's workers.", "1"):convert(cli.integer("--workers", {min = 1}))
parser:option("--out", "Work folder (data, model, Orthanc's storage, logs).", "build/bench-serve")
parser:option("--timeout", "Seconds to wait for the last result.", "3600"):convert(cli.integer("--timeout", {min = 1}))
local args = cli.parse(parser, fail)

local q = pacs.q
local out = args.out
assert(os.execute("rm -rf " .. q(out) .. " && mkdir -p " .. q(out)))

-- the X-rays and the model
local t0 = lpnx.sys.now()
local written = lpnx.synth.write{out = out .. "/data", count = args.images, size = args.size, seed = 7, positive = 0.4,
                                 test_fraction = 0}
local files = lpnx.data.list_images(out .. "/data/dicom-images-train")
assert(#files == args.images)
local sop_of = {}
for _, f in ipairs(files) do
  local _, meta = lpnx.dicom.read(f)
  sop_of[f] = meta.sop_instance_uid
end
lpnx.manual_seed(1)
local model = out .. "/model.safetensors"
lpnx.models.save(model, lpnx.models.unet{encoder = args.encoder}, {input_size = args.input_size})
io.stderr:write(("wrote %d X-rays (%d with a pneumothorax) and the model in %.0f s\n"):format(
  #files, written.positives, lpnx.sys.now() - t0))

-- the PACS and the node
local node = {port = pacs.free_port(), spool = out .. "/spool", log = out .. "/node.log", model = model,
              args = {"--workers", tostring(args.workers)}}
if args.tta then node.args[#node.args + 1] = "--tta" end
if args.sr then node.args[#node.args + 1] = "--sr" end
local o = pacs.orthanc{dir = out .. "/orthanc", node_port = node.port}
node.destination = ("ORTHANC@127.0.0.1:%d"):format(o.dicom)
local ok, err = pcall(function()
  node.pid = pacs.node(node)
  -- the senders: each sends its share one file per association, noting when each send starts
  local pids = {}
  for k = 1, args.senders do
    local list = {}
    for i = k, #files, args.senders do list[#list + 1] = q(files[i]) end
    local errors = q(("%s/sender%d.err"):format(out, k))
    local script = ("for f in %s; do echo \"$f $(date +%%s.%%N)\"; storescu -xy -aet MODALITY%d -aec ORTHANC "
                    .. "127.0.0.1 %d \"$f\" >> %s 2>&1; sleep %g; done")
                   :format(table.concat(list, " "), k, o.dicom, errors, args.interval)
    pids[k] = pacs.spawn(pacs.PLAIN .. "sh -c " .. q(script), ("%s/sender%d.txt"):format(out, k))
  end
  local started = {}
  for _, pid in ipairs(pids) do
    while pacs.alive(pid) do lpnx.sys.sleep(0.2) end
  end
  for k = 1, args.senders do
    for line in pacs.read(("%s/sender%d.txt"):format(out, k)):gmatch("[^\n]+") do
      local f, t = line:match("^(.*) (%d+%.%d+)$")
      started[sop_of[f]] = tonumber(t)
    end
  end
  -- every image's results acknowledged by Orthanc: the node's "sent" (or a
  -- "processed" without results) lines
  local function epoch(stamp)
    local y, mo, d, hh, mm, ss = stamp:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z$")
    y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
    if mo <= 2 then y, mo = y - 1, mo + 12 end
    local days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (mo - 3) + 2) // 5 + d - 719469
    return days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
  end
  local done_at, positives
  local function scan()
    done_at, positives = {}, 0
    for _, line in ipairs(pacs.events(node.log, "processed")) do
      if line:match("results=none") then done_at[line:match(" sop=(%S+)")] = epoch(line:match("^(%S+)")) end
      if line:match("finding=pneumothorax") then positives = positives + 1 end
    end
    for _, line in ipairs(pacs.events(node.log, "sent")) do
      done_at[line:match(" sop=(%S+)")] = epoch(line:match("^(%S+)"))
    end
    local n = 0
    for _ in pairs(done_at) do n = n + 1 end
    return n >= #files
  end
  local finished = pacs.wait_until(scan, args.timeout, 1)
  local latencies, first, last = {}, math.huge, 0
  for _, f in ipairs(files) do
    local s, e = started[sop_of[f]], done_at[sop_of[f]]
    if s and e then
      latencies[#latencies + 1] = e - s
      first, last = math.min(first, s), math.max(last, e)
    end
  end
  table.sort(latencies)
  local function pct(p) return latencies[math.max(1, math.ceil(p * #latencies))] end
  local segs, srs = o:count("SEG"), o:count("SR")
  local st = serve.status(node.spool)
  print(("images=%d senders=%d interval_s=%g encoder=%s input=%d tta=%s workers=%d threads_per_worker=%d"):format(
        #files, args.senders, args.interval, args.encoder, args.input_size, tostring(args.tta), args.workers,
        math.max(1, lpnx.get_num_threads() // args.workers)))
  print(("throughput_per_min=%.1f seconds=%.1f"):format(#latencies / (last - first) * 60, last - first))
  print(("latency_s p50=%.2f p95=%.2f max=%.2f"):format(pct(0.5), pct(0.95), latencies[#latencies]))
  print(("arrived: processed=%d of %d, SEG at Orthanc=%d (positives %d), SR at Orthanc=%d%s, queue=%d backlog=%d, "
         .. "failed=%d%s"):format(#latencies, #files, segs, positives, srs, args.sr and (" of " .. #files) or "",
                                  st.queue, st.backlog, st.failed_instances, finished and "" or " TIMED OUT"))
  local lost = #latencies ~= #files or segs ~= positives or (args.sr and srs ~= #files)
  print(lost and "LOST: not every result arrived" or "every result arrived, once")
end)
pacs.stop(node.pid)
o:stop()
if not ok then fail(1, tostring(err)) end
