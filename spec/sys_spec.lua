-- lpnx.sys: processes, pipes, frames, signals, clocks and files.
-- Every child ends with sys.exit and never returns into the spec runner;
-- its body runs under pcall and any error becomes exit code 99 (its text on
-- stderr). Children call lpnx.set_num_threads(1) first: the parent has run
-- OpenMP loops, and libgomp is not fork-safe with several threads.
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"
local sys = lpnx.sys

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Forks a child running body(); its exit code is body's return value (0
-- when none), or 99 when body raised.
local function spawn(body)
  local pid = sys.fork()
  if pid == 0 then
    lpnx.set_num_threads(1)
    local ok, code = pcall(body)
    if not ok then
      io.stderr:write("child failed: ", tostring(code), "\n")
      io.stderr:flush()
      sys.exit(99)
    end
    sys.exit(code or 0)
  end
  return pid
end

-- Waits for pid at most seconds (polling with nohang); a child still
-- running then is killed and the spec fails.
local function wait_for(pid, seconds)
  local deadline = sys.now() + (seconds or 10)
  while true do
    local how, value = sys.waitpid(pid, true)
    if how ~= "running" then return how, value end
    if sys.now() > deadline then
      sys.kill(pid, "KILL")
      sys.waitpid(pid)
      error(("child %d still running after %g s: killed"):format(pid, seconds or 10))
    end
    sys.sleep(0.005)
  end
end

-- Opens a second handle on a pipe end (Linux /dev/fd), to write raw bytes
-- that are no valid frame.
local function raw_writer(fd)
  return assert(io.open("/dev/fd/" .. fd, "wb"))
end

local function shape_of(t)
  return table.concat(t:size(), "x")
end

describe("lpnx.sys messages between processes", function()
  it("round-trips messages parent -> child -> parent", function()
    local to_child_r, to_child_w = sys.pipe()
    local to_parent_r, to_parent_w = sys.pipe()
    local pid = spawn(function()
      sys.close(to_child_w)
      sys.close(to_parent_r)
      local n = 0
      while true do
        local m = sys.read_message(to_child_r)
        if m == nil then break end
        n = n + 1
        sys.write_message(to_parent_w, m:reverse())
      end
      return n
    end)
    sys.close(to_child_r)
    sys.close(to_parent_w)
    local big = {}
    for i = 1, 100000 do big[i] = string.char(i % 251) end
    local sent = {"hello", "", "a\0b\0c", table.concat(big), ("x"):rep(65536)}
    for _, m in ipairs(sent) do
      sys.write_message(to_child_w, m)
      assert.are.equal(m:reverse(), sys.read_message(to_parent_r))
    end
    sys.close(to_child_w)
    assert.is_nil(sys.read_message(to_parent_r))
    sys.close(to_parent_r)
    assert.are.same({"exited", #sent}, {wait_for(pid)})
  end)

  it("round-trips tensors of several shapes, the child doubling them", function()
    local to_child_r, to_child_w = sys.pipe()
    local to_parent_r, to_parent_w = sys.pipe()
    local pid = spawn(function()
      sys.close(to_child_w)
      sys.close(to_parent_r)
      while true do
        local t = sys.read_tensor(to_child_r)
        if t == nil then break end
        sys.write_tensor(to_parent_w, t * 2)
      end
      -- a tensor made in the child, and a strided view (copied on write)
      sys.write_tensor(to_parent_w, lpnx.arange(6):view(2, 3):t())
      return 0
    end)
    sys.close(to_child_r)
    sys.close(to_parent_w)
    lpnx.manual_seed(7)
    local shapes = {{5}, {0}, {3, 0, 2}, {}, {2, 3, 64, 64}, {1, 1, 1, 1, 1, 1, 1, 2}, {7, 3}}
    for _, s in ipairs(shapes) do
      local t = #s == 0 and lpnx.tensor(1.25) or lpnx.randn(s)
      sys.write_tensor(to_child_w, t)
      local back = sys.read_tensor(to_parent_r)
      assert.are.same(t:size(), back:size())
      assert.are.equal(#s, back:dim())
      assert.is_true(back:is_contiguous())
      if t:numel() > 0 then
        -- doubling is exact in float32, so the values must match exactly
        assert.are.equal(0, helpers.max_diff(back, t * 2), "shape " .. shape_of(t))
      end
    end
    -- a non-contiguous input goes through a copy
    local tr = lpnx.arange(12):view(3, 4):t()
    sys.write_tensor(to_child_w, tr)
    assert.are.same({{0, 8, 16}, {2, 10, 18}, {4, 12, 20}, {6, 14, 22}}, sys.read_tensor(to_parent_r):totable())
    sys.close(to_child_w)
    assert.are.same({{0, 3}, {1, 4}, {2, 5}}, sys.read_tensor(to_parent_r):totable())
    assert.is_nil(sys.read_tensor(to_parent_r))
    sys.close(to_parent_r)
    assert.are.same({"exited", 0}, {wait_for(pid)})
  end)

  it("a child that exits without writing gives nil at end of file, twice", function()
    local r, w = sys.pipe()
    local pid = spawn(function() return 0 end)
    sys.close(w)
    assert.are.same({"exited", 0}, {wait_for(pid)})
    assert.is_nil(sys.read_message(r))
    assert.is_nil(sys.read_tensor(r))
    sys.close(r)
  end)
end)

describe("lpnx.sys rejects bad frames", function()
  -- Writes raw bytes into a fresh pipe, closes the writing end, and returns
  -- the error of reading a frame with reader.
  local function read_raw(bytes, reader)
    local r, w = sys.pipe()
    local f = raw_writer(w)
    f:write(bytes)
    f:close()
    sys.close(w)
    local err = message(reader, r)
    sys.close(r)
    return err
  end

  it("a header cut short", function()
    assert.are.equal("lpnx.sys.read_message: truncated message: the length header ends after 3 of 8 bytes",
      read_raw("\1\0\0", sys.read_message))
  end)

  it("a body cut short", function()
    assert.are.equal("lpnx.sys.read_message: truncated message: expected 10 bytes, got 4",
      read_raw(string.pack("<I8", 10) .. "abcd", sys.read_message))
  end)

  it("a length past the 1 GiB guard (nothing allocated)", function()
    assert.are.equal(
      "lpnx.sys.read_message: corrupt message: length 1099511627776 exceeds the limit of 1073741824 bytes",
      read_raw(string.pack("<I8", 1 << 40), sys.read_message))
    assert.matches("corrupt message: length 18446744073709551615 exceeds",
      read_raw(string.pack("<i8", -1), sys.read_message))
  end)

  it("tensor frames: bad ndim, sizes not matching the length, cut data", function()
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: 9 dims (expected 0 to 8)",
      read_raw(string.pack("<I8I8", 8 + 9 * 8, 9), sys.read_tensor))
    -- (2,3) needs 8 + 16 + 24 bytes, not 8 + 16 + 20
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: length 44 does not fit a 2x3 tensor",
      read_raw(string.pack("<I8I8i8i8", 44, 2, 2, 3), sys.read_tensor))
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: length 16 is too short for 2 sizes",
      read_raw(string.pack("<I8I8", 16, 2), sys.read_tensor))
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: size -1 of dim 2",
      read_raw(string.pack("<I8I8i8i8", 8 + 16 + 24, 2, 2, -1), sys.read_tensor))
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: 18446744073709551615 dims (expected 0 to 8)",
      read_raw(string.pack("<I8i8", 16, -1), sys.read_tensor))
    assert.are.equal("lpnx.sys.read_tensor: truncated message: expected 24 bytes, got 8",
      read_raw(string.pack("<I8I8i8i8ff", 8 + 16 + 24, 2, 2, 3, 1, 2), sys.read_tensor))
    assert.are.equal("lpnx.sys.read_tensor: corrupt tensor frame: length 4 is not in 8..1073741824",
      read_raw(string.pack("<I8", 4), sys.read_tensor))
  end)

  it("a message frame read as a tensor is refused", function()
    local r, w = sys.pipe()
    sys.write_message(w, "not a tensor")
    sys.close(w)
    assert.matches("corrupt tensor frame", message(sys.read_tensor, r))
    sys.close(r)
  end)

  it("a frame written by write_tensor has the documented layout", function()
    local r, w = sys.pipe()
    sys.write_tensor(w, lpnx.tensor{{1, 2, 3}, {4, 5, 6}})
    sys.close(w)
    local f = assert(io.open("/dev/fd/" .. r, "rb"))
    local bytes = f:read("a")
    f:close()
    sys.close(r)
    assert.are.equal(8 + 8 + 16 + 24, #bytes)
    local fields = {string.unpack("<I8I8i8i8ffffff", bytes)}
    fields[#fields] = nil -- the position string.unpack returns last
    assert.are.same({48, 2, 2, 3, 1, 2, 3, 4, 5, 6}, fields)
  end)
end)

describe("lpnx.sys processes", function()
  it("waitpid reports exit codes", function()
    for _, code in ipairs({0, 3, 255}) do
      local pid = spawn(function() return code end)
      assert.are.same({"exited", code}, {wait_for(pid)})
    end
    -- pid -1 waits for any child and says which one ended
    local pid = spawn(function() return 4 end)
    assert.are.same({"exited", 4, pid}, {sys.waitpid(-1)})
  end)

  it("waitpid with nohang says running, kill reports signaled", function()
    local pid = spawn(function()
      sys.sleep(10)
      return 0
    end)
    assert.are.equal("running", sys.waitpid(pid, true))
    sys.kill(pid, "KILL")
    assert.are.same({"signaled", sys.signals.KILL}, {wait_for(pid)})
    assert.are.equal(9, sys.signals.KILL)

    pid = spawn(function()
      sys.sleep(10)
      return 0
    end)
    sys.kill(pid, 15)
    assert.are.same({"signaled", 15}, {wait_for(pid)})
  end)

  it("a child caught TERM sees it pending and shuts down cleanly", function()
    local r, w = sys.pipe()
    local pid = spawn(function()
      sys.close(r)
      sys.catch_signal("TERM")
      sys.write_message(w, "ready")
      local deadline = sys.now() + 5
      while not sys.signal_pending("TERM") do
        if sys.now() > deadline then return 1 end
        sys.sleep(0.002)
      end
      return 42
    end)
    sys.close(w)
    assert.are.equal("ready", sys.read_message(r))
    sys.close(r)
    sys.kill(pid, "TERM")
    assert.are.same({"exited", 42}, {wait_for(pid)})
  end)

  it("a child of a multi-threaded parent runs a 1024x1024 op after set_num_threads(1)", function()
    lpnx.manual_seed(3)
    local a = lpnx.rand(1024, 1024)
    local b = lpnx.rand(1024, 1024)
    local expected = lpnx.matmul(a, b) + a -- the parent's OpenMP pool is up now
    local r, w = sys.pipe()
    local pid = spawn(function()
      sys.close(r)
      sys.write_tensor(w, lpnx.matmul(a, b) + a)
      return 0
    end)
    sys.close(w)
    local got = sys.read_tensor(r)
    sys.close(r)
    assert.are.same({"exited", 0}, {wait_for(pid, 10)})
    helpers.assert_near(got, expected, 1e-3)
  end)

  it("die_with_parent: a worker is killed when its supervisor is killed with -9", function()
    local r, w = sys.pipe()
    local supervisor = spawn(function()
      sys.close(r)
      local me = sys.getpid()
      local worker = sys.fork()
      if worker == 0 then
        sys.die_with_parent(me)
        while true do sys.sleep(0.05) end
      end
      sys.write_message(w, tostring(worker))
      while true do sys.sleep(0.05) end
    end)
    sys.close(w)
    local worker = assert(tonumber(sys.read_message(r)))
    sys.close(r)
    sys.kill(supervisor, "KILL")
    assert.are.equal("signaled", (sys.waitpid(supervisor)))
    -- gone, or a zombie nobody reaps yet: either way no longer running
    local function running()
      local f = io.open("/proc/" .. worker .. "/stat")
      if not f then return false end
      local state = f:read("a"):match("^%d+ %b() (%a)")
      f:close()
      return state ~= "Z" and state ~= "X"
    end
    local deadline = sys.now() + 10
    while running() and sys.now() < deadline do sys.sleep(0.01) end
    local alive = running()
    if alive then sys.kill(worker, "KILL") end
    assert.is_false(alive, "the worker outlived its supervisor")
    assert.matches("expected the parent's pid", select(2, pcall(sys.die_with_parent, 0)), 1, true)
  end)

  it("getpid differs in the child; exit skips stdio buffers", function()
    local r, w = sys.pipe()
    local parent = sys.getpid()
    local pid = spawn(function()
      sys.close(r)
      sys.write_message(w, tostring(sys.getpid()))
      return 0
    end)
    sys.close(w)
    assert.are.equal(tostring(pid), sys.read_message(r))
    assert.are_not.equal(parent, pid)
    assert.are.same({"exited", 0}, {wait_for(pid)})
    sys.close(r)

    -- Text left in the child's stdio buffer is dropped by exit (_exit).
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    pid = spawn(function()
      f:write("from the child")
      sys.exit(5)
    end)
    assert.are.same({"exited", 5}, {wait_for(pid)})
    f:close()
    f = assert(io.open(path, "r"))
    assert.are.equal("", f:read("a"))
    f:close()
    os.remove(path)
  end)

  it("SIGPIPE is ignored after fork: a write to a closed pipe raises EPIPE", function()
    assert.are.same({"exited", 0}, {wait_for(spawn(function() return 0 end))})
    local r, w = sys.pipe()
    sys.close(r)
    assert.are.equal("lpnx.sys.write_message: write failed: Broken pipe", message(sys.write_message, w, "lost"))
    assert.are.equal("lpnx.sys.write_tensor: write failed: Broken pipe", message(sys.write_tensor, w, lpnx.ones(3)))
    sys.close(w)
  end)
end)

describe("lpnx.sys signals and clocks", function()
  it("catch_signal + kill(getpid(), 'USR1') sets signal_pending", function()
    sys.catch_signal("USR1")
    assert.is_false(sys.signal_pending("USR1"))
    sys.kill(sys.getpid(), "USR1")
    -- another thread may take the signal: give it a moment
    local deadline = sys.now() + 2
    while not sys.signal_pending("USR1") and sys.now() < deadline do sys.sleep(0.001) end
    assert.is_true(sys.signal_pending("USR1"))
    assert.is_true(sys.signal_pending("USR1", true)) -- read and clear
    assert.is_false(sys.signal_pending("USR1"))
    assert.is_false(sys.signal_pending("SIGHUP"))
    sys.default_signal("USR1")
    assert.is_false(sys.signal_pending("USR1"))
  end)

  it("now() advances by about 0.05 across sleep(0.05); time() is wall-clock", function()
    local t0 = sys.now()
    sys.sleep(0.05)
    local dt = sys.now() - t0
    assert.is_true(dt >= 0.0499 and dt < 0.5, "slept " .. dt)
    assert.is_true(math.abs(sys.time() - os.time()) <= 2)
    assert.are.equal("float", math.type(sys.now()))
    sys.sleep(0)
  end)

  it("isatty and terminal_width on a file", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    assert.is_false(sys.isatty(f))
    assert.is_nil(sys.terminal_width(f))
    f:close()
    os.remove(path)
    assert.are.equal("boolean", type(sys.isatty(2)))
  end)
end)

describe("lpnx.sys files", function()
  local root

  before_each(function() root = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(root) end)

  local function touch(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text or "")
    f:close()
  end

  it("fsync_path syncs files and folders", function()
    touch(root .. "/f", "x")
    sys.fsync_path(root .. "/f")
    sys.fsync_path(root)
    assert.are.equal(("lpnx.sys.fsync_path: cannot open %s/missing: No such file or directory"):format(root),
      message(sys.fsync_path, root .. "/missing"))
  end)
end)

describe("lpnx.sys errors", function()
  it("name the call, what failed and why", function()
    local r, w = sys.pipe()
    sys.close(r)
    sys.close(w)
    assert.are.equal(("lpnx.sys.close: closing file descriptor %d failed: Bad file descriptor"):format(r),
      message(sys.close, r))
    assert.are.equal("lpnx.sys.read_message: read failed: Bad file descriptor", message(sys.read_message, r))
    assert.are.equal("lpnx.sys.write_message: write failed: Bad file descriptor", message(sys.write_message, w, "x"))
    assert.are.equal("lpnx.sys.waitpid: waiting for process 1 failed: No child processes", message(sys.waitpid, 1))
    assert.are.equal("lpnx.sys.kill: sending signal 0 to process 999999999 failed: No such process",
      message(sys.kill, 999999999, 0))
  end)

  it("reject bad arguments", function()
    assert.matches("expected a signal number or name %(TERM, KILL, INT, HUP, USR1, ...%), got 'NOPE'",
      message(sys.kill, sys.getpid(), "NOPE"))
    assert.matches("expected a signal name INT, TERM, HUP or USR1, got 'KILL'", message(sys.catch_signal, "KILL"))
    assert.matches("expected a file descriptor >= 0, got %-1", message(sys.read_message, -1))
    assert.matches("expected seconds in 0..1e9", message(sys.sleep, -1))
    assert.matches("expected seconds in 0..1e9", message(sys.sleep, 0 / 0))
    assert.matches("lpnx.Tensor expected, got string", message(sys.write_tensor, 1, "x"))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:close()
    os.remove(path)
    assert.matches("file is closed", message(sys.isatty, f))
  end)
end)
