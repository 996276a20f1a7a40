-- lpnx.net against DCMTK's own command-line tools (echoscu, storescu,
-- dcmodify) and against itself: a storage SCP in a thread of this process,
-- the C-STORE and C-ECHO SCU. Servers listen on port 0 (a free port the
-- system picks); every background process is stopped by its PID.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local net = lpnx.net
local sys = lpnx.sys

-- Runs a shell command; returns its exit code and its output.
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return code, out
end

local function q(s) return "'" .. s .. "'" end

-- The files of a folder (hidden ones too), sorted.
local function listing(dir)
  local _, out = sh("ls -A " .. q(dir))
  local names = {}
  for name in out:gmatch("[^\n]+") do
    if not name:match("^exit=") then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- Events taken from a server but not yet looked at, per server.
local backlog = setmetatable({}, {__mode = "k"})

-- Events until one of kind arrives (or 10 s pass, which fails the spec);
-- returns that event and the events before it, in order. Later events
-- stay for the next call.
local function wait_for(srv, kind)
  local queue = backlog[srv] or {}
  backlog[srv] = queue
  local seen = {}
  local deadline = sys.now() + 10
  repeat
    for _, e in ipairs(srv:events()) do queue[#queue + 1] = e end
    while #queue > 0 do
      local e = table.remove(queue, 1)
      seen[#seen + 1] = e
      if e.kind == kind then return e, seen end
    end
    srv:wait(0.2)
  until sys.now() > deadline
  local kinds = {}
  for _, e in ipairs(seen) do kinds[#kinds + 1] = e.kind .. (e.reason and (" (" .. e.reason .. ")") or "") end
  error(("no %s event within 10 s; saw: %s"):format(kind, table.concat(kinds, ", ")), 2)
end

-- Every event not yet looked at (the backlog first), oldest first.
local function taken(srv)
  local events = backlog[srv] or {}
  backlog[srv] = {}
  for _, e in ipairs(srv:events()) do events[#events + 1] = e end
  return events
end

-- A secondary capture image with known pixels; returns its path and UIDs.
local function image(dir, name, size, jpeg, seed)
  lpnx.manual_seed(seed or 1)
  local img = (lpnx.rand(1, size, size) * 255):floor()
  local path = dir .. "/" .. name
  local uids = lpnx.dicom.write(path, img, {patient_id = "NET"}, {jpeg = jpeg})
  return path, uids
end

local function storescu(port, files, opts)
  opts = opts or ""
  return sh(("storescu -to 10 -ta 10 -td 10 %s 127.0.0.1 %d %s"):format(opts, port, table.concat(files, " ")))
end

describe("lpnx.net storage SCP", function()
  local dir, spool, srv, input
  before_each(function()
    dir = h.tmpdir()
    spool = dir .. "/spool"
    input = dir .. "/in"
    assert(os.execute("mkdir -p " .. q(spool) .. " " .. q(input)))
  end)
  after_each(function()
    if srv then srv:close() end
    srv = nil
    h.rmdir(dir)
  end)

  it("answers echoscu with an association and an echo event", function()
    srv = net.listen{aet = "LPNX", port = 0, host = "127.0.0.1", spool = spool}
    assert.is_true(srv:port() > 0)
    local code, out = sh(("echoscu -to 10 -aet MOD -aec LPNX 127.0.0.1 %d"):format(srv:port()))
    assert.are.equal(0, code, out)
    local e, seen = wait_for(srv, "echo")
    assert.are.equal("association", seen[1].kind)
    assert.are.equal("MOD", seen[1].calling_aet)
    assert.are.equal("LPNX", seen[1].called_aet)
    assert.are.equal("127.0.0.1", seen[1].peer)
    assert.are.equal("MOD", e.calling_aet)
    assert.are.same({}, listing(spool))
  end)

  it("stores what storescu sends, uncompressed and JPEG, as files that read back to the same pixels", function()
    local plain, plain_uids = image(input, "plain.dcm", 64, false, 1)
    local jpeg, jpeg_uids = image(input, "jpeg.dcm", 64, true, 2)
    srv = net.listen{aet = "LPNX", port = 0, spool = spool, timeout = 10}
    local code, out = storescu(srv:port(), {plain, jpeg}, "-xy -aet MOD -aec LPNX")
    assert.are.equal(0, code, out)
    local first = wait_for(srv, "received")
    local second = wait_for(srv, "received")
    assert.are.equal(plain_uids.sop_instance_uid, first.sop_instance_uid)
    assert.are.equal(jpeg_uids.sop_instance_uid, second.sop_instance_uid)
    assert.are.equal("1.2.840.10008.5.1.4.1.1.7", first.sop_class_uid)
    assert.are.equal("1.2.840.10008.1.2.4.50", second.transfer_syntax) -- compressed stays compressed
    assert.are.equal("MOD", first.calling_aet)
    assert.are.equal("127.0.0.1", first.peer)
    local names = listing(spool)
    assert.are.same({"000000000001_" .. plain_uids.sop_instance_uid .. ".dcm",
                     "000000000002_" .. jpeg_uids.sop_instance_uid .. ".dcm"}, names)
    assert.are.equal(spool .. "/" .. names[1], first.path)
    assert.are.equal(spool .. "/" .. names[2], second.path)
    for _, pair in ipairs{{plain, first}, {jpeg, second}} do
      local sent, sent_meta = lpnx.dicom.read(pair[1])
      local got, meta = lpnx.dicom.read(pair[2].path)
      assert.is_true(got:equal(sent))
      assert.are.equal(sent_meta.sop_instance_uid, meta.sop_instance_uid)
      assert.are.equal(sent_meta.transfer_syntax, meta.transfer_syntax)
      local f = assert(io.open(pair[2].path, "rb"))
      assert.are.equal(pair[2].bytes, f:seek("end"))
      f:close()
    end
  end)

  it("numbers files after the largest number in the spool, across a restart", function()
    local a = image(input, "a.dcm", 16, false, 3)
    local b, b_uids = image(input, "b.dcm", 16, false, 4)
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    assert.are.equal(0, (storescu(srv:port(), {a}, "-aet MOD -aec LPNX")))
    wait_for(srv, "received")
    srv:close()
    srv:close() -- twice is fine
    -- a file from elsewhere with a larger number, and a temporary file a killed server left
    assert(os.execute(("cp %s %s/000000000041_9.9.dcm && touch %s/.tmp-AbC123"):format(q(a), q(spool), q(spool))))
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    assert.are.equal(0, (storescu(srv:port(), {b}, "-aet MOD -aec LPNX")))
    local e = wait_for(srv, "received")
    assert.are.equal(spool .. "/000000000042_" .. b_uids.sop_instance_uid .. ".dcm", e.path)
    local names = listing(spool)
    assert.are.equal(3, #names) -- the leftover temporary file is gone
    assert.matches("^000000000001_", names[1])
    assert.are.equal("000000000041_9.9.dcm", names[2])
    assert.matches("^000000000042_", names[3])
  end)

  it("rejects calling AE titles the allow list does not name, and takes AET@HOST", function()
    local a, a_uids = image(input, "a.dcm", 16, false, 5)
    srv = net.listen{aet = "LPNX", port = 0, spool = spool, allow = {"ORTHANC", "MOD@127.0.0.1", "CT@10.255.1.2"}}
    local code = storescu(srv:port(), {a}, "-aet STRANGER -aec LPNX")
    assert.are_not.equal(0, code)
    local e = wait_for(srv, "rejected")
    assert.are.equal("STRANGER", e.calling_aet)
    assert.are.equal("127.0.0.1", e.peer)
    assert.matches("calling AE title 'STRANGER' not allowed", e.reason, 1, true)
    assert.are_not.equal(0, (storescu(srv:port(), {a}, "-aet CT -aec LPNX"))) -- the right AE from another host
    assert.matches("'CT' not allowed", wait_for(srv, "rejected").reason, 1, true)
    assert.are.same({}, listing(spool))
    assert.are.equal(0, (storescu(srv:port(), {a}, "-aet MOD -aec LPNX")))
    assert.are.equal(a_uids.sop_instance_uid, wait_for(srv, "received").sop_instance_uid)
    -- a called AE title other than the node's is rejected too
    assert.are_not.equal(0, (storescu(srv:port(), {a}, "-aet MOD -aec OTHER")))
    assert.matches("called AE title 'OTHER'", wait_for(srv, "rejected").reason, 1, true)
  end)

  it("stores any storage SOP class, a CT image for one", function()
    local ct = image(input, "ct.dcm", 16, false, 6)
    local code, out = sh(("dcmodify -nb -m '(0008,0016)=1.2.840.10008.5.1.4.1.1.2' "
                          .. "-i '(0008,0060)=CT' %s"):format(q(ct)))
    assert.are.equal(0, code, out)
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    code, out = storescu(srv:port(), {ct}, "-aet MOD -aec LPNX")
    assert.are.equal(0, code, out)
    local e = wait_for(srv, "received")
    assert.are.equal("1.2.840.10008.5.1.4.1.1.2", e.sop_class_uid)
    local _, meta = lpnx.dicom.read(e.path)
    assert.are.equal("1.2.840.10008.5.1.4.1.1.2", meta.sop_class_uid)
    assert.are.equal("CT", meta.modality)
  end)

  it("refuses a C-STORE it cannot write (a full disk) with 0xA700, leaves no file, goes on once there is room",
     function()
    local mnt = dir .. "/small"
    assert(os.execute("mkdir -p " .. q(mnt)))
    local code, out = sh("mount -t tmpfs -o size=256k tmpfs " .. q(mnt))
    if code ~= 0 then
      pending("mounting a tmpfs is not permitted here: " .. out)
      return
    end
    local ok, err = pcall(function()
      local spool_dir = mnt .. "/spool"
      assert(os.execute("mkdir " .. q(spool_dir)))
      local a, a_uids = image(input, "a.dcm", 64, false, 7)
      srv = net.listen{aet = "LPNX", port = 0, spool = spool_dir}
      sh("dd if=/dev/zero of=" .. q(mnt .. "/filler") .. " bs=4k") -- until the disk is full
      code, out = storescu(srv:port(), {a}, "-aet MOD -aec LPNX")
      assert.are_not.equal(0, code, out) -- storescu saw a failure status
      local e = wait_for(srv, "failed")
      assert.are.equal(0xA700, e.status)
      assert.are.equal(a_uids.sop_instance_uid, e.sop_instance_uid)
      assert.matches("No space left on device", e.reason, 1, true)
      assert.are.same({}, listing(spool_dir)) -- no file, no temporary file
      assert(os.remove(mnt .. "/filler"))
      code, out = storescu(srv:port(), {a}, "-aet MOD -aec LPNX")
      assert.are.equal(0, code, out)
      local got = wait_for(srv, "received")
      assert.are.equal(a_uids.sop_instance_uid, got.sop_instance_uid)
      assert.are.equal(1, #listing(spool_dir))
      srv:close()
    end)
    if srv then srv:close() end
    sh("umount " .. q(mnt))
    assert(ok, err)
  end)

  it("survives garbage bytes on its port and keeps serving", function()
    srv = net.listen{aet = "LPNX", port = 0, host = "127.0.0.1", spool = spool}
    local code, out = sh(("bash -c \"printf 'garbage' > /dev/tcp/127.0.0.1/%d\""):format(srv:port()))
    assert.are.equal(0, code, out)
    sh(("bash -c \"head -c 70000 /dev/urandom > /dev/tcp/127.0.0.1/%d\""):format(srv:port())) -- reset midway
    wait_for(srv, "error")
    code, out = sh(("echoscu -to 10 -aet MOD -aec LPNX 127.0.0.1 %d"):format(srv:port()))
    assert.are.equal(0, code, out)
    wait_for(srv, "echo")
    assert.are.same({}, listing(spool))
  end)

  it("survives a sender killed mid-transfer: no file is kept, the next sender is served", function()
    local big = image(input, "big.dcm", 4000, false, 8) -- 16 MB uncompressed
    srv = net.listen{aet = "LPNX", port = 0, spool = spool, timeout = 10}
    local g = lpnx.Generator(9)
    local caught = false
    -- A transfer can end before the kill lands, so rounds go on until one
    -- was caught mid-way (a received file of a late round is removed).
    for round = 1, 20 do
      local base = ("%s/job%d"):format(dir, round)
      os.execute(("(storescu -aet MOD -aec LPNX -pdu 4096 127.0.0.1 %d %s > %s.log 2>&1 & echo $! > %s.pid)"
                  .. " 2>/dev/null"):format(srv:port(), q(big), q(base), q(base)))
      local pid
      for _ = 1, 500 do
        local f = io.open(base .. ".pid")
        pid = f and tonumber(f:read("a"))
        if f then f:close() end
        if pid then break end
        sys.sleep(0.01)
      end
      assert(pid, "storescu did not start")
      wait_for(srv, "association")
      sys.sleep(g:uniform(0, 0.02))
      sys.kill(pid, "KILL")
      local deadline = sys.now() + 10
      local done
      while not done and sys.now() < deadline do
        for _, e in ipairs(taken(srv)) do
          if e.kind == "received" then
            os.remove(e.path)
            done = "late"
          elseif e.kind == "error" then
            done = "caught"
          end
        end
        if not done then srv:wait(0.2) end
      end
      assert(done, "neither a received file nor an error after the kill")
      if done == "caught" then
        caught = true
        break
      end
    end
    assert.is_true(caught, "no transfer was caught mid-way in 20 rounds")
    assert.are.same({}, listing(spool))
    local small, small_uids = image(input, "small.dcm", 16, false, 10)
    local code, out = storescu(srv:port(), {small}, "-aet MOD -aec LPNX")
    assert.are.equal(0, code, out)
    assert.are.equal(small_uids.sop_instance_uid, wait_for(srv, "received").sop_instance_uid)
  end)

  it("runs in a thread that blocks every signal (SIGTERM and SIGINT go to the Lua side)", function()
    -- threads of this process whose SigBlk has SIGINT (2), SIGPIPE (13) and SIGTERM (15)
    local function blocking_threads()
      local n = 0
      local _, tasks = sh("ls /proc/" .. sys.getpid() .. "/task")
      for tid in tasks:gmatch("(%d+)\n") do
        local f = io.open(("/proc/%d/task/%s/status"):format(sys.getpid(), tid))
        local mask = f and tonumber(f:read("a"):match("SigBlk:%s*(%x+)"), 16)
        if f then f:close() end
        if mask and mask & (1 << 1) ~= 0 and mask & (1 << 12) ~= 0 and mask & (1 << 14) ~= 0 then n = n + 1 end
      end
      return n
    end
    local before = blocking_threads()
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    assert.are.equal(before + 1, blocking_threads())
    srv:close()
    assert.are.equal(before, blocking_threads())
  end)
end)

describe("lpnx.net SCU", function()
  local dir, srv, other
  before_each(function() dir = h.tmpdir() end)
  after_each(function()
    if srv then srv:close() end
    if other then other:close() end
    srv, other = nil, nil
    h.rmdir(dir)
  end)

  it("stores files into another lpnx server of the same process, each in its own transfer syntax", function()
    assert(os.execute(("mkdir -p %s/s1 %s/s2"):format(q(dir), q(dir))))
    srv = net.listen{aet = "LPNX", port = 0, spool = dir .. "/s1"}
    other = net.listen{aet = "PACS", port = 0, spool = dir .. "/s2"}
    assert.are_not.equal(srv:port(), other:port())
    local plain, plain_uids = image(dir, "plain.dcm", 32, false, 11)
    local jpeg, jpeg_uids = image(dir, "jpeg.dcm", 32, true, 12)
    local results, err = net.store{host = "127.0.0.1", port = other:port(), aet = "LPNX", called = "PACS",
                                   files = {plain, dir .. "/missing.dcm", jpeg}, timeout = 10}
    assert.is_table(results, err)
    assert.are.equal(3, #results)
    assert.are.same({ok = true, status = 0, sop_instance_uid = plain_uids.sop_instance_uid}, results[1])
    assert.is_false(results[2].ok)
    assert.is_nil(results[2].status)
    assert.matches("missing.dcm: cannot open (No such file or directory)", results[2].reason, 1, true)
    assert.are.same({ok = true, status = 0, sop_instance_uid = jpeg_uids.sop_instance_uid}, results[3])
    local a = wait_for(other, "received")
    local b = wait_for(other, "received")
    assert.are.equal("LPNX", a.calling_aet)
    assert.are.equal("1.2.840.10008.1.2.4.50", b.transfer_syntax)
    assert.is_true(lpnx.dicom.read(b.path):equal(lpnx.dicom.read(jpeg)))
    assert.are.same({}, srv:events()) -- the other server saw nothing
  end)

  it("reports a refused connection and a rejected association with host:port", function()
    local spool = dir .. "/s"
    assert(os.execute("mkdir -p " .. q(spool)))
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    local gone = net.listen{aet = "GONE", port = 0, spool = spool}
    local free = gone:port()
    gone:close() -- nothing listens there now
    local file = image(dir, "a.dcm", 16, false, 13)
    local results, err = net.store{host = "127.0.0.1", port = free, aet = "ME", called = "LPNX", files = {file},
                                   timeout = 5}
    assert.is_nil(results)
    assert.matches("127.0.0.1:" .. free .. ": ", err, 1, true)
    assert.matches("Connection refused", err, 1, true)
    local ok
    ok, err = net.echo{host = "127.0.0.1", port = free, aet = "ME", called = "LPNX", timeout = 5}
    assert.is_nil(ok)
    assert.matches("127.0.0.1:" .. free .. ": .*Connection refused", err)
    results, err = net.store{host = "127.0.0.1", port = srv:port(), aet = "ME", called = "NOTME", files = {file}}
    assert.is_nil(results)
    assert.matches("127.0.0.1:" .. srv:port() .. ": association rejected", err, 1, true)
    assert.matches("Called AE Title Not Recognized", err, 1, true)
  end)

  it("echoes", function()
    local spool = dir .. "/s"
    assert(os.execute("mkdir -p " .. q(spool)))
    srv = net.listen{aet = "LPNX", port = 0, spool = spool}
    assert.is_true(net.echo{host = "127.0.0.1", port = srv:port(), aet = "ME", called = "LPNX"})
    local e = wait_for(srv, "echo")
    assert.are.equal("ME", e.calling_aet)
  end)
end)

describe("lpnx.net arguments", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rmdir(dir) end)

  it("are checked with clear errors", function()
    assert.has_error(function() net.listen("LPNX") end,
                     "bad argument #1 to 'listen' (expected a table of options, got string)")
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, spool = dir, colour = 1} end,
                     "bad argument #1 to 'listen' (unknown option 'colour' (expected one of aet, port, host, spool, "
                     .. "allow, timeout))")
    assert.has_error(function() net.listen{aet = "MUCH_TOO_LONG_TITLE", port = 0, spool = dir} end,
                     "bad argument #1 to 'listen' (aet 'MUCH_TOO_LONG_TITLE' is not a valid AE title (1..16 printable "
                     .. "ASCII characters, no backslash, not only spaces))")
    assert.has_error(function() net.listen{port = 0, spool = dir} end, "bad argument #1 to 'listen' (aet is required)")
    assert.has_error(function() net.listen{aet = "LPNX", port = 70000, spool = dir} end,
                     "bad argument #1 to 'listen' (port must be an integer in 0..65535, got 70000)")
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, spool = dir, allow = "MOD"} end,
                     "bad argument #1 to 'listen' (allow must be an array of strings, got string)")
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, spool = dir, allow = {"MOD@"}} end,
                     "bad argument #1 to 'listen' (allow[1] 'MOD@' is not an AE title or AET@HOST)")
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, spool = dir .. "/missing"} end,
                     "lpnx.net.listen: spool " .. dir .. "/missing: No such file or directory")
    local f = dir .. "/file"
    assert(io.open(f, "w")):close()
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, spool = f} end,
                     "lpnx.net.listen: spool " .. f .. ": not a folder")
    assert.has_error(function() net.listen{aet = "LPNX", port = 0, host = "nowhere", spool = dir} end,
                     "lpnx.net.listen: host 'nowhere' is not an IPv4 address")
    local srv = net.listen{aet = "LPNX", port = 0, spool = dir}
    local ok, err = pcall(net.listen, {aet = "LPNX", port = srv:port(), spool = dir})
    srv:close()
    assert.is_false(ok)
    assert.are.equal(("lpnx.net.listen: port %d: Address already in use"):format(srv:port()), err)
    assert.has_error(function() net.store{host = "127.0.0.1", port = 104, aet = "ME", called = "X"} end,
                     "bad argument #1 to 'store' (files is required)")
    assert.has_error(function() net.store{host = "127.0.0.1", port = 104, aet = "ME", called = "X", files = {1}} end,
                     "bad argument #1 to 'store' (files[1] must be a string, got number)")
    assert.has_error(function() net.echo{host = "127.0.0.1", port = 0, aet = "ME", called = "X"} end,
                     "bad argument #1 to 'echo' (port must be an integer in 1..65535, got 0)")
    assert.has_error(function() net.echo{host = "127.0.0.1", port = 104, aet = "A\\B", called = "X"} end,
                     "bad argument #1 to 'echo' (aet 'A\\B' is not a valid AE title (1..16 printable ASCII characters, "
                     .. "no backslash, not only spaces))")
    assert.has_error(function() net.echo{host = "127.0.0.1", port = 104, aet = "ME", called = "X", timeout = 0} end,
                     "bad argument #1 to 'echo' (timeout must be an integer in 1..86400, got 0)")
  end)
end)
