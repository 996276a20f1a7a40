-- lpnx.serve: the DICOM node. It receives chest X-rays over DICOM (a
-- Storage SCP), predicts each one and sends the results back with C-STORE:
-- a DICOM Segmentation when a pneumothorax is found, on request a
-- Comprehensive SR and an overlay Secondary Capture.
--
--   serve.run{model = FILE, spool = DIR, destination = "AET@HOST:PORT", ...}
--   serve.status(spool) -> the node's status table (counts, queue, backlog)
--   serve.parse_destination("ORTHANC@127.0.0.1:4242") -> {aet, host, port}
--
-- Processes: one supervisor, which forks a receiver (lpnx.net.listen in
-- a thread of its own) and N workers, and restarts any that dies. Each
-- child dies with the supervisor (lpnx.sys.die_with_parent), so kill -9
-- of the supervisor stops the node whole.
--
-- The spool is the node's whole state; every step is a rename, so a kill
-- at any moment loses nothing:
--
--   incoming/SEQ_UID.dcm   an instance whose C-STORE succeeded: the
--                          receiver writes and fsyncs it before answering
--   work/SEQ_UID/          results being written (removed at start)
--   outbox/SEQ_UID/        results ready: result.json and the DICOM files,
--                          renamed from work/ when complete
--   failed/SEQ_UID.dcm     instances whose processing raised, with .txt
--   status/                each process's counts; status.json merges them
--
-- A worker takes the instances whose SEQ it owns (SEQ mod N) in arrival
-- order: it delivers its outbox first, then processes the next instance
-- into the outbox. An instance is removed from incoming/ only after the
-- destination acknowledged every result, then its outbox folder. A result
-- has a UID derived from its source's SOP Instance UID and the node's
-- identity (the model file's digest and the post-processing settings), so
-- a result sent again after a kill is the same object at the PACS.
local lpnx = require "lpnx"
local cjson = require "cjson"
local data = require "lpnx.data"
local fs = require "lpnx.fs"
local models = require "lpnx.models"
local predict = require "lpnx.predict"
local util = require "lpnx.util"

local sys = lpnx.sys

local serve = {}

serve.defaults = {aet = "LPNX", port = 11112, workers = 1, timeout = 30, poll = 0.2, backoff = {1, 60},
                  refusals = 5, attempts = 3, overlay_size = 1024}

-- The image SOP classes the node predicts; other instances are accepted,
-- logged and left alone.
serve.image_classes = {
  ["1.2.840.10008.5.1.4.1.1.1"] = "CR",
  ["1.2.840.10008.5.1.4.1.1.1.1"] = "DX for presentation",
  ["1.2.840.10008.5.1.4.1.1.1.1.1"] = "DX for processing",
  ["1.2.840.10008.5.1.4.1.1.7"] = "Secondary Capture",
}

-- What the results say about where they come from.
serve.algorithm_name = "lpnx U-Net pneumothorax"

---------------------------------------------------------------------------
-- small parts

-- "AET@HOST:PORT" -> {aet, host, port}
function serve.parse_destination(text)
  local aet, host, port = tostring(text):match("^([^@]+)@([^:@]+):(%d+)$")
  port = tonumber(port)
  if not aet or #aet > 16 or aet:match("^%s") or aet:match("%s$") or aet:match("\\") then
    error(("destination %q: expected AET@HOST:PORT (an AE title of 1 to 16 characters)"):format(tostring(text)), 0)
  end
  if not port or port < 1 or port > 65535 then
    error(("destination %q: the port must be 1..65535"):format(tostring(text)), 0)
  end
  return {aet = aet, host = host, port = math.tointeger(port)}
end

local function utc()
  local t = sys.time()
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. ("%.3fZ"):format(t % 1):sub(2)
end

-- A log: lines "TIME EVENT key=value ..." on stdout and in the log file,
-- each written whole (O_APPEND) so that processes can share the file.
local function value_text(v)
  v = tostring(v)
  if v == "" or v:match("[%s\"=]") then return '"' .. v:gsub("[\"\\]", "\\%0"):gsub("\n", " ") .. '"' end
  return v
end

local function new_log(path, role)
  local file
  if path then file = assert(io.open(path, "a")) end
  return function(event, fields)
    local parts = {utc(), event}
    for _, kv in ipairs(fields or {}) do
      if kv[2] ~= nil then parts[#parts + 1] = kv[1] .. "=" .. value_text(kv[2]) end
    end
    if role then parts[#parts + 1] = "by=" .. role end
    local line = table.concat(parts, " ") .. "\n"
    io.stdout:write(line)
    io.stdout:flush()
    if file then
      file:write(line)
      file:flush()
    end
  end
end

-- Writes text to path; raises with the reason when any step fails (a
-- full disk, say).
local function write_file(path, text)
  local f, err = io.open(path, "w")
  if not f then error(err, 0) end
  local wrote, werr = f:write(text)
  local closed, cerr = f:close()
  if not wrote or not closed then error(("%s: %s"):format(path, tostring(werr or cerr)), 0) end
end

-- Writes a status file through a temporary file and a rename (no fsync).
-- A status that cannot be written (a full disk) is skipped: it must never
-- stop the node.
local function write_status(path, text)
  local tmp = path .. ".tmp" .. sys.getpid()
  if not pcall(write_file, tmp, text) or not os.rename(tmp, path) then os.remove(tmp) end
end

local function read_json(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(cjson.decode, text)
  return ok and v or nil
end

-- The entries of folder whose names match pattern, sorted (arrival order
-- for SEQ_UID names).
local function entries(folder, pattern)
  local list = {}
  for _, name in ipairs(fs.list(folder)) do
    if name:match(pattern) then list[#list + 1] = name end
  end
  table.sort(list)
  return list
end

local function layout(spool)
  return {spool = spool, incoming = spool .. "/incoming", work = spool .. "/work", outbox = spool .. "/outbox",
          failed = spool .. "/failed", status = spool .. "/status"}
end

local function seq_of(name) return tonumber(name:match("^(%d+)_")) end

local function uid_of(name) return name:match("^%d+_(.-)%.dcm$") or name:match("^%d+_(.+)$") end

---------------------------------------------------------------------------
-- status

-- status(spool) -> {node = {...}, receiver = {...}, workers = {...},
-- queue = instances not yet processed, backlog = results not yet
-- delivered, failed = instances parked in failed/}: what the processes
-- last wrote, and the spool counted now.
function serve.status(spool)
  local at = layout(spool)
  local st = read_json(spool .. "/status.json") or {}
  local incoming = entries(at.incoming, "^%d+_.*%.dcm$")
  local outbox = entries(at.outbox, "^%d+_")
  local waiting = {}
  for _, name in ipairs(outbox) do waiting[name] = true end
  local queue = 0
  for _, name in ipairs(incoming) do
    if not waiting[name:sub(1, -5)] then queue = queue + 1 end
  end
  st.queue, st.backlog = queue, #outbox
  st.failed_instances = #entries(at.failed, "%.dcm$")
  return st
end

local function merge_status(at, started, pids)
  local st = {pid = sys.getpid(), started = started, updated = utc(), workers = {}}
  st.receiver = read_json(at.status .. "/receiver.json")
  local totals = {}
  for k, pid in ipairs(pids) do
    local w = read_json(("%s/worker-%d.json"):format(at.status, k)) or {}
    w.pid = pid
    st.workers[k] = w
    for key, v in pairs(w.counts or {}) do totals[key] = (totals[key] or 0) + v end
  end
  st.counts = totals
  for key, v in pairs(st.receiver and st.receiver.counts or {}) do st.counts[key] = v end
  write_status(at.spool .. "/status.json", cjson.encode(st))
end

---------------------------------------------------------------------------
-- the receiver

local function receiver(cfg, at, ready)
  local log = new_log(cfg.log, "receiver")
  local counts = {received = 0, refused = 0, rejected = 0, echoes = 0}
  local ok, srv = pcall(lpnx.net.listen, {aet = cfg.aet, port = cfg.port, host = cfg.host, spool = at.incoming,
                                            allow = cfg.allow, timeout = cfg.timeout})
  if not ok then
    sys.write_message(ready, "error " .. tostring(srv))
    return 1
  end
  sys.write_message(ready, "ready " .. srv:port())
  sys.close(ready)
  log("listening", {{"aet", cfg.aet}, {"port", srv:port()}, {"spool", at.incoming}})
  local function status()
    write_status(at.status .. "/receiver.json", cjson.encode {pid = sys.getpid(), port = srv:port(), counts = counts})
  end
  status()
  while not (sys.signal_pending("TERM") or sys.signal_pending("INT")) do
    if srv:wait(0.2) then
      for _, ev in ipairs(srv:events()) do
        local from = ev.calling_aet and (ev.calling_aet .. "@" .. tostring(ev.peer)) or ev.peer
        if ev.kind == "received" then
          counts.received = counts.received + 1
          log("received", {{"sop", ev.sop_instance_uid}, {"seq", seq_of(ev.path:match("[^/]*$"))},
                           {"class", serve.image_classes[ev.sop_class_uid] or ev.sop_class_uid},
                           {"from", from}, {"bytes", ev.bytes}})
        elseif ev.kind == "failed" then
          counts.refused = counts.refused + 1
          log("refused", {{"sop", ev.sop_instance_uid}, {"from", from},
                          {"status", ev.status and ("0x%04X"):format(ev.status)}, {"reason", ev.reason}})
        elseif ev.kind == "rejected" then
          counts.rejected = counts.rejected + 1
          log("rejected", {{"from", from}, {"reason", ev.reason}})
        elseif ev.kind == "echo" then
          counts.echoes = counts.echoes + 1
          log("echo", {{"from", from}})
        elseif ev.kind == "error" then
          log("network_error", {{"reason", ev.reason}})
        end
      end
      status()
    end
  end
  srv:close()
  status()
  log("stopped", {})
  return 0
end

---------------------------------------------------------------------------
-- the worker

-- The results of one source image, written into dir. Returns the result
-- table (what result.json holds) or nil, reason when the image is not one
-- the node predicts.
local function predict_one(w, path)
  local cfg = w.cfg
  local read, img, meta = pcall(data.read_image, path)
  if not read then
    local why = tostring(img):gsub("^[^\n]-%.dcm: ", ""):gsub("^lpnx%.dicom%.read: ", "")
    return nil, "cannot be read: " .. why
  end
  if not serve.image_classes[meta.sop_class_uid or ""] then
    return nil, ("SOP class %s is not a radiograph the node reads"):format(tostring(meta.sop_class_uid))
  end
  if not cfg.any_image then
    local chest, why = predict.chest_check(meta, cfg.chest_rules)
    if not chest then return nil, why end
  end
  for _, key in ipairs {"sop_instance_uid", "study_instance_uid", "series_instance_uid"} do
    if not meta[key] then return nil, ("no %s: results could not refer to it"):format(key) end
  end
  local prob = predict.probability_map(w.model, w.meta, img, {tta = cfg.tta})
  local mask = predict.postprocess(prob, cfg.post)
  local spacing, source = predict.area_spacing(meta)
  local area = mask:sum()
  return {
    sop_instance_uid = meta.sop_instance_uid, sop_class_uid = meta.sop_class_uid,
    study_instance_uid = meta.study_instance_uid, positive = area > 0, area_px = area,
    area_cm2 = spacing and area * spacing[1] * spacing[2] / 100 or nil, area_source = source,
    probability = prob:max(), rows = img:size(2), columns = img:size(3),
  }, img, mask, meta
end

-- The derived UID of result kind ("SEG", "SR", "SC") of a source, and of
-- the series of that kind in the source's study.
local function result_uids(w, meta, kind)
  local d = lpnx.dicom.derive_uid
  return d("lpnx result", w.identity, meta.sop_instance_uid, kind),
         d("lpnx series", w.identity, meta.study_instance_uid, kind)
end

local function write_results(w, dir, result, img, mask, meta)
  local cfg = w.cfg
  local files, warnings = {}, {}
  local version = ("%s (model %s)"):format(lpnx.version, w.model_name)
  local seg
  if result.positive or cfg.empty_seg then
    local sop, series = result_uids(w, meta, "SEG")
    local uids = lpnx.dicom.write_seg(dir .. "/seg.dcm", mask, meta, {
      sop_instance_uid = sop, series_instance_uid = series, series_number = "9701", instance_number = "1",
      series_description = "lpnx pneumothorax segmentation", algorithm_version = version,
      description = not result.positive and "No pneumothorax predicted by lpnx (empty segment)" or nil})
    for _, text in ipairs(uids.warnings or {}) do warnings[#warnings + 1] = "SEG: " .. text end
    seg = {sop_class_uid = uids.sop_class_uid, sop_instance_uid = uids.sop_instance_uid,
           series_instance_uid = uids.series_instance_uid}
    files[#files + 1] = "seg.dcm"
    result.seg = seg.sop_instance_uid
  end
  if cfg.sr then
    local sop, series = result_uids(w, meta, "SR")
    local uids = lpnx.dicom.write_sr(dir .. "/sr.dcm", meta, {
      finding = result.positive, probability = math.min(1, math.max(0, result.probability)),
      area_cm2 = result.positive and result.area_cm2 or (result.area_cm2 and 0) or nil,
      area_source = result.area_source, algorithm_name = serve.algorithm_name, algorithm_version = version,
      seg = seg, sop_instance_uid = sop, series_instance_uid = series, series_number = "9702",
      instance_number = "1", series_description = "lpnx pneumothorax report"})
    for _, text in ipairs(uids.warnings or {}) do warnings[#warnings + 1] = "SR: " .. text end
    files[#files + 1] = "sr.dcm"
    result.sr = uids.sop_instance_uid
  end
  if cfg.overlay and result.positive then
    local view, view_mask = img, mask
    local h, wd = img:size(2), img:size(3)
    if math.max(h, wd) > cfg.overlay_size then
      local scale = cfg.overlay_size / math.max(h, wd)
      local oh, ow = math.max(1, math.floor(h * scale + 0.5)), math.max(1, math.floor(wd * scale + 0.5))
      view = lpnx.image.resize(img, oh, ow, "area")
      view_mask = lpnx.image.resize(mask, oh, ow, "bilinear"):gt(0.5)
    end
    local sop, series = result_uids(w, meta, "SC")
    local copy = {}
    for _, key in ipairs {"patient_id", "patient_name", "patient_sex", "patient_age", "study_date", "study_time",
                          "study_id", "study_instance_uid", "view_position", "body_part_examined"} do
      copy[key] = meta[key]
    end
    copy.modality = "OT"
    copy.series_instance_uid, copy.sop_instance_uid = series, sop
    copy.series_number, copy.instance_number = "9703", "1"
    copy.series_description = "lpnx pneumothorax overlay"
    copy.derivation_description = ("Predicted pneumothorax drawn in red over the image by %s"):format(version)
    copy.source = {sop_class_uid = meta.sop_class_uid, sop_instance_uid = meta.sop_instance_uid}
    copy.burned_in_annotation = "YES"
    lpnx.dicom.write(dir .. "/overlay.dcm", lpnx.image.overlay(view, view_mask):mul(255), copy, {jpeg = false})
    files[#files + 1] = "overlay.dcm"
    result.overlay = sop
  end
  result.files, result.warnings = files, warnings
  return result
end

local function count(w, key)
  w.counts[key] = (w.counts[key] or 0) + 1
end

local function worker_status(w, extra)
  local st = {pid = sys.getpid(), counts = w.counts, last_error = w.last_error, retry_at = w.retry_at,
              state = extra}
  write_status(("%s/worker-%d.json"):format(w.at.status, w.index), cjson.encode(st))
end

-- Takes an instance out of incoming/ (durably).
local function remove_instance(w, name)
  os.remove(w.at.incoming .. "/" .. name)
  sys.fsync_path(w.at.incoming)
end

-- Processes incoming/NAME into outbox/SEQ_UID/ (or skips it).
local function process(w, name)
  local at, log = w.at, w.log
  local base = name:sub(1, -5)
  local t0 = sys.now()
  local ok, result, img, mask, meta = pcall(predict_one, w, at.incoming .. "/" .. name)
  if ok and not result then
    count(w, "skipped")
    log("skipped", {{"sop", uid_of(name)}, {"seq", seq_of(name)}, {"reason", img}})
    remove_instance(w, name)
    return
  end
  local work = at.work .. "/" .. base
  if ok then
    ok, result = pcall(function()
      fs.remove_tree(work)
      fs.mkdir_p(work)
      local r = write_results(w, work, result, img, mask, meta)
      r.ms = math.floor((sys.now() - t0) * 1000 + 0.5)
      r.seq = seq_of(name)
      write_file(work .. "/result.json", cjson.encode(r))
      sys.fsync_path(work .. "/result.json")
      sys.fsync_path(work)
      local moved, err = os.rename(work, at.outbox .. "/" .. base)
      if not moved then error(err, 0) end
      sys.fsync_path(at.outbox)
      return r
    end)
  end
  if not ok then
    local reason = tostring(result):gsub("^[^\n]-%.lua:%d+: ", "")
    pcall(fs.remove_tree, work)
    w.last_error = reason
    local n = (w.attempts[name] or 0) + 1
    w.attempts[name] = n
    if n < w.cfg.attempts then                    -- perhaps the machine's fault (a full disk): again later
      count(w, "errors")
      w.pause_until = sys.now() + 2 ^ n
      log("error", {{"sop", uid_of(name)}, {"seq", seq_of(name)}, {"reason", reason}, {"attempt", n},
                    {"retry_in_seconds", 2 ^ n}})
      return
    end
    w.attempts[name] = nil                        -- the image's: parked with the reason
    count(w, "failed")
    log("failed", {{"sop", uid_of(name)}, {"seq", seq_of(name)}, {"reason", reason}, {"attempts", n}})
    os.rename(at.incoming .. "/" .. name, at.failed .. "/" .. name)
    pcall(write_file, at.failed .. "/" .. base .. ".txt", reason .. "\n")
    sys.fsync_path(at.failed)
    sys.fsync_path(at.incoming)
    return
  end
  w.attempts[name] = nil
  count(w, "processed")
  if result.positive then count(w, "positive") end
  log("processed", {{"sop", result.sop_instance_uid}, {"seq", result.seq},
                    {"finding", result.positive and "pneumothorax" or "none"},
                    {"area_cm2", result.area_cm2 and ("%.2f"):format(result.area_cm2)},
                    {"area_px", ("%d"):format(math.floor(result.area_px + 0.5))},
                    {"probability", ("%.4f"):format(result.probability)}, {"ms", result.ms},
                    {"results", #result.files > 0 and table.concat(result.files, ",") or "none"}})
  for _, text in ipairs(result.warnings) do log("warning", {{"sop", result.sop_instance_uid}, {"reason", text}}) end
end

-- Sends outbox/BASE to the destination. Returns true when it is done
-- (delivered, or parked after too many refusals), false to retry later.
local function deliver(w, base)
  local at, log, cfg = w.at, w.log, w.cfg
  local dir = at.outbox .. "/" .. base
  local result = read_json(dir .. "/result.json")
  if not result then                              -- cannot happen after a rename; parked, not lost
    log("failed", {{"seq", seq_of(base)}, {"reason", "outbox entry without a readable result.json"}})
    os.rename(dir, at.failed .. "/" .. base)
    return true
  end
  local dest = cfg.destination
  local where = ("%s@%s:%d"):format(dest.aet, dest.host, dest.port)
  local paths = {}
  for k, file in ipairs(result.files or {}) do paths[k] = dir .. "/" .. file end
  if #paths > 0 then
    local t0 = sys.now()
    local sent, err = lpnx.net.store{host = dest.host, port = dest.port, aet = cfg.aet, called = dest.aet,
                                     files = paths, timeout = cfg.timeout}
    if not sent then
      w.last_error = err
      count(w, "send_failures")
      log("send_failed", {{"sop", result.sop_instance_uid}, {"to", where}, {"reason", err}})
      return false
    end
    local refused = {}
    for k, r in ipairs(sent) do
      if not r.ok then
        refused[#refused + 1] = ("%s: status 0x%04X %s"):format(result.files[k], r.status or 0xFFFF, r.reason or "")
      end
    end
    if #refused > 0 then
      w.refusals[base] = (w.refusals[base] or 0) + 1
      w.last_error = table.concat(refused, "; ")
      count(w, "send_failures")
      log("send_failed", {{"sop", result.sop_instance_uid}, {"to", where}, {"reason", w.last_error},
                          {"attempt", w.refusals[base]}})
      if w.refusals[base] < cfg.refusals then return false end
      count(w, "failed")
      log("failed", {{"sop", result.sop_instance_uid}, {"seq", seq_of(base)},
                     {"reason", ("the destination refused its results %d times: parked in failed/"):format(
                       cfg.refusals)}})
      os.rename(dir, at.failed .. "/" .. base)
      os.rename(at.incoming .. "/" .. base .. ".dcm", at.failed .. "/" .. base .. ".dcm")
      sys.fsync_path(at.failed)
      return true
    end
    count(w, "sent")
    log("sent", {{"sop", result.sop_instance_uid}, {"to", where}, {"results", table.concat(result.files, ",")},
                 {"ms", math.floor((sys.now() - t0) * 1000 + 0.5)}})
  end
  w.refusals[base] = nil
  remove_instance(w, base .. ".dcm")
  fs.remove_tree(dir)
  sys.fsync_path(at.outbox)
  return true
end

local function stopping()
  return sys.signal_pending("TERM") or sys.signal_pending("INT")
end

local function worker(cfg, at, index, n)
  local w = {cfg = cfg, at = at, index = index, counts = {}, refusals = {}, attempts = {}, pause_until = 0,
             log = new_log(cfg.log, n > 1 and ("worker" .. index) or "worker")}
  lpnx.set_num_threads(cfg.threads)
  w.model, w.meta = models.load(cfg.model)
  w.model_name = cfg.model:match("[^/]*$")
  w.identity = cfg.identity
  local mine = function(name) return (seq_of(name) or -1) % n == index - 1 end
  for _, name in ipairs(entries(at.work, "^%d+_")) do
    if mine(name) then fs.remove_tree(at.work .. "/" .. name) end
  end
  local backoff, retry_at = cfg.backoff[1], 0
  worker_status(w, "ready")
  while not stopping() do
    local busy = false
    if sys.now() >= retry_at then
      for _, base in ipairs(entries(at.outbox, "^%d+_")) do
        if stopping() then break end
        if mine(base) then
          local sent_ok, done = pcall(deliver, w, base)
          if not sent_ok then
            w.last_error = tostring(done)
            w.log("error", {{"seq", seq_of(base)}, {"reason", w.last_error}})
            done = false
          end
          if done then
            backoff, busy = cfg.backoff[1], true
          else
            retry_at = sys.now() + backoff
            w.retry_at = utc()
            w.log("retry", {{"in_seconds", backoff}})
            backoff = math.min(backoff * 2, cfg.backoff[2])
            break
          end
        end
      end
    end
    if not stopping() and sys.now() >= w.pause_until then
      local waiting = {}
      for _, base in ipairs(entries(at.outbox, "^%d+_")) do waiting[base] = true end
      for _, name in ipairs(entries(at.incoming, "^%d+_.*%.dcm$")) do
        if mine(name) and not waiting[name:sub(1, -5)] then
          local done, err = pcall(process, w, name)
          if not done then                        -- the spool itself failed us: a pause, then again
            w.last_error = tostring(err)
            w.pause_until = sys.now() + 5
            w.log("error", {{"seq", seq_of(name)}, {"reason", w.last_error}})
          end
          busy = true
          break
        end
      end
    end
    worker_status(w, busy and "busy" or "idle")
    if not busy then sys.sleep(cfg.poll) end
  end
  worker_status(w, "stopped")
  w.log("stopped", {})
  return 0
end

---------------------------------------------------------------------------
-- the supervisor

local RUN_KEYS = {"model", "spool", "destination", "aet", "port", "host", "allow", "tta", "top", "min_area", "bottom",
                  "threshold", "min_component", "sr", "overlay", "empty_seg", "workers", "threads", "log", "timeout",
                  "any_image", "chest_rules", "backoff", "refusals", "attempts", "poll", "overlay_size",
                  "on_ready"}

-- The node's identity: the model file's digest and every setting that
-- changes a result.
local function identity_of(cfg)
  local f = assert(io.open(cfg.model, "rb"))
  local bytes = f:read("a")
  f:close()
  local p = cfg.post
  return lpnx.dicom.derive_uid("lpnx node", bytes, tostring(cfg.tta), tostring(p.threshold), tostring(p.top),
                               tostring(p.min_area), tostring(p.bottom), tostring(p.min_component),
                               tostring(cfg.empty_seg), tostring(cfg.overlay_size))
end

-- Forks fn(...) as a child that dies with this process; returns its pid.
local function spawn(fn, ...)
  local parent = sys.getpid()
  local pid = sys.fork()
  if pid == 0 then
    sys.die_with_parent(parent)
    local ok, code = xpcall(fn, debug.traceback, ...)
    if not ok then
      io.stderr:write("lpnx node: ", tostring(code), "\n")
      io.stderr:flush()
      sys.exit(70)
    end
    sys.exit(code or 0)
  end
  return pid
end

-- run{model = FILE, spool = DIR, destination = "AET@HOST:PORT" | {aet, host, port},
--     aet = "LPNX", port = 11112, host = all, allow = {"AET" | "AET@HOST", ...},
--     tta, top, min_area, bottom | threshold, min_component, sr = false,
--     overlay = false, empty_seg = false, workers = 1, threads, log = FILE,
--     timeout = 30, any_image = false, chest_rules, on_ready = fn(port)}
-- Runs the node until SIGTERM or SIGINT: the current image is finished,
-- the children stop, and run returns 0. Raises on a bad setting or when
-- the port cannot be listened on.
function serve.run(opts)
  local name = "serve.run"
  if type(opts) ~= "table" then error(name .. ": expected {model = FILE, spool = DIR, destination = ...}", 2) end
  util.check_keys(name, opts, RUN_KEYS)
  local d = serve.defaults
  if type(opts.model) ~= "string" then error(name .. ": expected model = FILE", 2) end
  if type(opts.spool) ~= "string" then error(name .. ": expected spool = DIR", 2) end
  local dest = opts.destination
  if type(dest) ~= "table" then
    local ok, parsed = pcall(serve.parse_destination, dest)
    if not ok then error(name .. ": " .. parsed, 2) end
    dest = parsed
  end
  local cfg = {
    model = opts.model, destination = dest, aet = opts.aet or d.aet, port = opts.port or d.port, host = opts.host,
    allow = opts.allow, tta = opts.tta or false, sr = opts.sr or false, overlay = opts.overlay or false,
    empty_seg = opts.empty_seg or false, log = opts.log, timeout = opts.timeout or d.timeout,
    any_image = opts.any_image or false, chest_rules = opts.chest_rules, backoff = opts.backoff or d.backoff,
    refusals = opts.refusals or d.refusals, attempts = opts.attempts or d.attempts, poll = opts.poll or d.poll,
    overlay_size = opts.overlay_size or d.overlay_size,
    post = {top = opts.top, min_area = opts.min_area, bottom = opts.bottom, threshold = opts.threshold,
            min_component = opts.min_component},
  }
  local workers = util.integer_at_least(name, "workers", opts.workers or d.workers, 1)
  cfg.threads = opts.threads or math.max(1, lpnx.get_num_threads() // workers)
  util.integer_at_least(name, "threads", cfg.threads, 1)
  predict.postprocess(lpnx.zeros(1, 1), cfg.post)   -- checks the settings before any work
  local at = layout(opts.spool)
  for _, folder in ipairs {at.spool, at.incoming, at.work, at.outbox, at.failed, at.status} do
    fs.mkdir_p(folder)
  end
  -- what a killed receiver left half-written never got a success status
  for _, tmp in ipairs(entries(at.incoming, "^%.")) do os.remove(at.incoming .. "/" .. tmp) end
  cfg.identity = identity_of(cfg)
  local log = new_log(cfg.log, "node")
  sys.catch_signal("TERM")
  sys.catch_signal("INT")

  local function try_receiver()
    local r, w = sys.pipe()
    local pid = spawn(function()
      sys.close(r)
      return receiver(cfg, at, w)
    end)
    sys.close(w)
    local msg = sys.read_message(r)
    sys.close(r)
    if not msg or not msg:match("^ready ") then
      sys.kill(pid, "KILL")
      sys.waitpid(pid)
      return nil, msg and msg:gsub("^error ", "") or "the receiver exited"
    end
    return pid, tonumber(msg:match("^ready (%d+)"))
  end

  -- The port may still be held for a moment by the receiver of a node
  -- that was just killed (it dies with its supervisor, but not at once).
  local function start_receiver()
    local deadline = sys.now() + 15
    while true do
      local pid, port_or_err = try_receiver()
      if pid then return pid, port_or_err end
      if not port_or_err:match("Address already in use") or sys.now() > deadline or stopping() then
        error(("%s: cannot receive on port %s: %s"):format(name, tostring(cfg.port), port_or_err), 0)
      end
      sys.sleep(0.2)
    end
  end

  local started = utc()
  local receiver_pid, port = start_receiver()
  local pids = {}
  for k = 1, workers do pids[k] = spawn(worker, cfg, at, k, workers) end
  log("started", {{"aet", cfg.aet}, {"port", port},
                  {"destination", ("%s@%s:%d"):format(dest.aet, dest.host, dest.port)},
                  {"workers", workers}, {"threads", cfg.threads}, {"identity", cfg.identity}, {"pid", sys.getpid()}})
  if opts.on_ready then opts.on_ready(port) end
  local next_status = 0
  while not stopping() do
    local how, value = sys.waitpid(receiver_pid, true)
    if how ~= "running" then
      log("restart", {{"process", "receiver"}, {"reason", ("%s %s"):format(how, tostring(value))}})
      sys.sleep(1)
      receiver_pid = start_receiver()
    end
    for k, pid in ipairs(pids) do
      how, value = sys.waitpid(pid, true)
      if how ~= "running" then
        log("restart", {{"process", "worker" .. k}, {"reason", ("%s %s"):format(how, tostring(value))}})
        sys.sleep(1)
        pids[k] = spawn(worker, cfg, at, k, workers)
      end
    end
    if sys.now() >= next_status then
      merge_status(at, started, pids)
      next_status = sys.now() + 1
    end
    sys.sleep(0.1)
  end
  log("stopping", {})
  sys.kill(receiver_pid, "TERM")
  for _, pid in ipairs(pids) do sys.kill(pid, "TERM") end
  sys.waitpid(receiver_pid)
  for _, pid in ipairs(pids) do sys.waitpid(pid) end
  merge_status(at, started, pids)
  log("stopped", {})
  return 0
end

return serve
