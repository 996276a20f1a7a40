-- Crash safety: files survive SIGKILL at any moment, a full disk loses
-- nothing, and training killed mid-run resumes exactly.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local sys = lpnx.sys

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  return out
end

describe("atomic saves", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rmdir(dir) end)

  it("a save killed at random moments leaves the last complete file loadable", function()
    local path = dir .. "/ckpt.safetensors"
    lpnx.save(path, {w = lpnx.full({200000}, 0)}, {version = 0})
    local g = lpnx.Generator(7)
    local seen = {}
    for round = 1, 12 do
      local pid = sys.fork()
      if pid == 0 then
        lpnx.set_num_threads(1)
        local v = round * 1000
        while true do -- saves as fast as it can until killed
          v = v + 1
          lpnx.save(path, {w = lpnx.full({200000}, v)}, {version = v})
        end
      end
      sys.sleep(g:uniform(0.005, 0.06))
      sys.kill(pid, "KILL")
      assert.are.equal("signaled", (sys.waitpid(pid)))
      local t, meta = lpnx.load(path) -- never a torn or missing file
      local v = tonumber(meta.version)
      assert.are.equal(v, t.w[1])
      assert.are.equal(v, t.w[200000])
      seen[#seen + 1] = v
    end
    assert.is_true(seen[#seen] > 0, "no save completed in any round")
  end)

  it("the next save removes the temporary files that killed saves left behind, and only those", function()
    local path = dir .. "/ckpt.safetensors"
    local big = lpnx.full({3000000}, 1) -- 12 MB: a save takes long enough to be caught mid-write
    local g = lpnx.Generator(8)
    local leftover = "ckpt%.safetensors%.lpnx%-tmp%.%w%w%w%w%w%w\n"
    -- A kill can land between a rename and the next temporary file (while the
    -- folder is fsynced, say), so the rounds go on until one was caught
    -- mid-write; each new writer has removed the leftovers of the one before.
    for _ = 1, 60 do
      local pid = sys.fork()
      if pid == 0 then
        lpnx.set_num_threads(1)
        while true do lpnx.save(path, {w = big}) end
      end
      sys.sleep(g:uniform(0.02, 0.08))
      sys.kill(pid, "KILL")
      sys.waitpid(pid)
      if sh("ls -A '" .. dir .. "'"):match(leftover) then break end
    end
    -- files of other names, or that merely look alike, stay
    for _, name in ipairs {"other.safetensors.lpnx-tmp.abcdef", "ckpt.safetensors.lpnx-tmp.toolong",
                           "ckpt.safetensors.tmp.epoch1", "ckpt.safetensors.lpnx-tmp.a-b_c."} do
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write("x")
      f:close()
    end
    local before = sh("ls -A '" .. dir .. "'")
    assert.matches(leftover, before)
    lpnx.save(path, {w = lpnx.full({10}, 2)})
    assert.are.equal("ckpt.safetensors\nckpt.safetensors.lpnx-tmp.a-b_c.\nckpt.safetensors.lpnx-tmp.toolong\n"
                     .. "ckpt.safetensors.tmp.epoch1\nother.safetensors.lpnx-tmp.abcdef\nexit=0\n",
                     sh("LC_ALL=C ls -A '" .. dir .. "'"))
    assert.are.equal(2, lpnx.load(path).w[1])
  end)

  it("a save still under way elsewhere keeps its temporary file", function()
    local path = dir .. "/ckpt.safetensors"
    local live = path .. ".lpnx-tmp.Live01"
    -- a process holding the lock a writing save holds on its temporary file
    local holder = sh("(sh -c \"exec 9>>'" .. live .. "'; flock 9; exec sleep 30\" >/dev/null 2>&1 & echo $!)")
    local pid = assert(tonumber(holder:match("^(%d+)")), holder)
    for _ = 1, 200 do -- until flock has created and locked it
      if sh("flock -n '" .. live .. "' true"):match("exit=1") then break end
      sys.sleep(0.01)
    end
    sys.sleep(0.02)
    lpnx.save(path, {w = lpnx.full({10}, 3)})
    local kept = io.open(live) ~= nil
    sys.kill(pid, "KILL")
    for _ = 1, 200 do -- until the lock is gone with it
      if sh("flock -n '" .. live .. "' true"):match("exit=0") then break end
      sys.sleep(0.01)
    end
    assert.is_true(kept, "the live save's temporary file was removed")
    lpnx.save(path, {w = lpnx.full({10}, 4)}) -- its writer gone, the next save removes it
    assert.is_nil(io.open(live))
  end)

  it("a full disk fails the save with a clear error and keeps the previous file", function()
    local mnt = dir .. "/small"
    assert(os.execute("mkdir -p '" .. mnt .. "'"))
    local out = sh("mount -t tmpfs -o size=256k tmpfs '" .. mnt .. "'")
    assert.matches("exit=0", out, 1, true)
    local ok, err = pcall(function()
      local path = mnt .. "/ckpt.safetensors"
      lpnx.save(path, {w = lpnx.full({1000}, 1)}, {version = 1})
      local saved, e = pcall(lpnx.save, path, {w = lpnx.full({400000}, 2)}, {version = 2})
      assert.is_false(saved)
      assert.matches("ckpt.safetensors", e, 1, true)
      assert.matches("No space left on device", e, 1, true)
      local t, meta = lpnx.load(path)
      assert.are.equal("1", meta.version)
      assert.are.equal(1000, t.w:numel())
      assert.are.equal("ckpt.safetensors\n", sh("ls -A '" .. mnt .. "'"):match("^(.-)exit="))
    end)
    sh("umount '" .. mnt .. "'")
    assert(ok, err)
  end)
end)

describe("training survives being killed", function()
  local dir, data
  setup(function()
    dir = h.tmpdir()
    data = dir .. "/data"
    lpnx.synth.write{out = data, count = 12, seed = 5, positive = 0.5, size = 128, test_fraction = 0}
  end)
  teardown(function() h.rmdir(dir) end)

  local args = "--size 64 --encoder resnet18 --encoder-width 4 --decoder-channels 16,8,8,4,4 --epochs 8 "
               .. "--batch 4 --lr 3e-3 --seed 2 --workers 1 --threads 1 --save-every 1"
  local function train(out, extra)
    return sh(("lua5.4 examples/train.lua --data %s --out %s %s %s"):format(data, out, args, extra or ""))
  end
  -- Starts a command in the background; returns {pid = of the command itself, code = file its
  -- exit code lands in}.
  local jobs = 0
  local function spawn(cmd, log)
    jobs = jobs + 1
    local base = ("%s/job%d"):format(dir, jobs)
    os.execute(("(%s > %s 2>&1 & echo $! > %s.pid; wait $! 2>/dev/null; echo $? > %s.code) 2>/dev/null &")
      :format(cmd, log, base, base))
    local pid
    for _ = 1, 200 do
      local f = io.open(base .. ".pid")
      pid = f and tonumber(f:read("a"))
      if f then f:close() end
      if pid then break end
      sys.sleep(0.01)
    end
    return {pid = assert(pid, "the background job did not start"), code = base .. ".code"}
  end
  -- The job's exit code once it has ended (waits up to 60 s).
  local function finished(job)
    for _ = 1, 6000 do
      local f = io.open(job.code)
      local code = f and tonumber(f:read("a"))
      if f then f:close() end
      if code then return code end
      sys.sleep(0.01)
    end
    error("the background job did not end")
  end
  local function running(job)
    return io.open(job.code) == nil
  end
  -- The step of the run's checkpoint, or 0 when there is none yet.
  local function checkpoint_step(out)
    local ok, _, meta = pcall(lpnx.load, out .. "/checkpoint.safetensors")
    return ok and tonumber(meta.step) or 0
  end
  -- Waits until the job's checkpoint is past step, or the job ended.
  local function wait_for_step(job, out, step)
    for _ = 1, 6000 do
      if not running(job) or checkpoint_step(out) > step then return end
      sys.sleep(0.01)
    end
  end
  local function same_model(a, b)
    local ta, tb = lpnx.load(a), lpnx.load(b)
    for k, v in pairs(ta) do
      if not v:equal(tb[k]) then return false end
    end
    return true
  end

  it("SIGKILL several times in a row, then --resume: the same weights as an uninterrupted run", function()
    assert.matches("exit=0", train(dir .. "/whole"), 1, true)
    local out = dir .. "/killed"
    local kills = 0
    local g = lpnx.Generator(3)
    for attempt = 1, 4 do
      local job = spawn(("lua5.4 examples/train.lua --data %s --out %s %s --resume"):format(data, out, args),
                        dir .. "/train" .. attempt .. ".log")
      wait_for_step(job, out, checkpoint_step(out)) -- at least one new step, then a random moment
      sys.sleep(g:uniform(0, 0.15))
      if running(job) then
        sys.kill(job.pid, "KILL")
        kills = kills + 1
      end
      finished(job)
    end
    assert.is_true(kills >= 2, "the run finished before it could be killed twice")
    local final = train(out, "--resume")
    assert.matches("resuming from", final, 1, true)
    assert.matches("exit=0", final, 1, true)
    assert.is_true(same_model(dir .. "/whole/model.safetensors", out .. "/model.safetensors"))
  end)

  it("SIGINT saves a checkpoint and exits cleanly; --resume finishes the same run", function()
    local out = dir .. "/interrupted"
    local log = dir .. "/int.log"
    local job = spawn(("lua5.4 examples/train.lua --data %s --out %s %s"):format(data, out, args), log)
    wait_for_step(job, out, 0)
    assert.is_true(running(job), "the run ended before it could be interrupted")
    sys.kill(job.pid, "INT")
    assert.are.equal(0, finished(job))
    local text = io.open(log):read("a")
    assert.matches("resumes it %(%-%-resume%)", text)
    assert.matches("exit=0", train(out, "--resume"), 1, true)
    assert.is_true(same_model(dir .. "/whole/model.safetensors", out .. "/model.safetensors"))
  end)

  it("a non-finite loss stops the run before it reaches the weights, or skips the batch when asked", function()
    local out = train(dir .. "/nan", "--lr 1e30 --loss bce")
    assert.matches("the loss is %-?nan", out)
    assert.matches("exit=2", out, 1, true)
    local _, meta = lpnx.load(dir .. "/nan/checkpoint.safetensors")
    local t = lpnx.load(dir .. "/nan/checkpoint.safetensors")
    for _, v in pairs(t) do
      assert.is_true(v:ne(v):sum() == 0, "a NaN reached the checkpoint")
    end
    assert.is_truthy(meta.step)
    local skipped = train(dir .. "/skip", "--lr 1e30 --loss bce --skip-nonfinite --epochs 1")
    assert.matches("batch skipped", skipped, 1, true)
    assert.matches("exit=0", skipped, 1, true)
  end)
end)
