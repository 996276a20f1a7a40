-- A private PACS for the node's specs: Orthanc (Debian's orthanc package)
-- on free loopback ports with a temporary storage folder, the routing
-- script of examples/orthanc/, DCMTK's storescu as the modality, and the
-- node (examples/serve.lua) as a process of its own. Every process started
-- here is stopped by its PID.
local lpnx = require "lpnx"
local cjson = require "cjson"

local sys = lpnx.sys
local M = {}

local ROOT = (debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/support/[^/]*$")) or "."
if ROOT:sub(1, 1) ~= "/" then ROOT = require("lfs").currentdir() .. (ROOT == "." and "" or "/" .. ROOT) end
ROOT = ROOT:gsub("/%./?$", ""):gsub("/%.$", "")
M.ROOT = ROOT

local q = require("spec.support.helpers").quote
M.q = q

-- Other programs (Orthanc, curl, DCMTK's tools) run without the sanitizer
-- a make ASAN=1 run preloads; the node itself keeps it.
local PLAIN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "
M.PLAIN = PLAIN

-- Runs a shell command; returns its output (stdout and stderr) and exit code.
function M.sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)\n$"))
  return out:gsub("exit=%d+\n$", ""), code
end

-- A TCP port nothing listens on now (the OS's choice, given back at once).
function M.free_port()
  local srv = lpnx.net.listen{aet = "PORTPROBE", port = 0, host = "127.0.0.1", spool = "/tmp"}
  local port = srv:port()
  srv:close()
  return port
end

-- Starts cmd in the background with its output to log; returns its PID.
function M.spawn(cmd, log)
  local out = M.sh(("sh -c %s > %s 2>&1 < /dev/null & echo $!"):format(q("exec " .. cmd), q(log)))
  return assert(tonumber(out:match("(%d+)%s*$")), out)
end

function M.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z" and state ~= "X"
end

-- Stops pid: TERM, then KILL after seconds; reaps it when it is our child.
function M.stop(pid, seconds)
  if not pid then return end
  M.sh("kill -TERM " .. pid)
  local deadline = sys.now() + (seconds or 10)
  while M.alive(pid) and sys.now() < deadline do sys.sleep(0.05) end
  if M.alive(pid) then M.sh("kill -KILL " .. pid) end
  while M.alive(pid) do sys.sleep(0.02) end
end

function M.kill9(pid)
  M.sh("kill -KILL " .. pid)
  while M.alive(pid) do sys.sleep(0.01) end
end

-- Waits until fn() returns a true value (returned) or seconds pass (nil).
function M.wait_until(fn, seconds, step)
  local deadline = sys.now() + (seconds or 30)
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(step or 0.1)
  until sys.now() > deadline
  return fn()
end

function M.read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The lines of a node log with event ev.
function M.events(log, ev)
  local list = {}
  for line in M.read(log):gmatch("[^\n]+") do
    if line:match("^%S+ " .. ev .. " ") or line:match("^%S+ " .. ev .. "$") then list[#list + 1] = line end
  end
  return list
end

---------------------------------------------------------------------------
-- Orthanc

local Orthanc = {}
Orthanc.__index = Orthanc

-- orthanc{dir = DIR, node_port = P, node_aet = "LPNX"} -> a running Orthanc
-- with the example configuration, its ports and storage made private.
function M.orthanc(opts)
  local cfg = cjson.decode(M.read(ROOT .. "/examples/orthanc/orthanc.json"))
  local o = setmetatable({dir = opts.dir, http = M.free_port(), dicom = M.free_port(), aet = cfg.DicomAet}, Orthanc)
  assert(os.execute("mkdir -p " .. q(opts.dir .. "/db")))
  cfg.StorageDirectory, cfg.IndexDirectory = opts.dir .. "/db", opts.dir .. "/db"
  cfg.HttpPort, cfg.DicomPort = o.http, o.dicom
  cfg.DicomModalities = {lpnx = {opts.node_aet or "LPNX", "127.0.0.1", opts.node_port}}
  cfg.LuaScripts = {ROOT .. "/examples/orthanc/route.lua"}
  cfg.Plugins = nil -- an empty list, which cjson would write back as an object
  local f = assert(io.open(opts.dir .. "/orthanc.json", "w"))
  f:write(cjson.encode(cfg))
  f:close()
  o.log = opts.dir .. "/orthanc.log"
  o.pid = M.spawn(PLAIN .. "Orthanc " .. q(opts.dir .. "/orthanc.json"), o.log)
  local up = M.wait_until(function() return o:get("/system") or not M.alive(o.pid) end, 30)
  if not up or not M.alive(o.pid) then
    M.stop(o.pid)
    error("Orthanc did not start: " .. M.read(o.log))
  end
  return o
end

function Orthanc:url(path) return ("http://127.0.0.1:%d%s"):format(self.http, path) end

-- GET path -> decoded JSON, or nil
function Orthanc:get(path)
  local out, code = M.sh(PLAIN .. "curl -sf " .. q(self:url(path)))
  if code ~= 0 then return nil end
  local ok, v = pcall(cjson.decode, out)
  return ok and v or nil
end

function Orthanc:post(path, body)
  local out, code = M.sh((PLAIN .. "curl -sf -X POST --data-binary %s %s"):format(q(body), q(self:url(path))))
  if code ~= 0 then return nil, out end
  local ok, v = pcall(cjson.decode, out)
  return ok and v or out
end

-- Instances whose tags match query ({Modality = "SEG"}), expanded.
function Orthanc:find(query)
  return self:post("/tools/find", cjson.encode {Level = "Instance", Query = query, Expand = true}) or {}
end

-- Downloads instance id to path.
function Orthanc:download(id, path)
  local _, code = M.sh((PLAIN .. "curl -sf -o %s %s"):format(q(path), q(self:url("/instances/" .. id .. "/file"))))
  assert(code == 0, "download of " .. id .. " failed")
  return path
end

function Orthanc:count(modality)
  return #self:find({Modality = modality})
end

function Orthanc:stop() M.stop(self.pid) end

-- storescu as a modality: sends files to host:port; returns output, exit code.
function M.storescu(port, files, opts)
  opts = opts or {}
  local list = {}
  for i, f in ipairs(files) do list[i] = q(f) end
  return M.sh((PLAIN .. "storescu -xy -aet %s -aec %s 127.0.0.1 %d %s")
              :format(opts.aet or "MODALITY", opts.called or "ORTHANC", port, table.concat(list, " ")))
end

---------------------------------------------------------------------------
-- the node

-- node{spool = DIR, port = P, destination = "AET@127.0.0.1:PORT", model = FILE,
--      log = FILE, args = {...}} -> pid, once its log says it started
function M.node(opts)
  local args = {"lua5.4", q(ROOT .. "/examples/serve.lua"), "--model", q(opts.model), "--spool", q(opts.spool),
                "--port", opts.port, "--destination", opts.destination, "--log", q(opts.log),
                "--host", "127.0.0.1"}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = q(a) end
  local before = #M.events(opts.log, "started")
  local pid = M.spawn(table.concat(args, " "), opts.out or (opts.log .. ".out"))
  local started = M.wait_until(function()
    return #M.events(opts.log, "started") > before or not M.alive(pid)
  end, 60)
  if not started or not M.alive(pid) then
    M.stop(pid)
    error("the node did not start: " .. M.read(opts.out or (opts.log .. ".out")))
  end
  return pid
end

return M
