-- The lpnx DICOM node: receives chest X-rays over DICOM, predicts each and
-- sends the results back to the PACS.
--   lua5.4 examples/serve.lua --model runs/best.safetensors --aet LPNX --port 11112 --spool /var/spool/lpnx \
--     --destination ORTHANC@127.0.0.1:4242 --allow ORTHANC --sr --overlay --log /var/log/lpnx.log
--   lua5.4 examples/serve.lua --status --spool /var/spool/lpnx
-- It runs until SIGTERM or SIGINT (the current image is finished first) and keeps its whole state in the
-- spool folder: kill it at any moment and start it again with the same flags, and every instance whose
-- C-STORE succeeded is processed and its results delivered, with the same UIDs.
-- Exit codes: 0 stopped by a signal; 2 a bad flag or missing file; 1 a failure (the port cannot be
-- listened on, the spool cannot be written).
local argparse = require "argparse"
local cli = require "lpnx.cli"
local predict = require "lpnx.predict"
local serve = require "lpnx.serve"

local PROGRAM = "serve.lua"
local fail = cli.failer(PROGRAM)
local d, sd = predict.defaults, serve.defaults

local parser = argparse(PROGRAM, "Run lpnx as a DICOM node beside a PACS: a Storage SCP that predicts every chest "
                                 .. "X-ray it receives and sends a DICOM Segmentation (and on request an SR and an "
                                 .. "overlay) back with C-STORE.")
  :epilog("Accepted: C-ECHO, and C-STORE of any storage object in any transfer syntax lpnx decodes. CR, DX and "
          .. "Secondary Capture images of a frontal chest (lpnx.predict.chest_rules) are predicted; anything else is "
          .. "logged as skipped with its reason. An instance is written to the spool and fsync'ed before the "
          .. "success status goes back; if it cannot be, the sender gets a failure status and retries. Results "
          .. "have UIDs derived from the source's SOP Instance UID and the model, so a result sent twice is one "
          .. "object at the PACS. A destination that is down is retried with a backoff of 1 s doubling to 60 s; "
          .. "the backlog stays in the spool across restarts. One log line per event: "
          .. "TIME EVENT key=value ... (received, skipped, processed, sent, send_failed, failed, rejected, refused).")
parser:option("--model", "Model file written by lpnx.models.save or the trainer (safetensors)."):argname("<file>")
  :convert(cli.file("--model", "a model file"))
parser:option("--aet", "The node's own AE title: the called AE title it answers to and the calling AE title it "
                       .. "sends results with.", sd.aet):argname("<aet>")
parser:option("--port", "TCP port to listen on.", tostring(sd.port)):argname("<port>")
  :convert(cli.integer("--port", {min = 1, max = 65535}))
parser:option("--host", "Address to listen on (default every interface)."):argname("<address>")
parser:option("--spool", "The node's state folder: received instances, results waiting to be sent, status. "
                         .. "Made when missing."):argname("<dir>")
parser:option("--destination", "Where results are sent with C-STORE: the PACS's AE title, host and port."):argname(
  "<aet@host:port>")
parser:option("--allow", "Accept associations only from this calling AE title (from that host only with "
                         .. "AET@HOST); repeat for more. Without --allow every AE title is accepted.")
  :argname("<aet[@host]>"):count("*")
parser:flag("--tta", "Average the prediction with the one on the horizontally flipped image.")
cli.postprocess_flags(parser, d)
parser:flag("--sr", "Also send a Comprehensive SR per image: finding present or absent, area in cm^2, the "
                    .. "image-level probability, the algorithm, references to the image and the segmentation.")
parser:flag("--overlay", "Also send a Secondary Capture of each positive image with the mask drawn on it, for "
                         .. "viewers that do not show DICOM Segmentations.")
parser:flag("--empty-seg", "Send a Segmentation with an empty segment for images without a pneumothorax too.")
parser:flag("--any-image", "Predict every readable CR, DX or SC image: no check that it is a frontal chest.")
parser:option("--workers", "Processes that predict and send (each instance goes to one, by arrival number).",
              tostring(sd.workers)):argname("<n>"):convert(cli.integer("--workers", {min = 1}))
parser:option("--threads", "Threads of each worker (default the machine's threads shared by the workers)."):argname(
  "<n>"):convert(cli.integer("--threads", {min = 1}))
parser:option("--timeout", "DICOM network timeout in seconds.", tostring(sd.timeout)):argname("<s>")
  :convert(cli.integer("--timeout", {min = 1}))
parser:option("--log", "Also append the log lines to this file."):argname("<file>")
parser:flag("--status", "Print the status of the node that uses --spool (counts, queue, backlog) as JSON and exit.")

local args = cli.parse(parser, fail)
if args.spool == nil then fail(2, "--spool is required (see --help)") end

if args.status then
  local cjson = require "cjson"
  local ok, st = pcall(serve.status, args.spool)
  if not ok then fail(1, tostring(st)) end
  print(cjson.encode(st))
  os.exit(0)
end

for _, key in ipairs {"model", "destination"} do
  if args[key] == nil then fail(2, ("--%s is required (see --help)"):format(key)) end
end
local conflict = cli.postprocess_conflict(args)
if conflict then fail(2, conflict) end
local parsed, destination = pcall(serve.parse_destination, args.destination)
if not parsed then fail(2, "--destination " .. destination) end

local done, err = xpcall(serve.run, debug.traceback, {
  model = args.model, spool = args.spool, destination = destination, aet = args.aet, port = args.port,
  host = args.host, allow = #args.allow > 0 and args.allow or nil, tta = args.tta, top = args.top,
  min_area = args.min_area, bottom = args.bottom, threshold = args.threshold, min_component = args.min_component,
  sr = args.sr, overlay = args.overlay, empty_seg = args.empty_seg, any_image = args.any_image,
  workers = args.workers, threads = args.threads, timeout = args.timeout, log = args.log,
})
if not done then
  if os.getenv("LPNX_TRACEBACK") then io.stderr:write(err, "\n") end
  fail(1, (tostring(err):match("^[^\n]*"):gsub("^[^:\n]*%.lua:%d+: ", "")))
end
os.exit(0)
