-- lpnx.progress: terminal redraws and plain log lines, written to a
-- temporary file with an injected clock so that nothing depends on time.
local lpnx = require "lpnx"
local progress = require "lpnx.progress"

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Runs body(opts_base, set_time) with a bar writing into a temporary file
-- and returns what was written.
local function capture(body)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  local t = 0
  body({stream = f, clock = function() return t end}, function(now) t = now end)
  f:close()
  f = assert(io.open(path, "r"))
  local text = f:read("a")
  f:close()
  os.remove(path)
  return text
end

local function merge(a, b)
  local out = {}
  for k, v in pairs(a) do out[k] = v end
  for k, v in pairs(b) do out[k] = v end
  return out
end

local function lines(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

describe("lpnx.progress.format_duration", function()
  it("writes m:ss below an hour and h:mm:ss above", function()
    assert.are.equal("0:00", progress.format_duration(0))
    assert.are.equal("0:59", progress.format_duration(59.4))
    assert.are.equal("1:00", progress.format_duration(59.5))
    assert.are.equal("2:03", progress.format_duration(123))
    assert.are.equal("1:02:03", progress.format_duration(3723))
    assert.are.equal("27:46:40", progress.format_duration(100000))
    assert.are.equal("?", progress.format_duration(-1))
    assert.are.equal("?", progress.format_duration(0 / 0))
    assert.are.equal("?", progress.format_duration(math.huge))
    assert.matches("expected seconds as a number, got string", message(progress.format_duration, "1"))
  end)
end)

describe("lpnx.progress on a terminal", function()
  it("redraws one line with \\r, throttled, and fits the width", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 100, label = "epoch 1/10", unit = "img", width = 80,
                                            interactive = true}))
      set_time(1)
      bar:update(10, {loss = 0.41, dice = 0.6})
      set_time(1.05)
      bar:update(11) -- within 0.1 s of the last redraw: not drawn
      set_time(1.5)
      bar:update(20)
      set_time(10)
      bar:update(100, {loss = 0.4012, dice = 0.65})
      bar:finish()
      bar:update(50) -- after finish: nothing
    end)
    local frames = {}
    for frame in text:gmatch("\r([^\r]*)") do frames[#frames + 1] = frame end
    -- Frame 1: rate 10 items in 1 s; ETA 90 / 10 = 9 s. The line takes
    -- 79 columns: "epoch 1/10 " 11 + "[" + bar + "] " + the pieces 54, so
    -- the bar is 11 wide with floor(11 * 0.10) = 1 filled.
    assert.are.equal("epoch 1/10 [#..........] 10/100  10.0 img/s  ETA 0:09  loss 0.4100  dice 0.6000", frames[1])
    -- Frame 2: moving averages 0.3 * 10 + 0.7 * 10 = 10 items over
    -- 0.3 * 0.5 + 0.7 * 1 = 0.85 s: 11.76 img/s; ETA 80 / 11.76 = 6.8 s;
    -- floor(11 * 0.2) = 2 filled.
    assert.are.equal("epoch 1/10 [##.........] 20/100  11.8 img/s  ETA 0:07  loss 0.4100  dice 0.6000", frames[2])
    -- Frame 3 at t = 10 (the update to 100) and the final line from
    -- finish: the average rate 100 / 10 s and the elapsed time, then \n;
    -- the pieces take 51 columns there, leaving 14 for the bar.
    assert.are.equal(4, #frames)
    assert.are.equal("epoch 1/10 [##############] 100/100  10.0 img/s  0:10  loss 0.4012  dice 0.6500\n", frames[4])
    for i = 1, 3 do assert.is_true(#frames[i] <= 79, frames[i]) end
    assert.are.equal(1, select(2, text:gsub("\n", "")))
  end)

  it("drops the bar, then cuts the line, on a narrow terminal", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 100, label = "train", unit = "img", width = 40,
                                            interactive = true}))
      set_time(2)
      bar:update(50, {loss = 0.5})
      bar:finish()
    end)
    local frames = {}
    for frame in text:gmatch("\r([^\r\n]*)") do frames[#frames + 1] = frame end
    -- "train 50/100  25.0 img/s  ETA 0:02  loss 0.5000" is 46 columns > 39
    assert.are.equal("train 50/100  25.0 img/s  ETA 0:02  los", frames[1])
    assert.are.equal(39, #frames[1])
    assert.are.equal("train 50/100  25.0 img/s  0:02  loss 0.", frames[2])
  end)

  it("pads over a longer previous line and shows ? before the first measurement", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 10, unit = "img", width = 30, interactive = true}))
      bar:update(0, {loss = 123.456789})
      set_time(1)
      bar:update(5, {})
    end)
    local frames = {}
    for frame in text:gmatch("\r([^\r]*)") do frames[#frames + 1] = frame end
    -- no time has passed at the first update: rate and ETA unknown; the
    -- 35 columns of "0/10  ? img/s  ETA ?  loss 123.4568" are cut to 29
    assert.are.equal("0/10  ? img/s  ETA ?  loss 12", frames[1])
    -- 25 columns, too few left for a bar: padded over the 29 before
    assert.are.equal("5/10  5.0 img/s  ETA 0:01    ", frames[2])
  end)

  it("log prints a line above the bar and draws the bar again", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 4, label = "val", unit = "img", width = 50,
                                            interactive = true}))
      set_time(1)
      bar:update(1)
      bar:log("checkpoint saved")
      bar:finish()
    end)
    -- 49 columns: "val " + "[" + bar + "] " + pieces (24, then 20 at finish)
    local drawn = "val [" .. ("#"):rep(4) .. ("."):rep(14) .. "] 1/4  1.0 img/s  ETA 0:03"
    local final = "val [" .. ("#"):rep(5) .. ("."):rep(17) .. "] 1/4  1.0 img/s  0:01"
    assert.are.equal(49, #drawn)
    assert.are.equal(49, #final)
    local cleared = "\r" .. (" "):rep(49) .. "\r"
    assert.are.equal("\r" .. drawn .. cleared .. "checkpoint saved\n\r" .. drawn .. "\r" .. final .. "\n", text)
  end)
end)

describe("lpnx.progress in a log file", function()
  it("writes a plain line per 10% of progress and one at finish", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 100, label = "epoch 1/10", unit = "img", interactive = false}))
      for i = 1, 20 do
        set_time(i)
        bar:update(5 * i, {loss = 0.4123, dice = 0.6012})
      end
      bar:finish({loss = 0.4012, dice = 0.65})
    end)
    assert.is_nil(text:find("\r", 1, true))
    local got = lines(text)
    -- 5 items a second throughout: rate 5.0, ETA (100 - done) / 5
    assert.are.same({
      "epoch 1/10 10/100 5.0 img/s ETA 0:18 loss 0.4123 dice 0.6012",
      "epoch 1/10 20/100 5.0 img/s ETA 0:16 loss 0.4123 dice 0.6012",
      "epoch 1/10 30/100 5.0 img/s ETA 0:14 loss 0.4123 dice 0.6012",
      "epoch 1/10 40/100 5.0 img/s ETA 0:12 loss 0.4123 dice 0.6012",
      "epoch 1/10 50/100 5.0 img/s ETA 0:10 loss 0.4123 dice 0.6012",
      "epoch 1/10 60/100 5.0 img/s ETA 0:08 loss 0.4123 dice 0.6012",
      "epoch 1/10 70/100 5.0 img/s ETA 0:06 loss 0.4123 dice 0.6012",
      "epoch 1/10 80/100 5.0 img/s ETA 0:04 loss 0.4123 dice 0.6012",
      "epoch 1/10 90/100 5.0 img/s ETA 0:02 loss 0.4123 dice 0.6012",
      "epoch 1/10 100/100 5.0 img/s 0:20 loss 0.4012 dice 0.6500",
    }, got)
  end)

  it("writes a line every 30 s when progress is slow", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 1000, unit = "batch", interactive = false}))
      for _, step in ipairs({{10, 1}, {20, 2}, {35, 3}, {50, 4}, {66, 5}}) do
        set_time(step[1])
        bar:update(step[2])
      end
      bar:log("a note")
      set_time(70)
      bar:finish()
    end)
    local got = lines(text)
    assert.are.equal(4, #got)
    assert.matches("^3/1000 [%d.]+ batch/s ETA %d+:%d%d:%d%d$", got[1])
    assert.matches("^5/1000 ", got[2])
    assert.are.equal("a note", got[3])
    -- 5 batches in 70 s
    assert.are.equal("5/1000 0.0714 batch/s 1:10", got[4])
  end)

  it("picks plain lines by itself when the stream is not a terminal", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 2}))
      assert.is_false(bar.interactive)
      set_time(3)
      bar:update(1, {epoch = 3, note = "warm", loss = 0.5, lr = 1e-4})
      bar:finish()
    end)
    -- "loss" first, then the other fields by name; integers stay integers,
    -- tiny floats go scientific
    assert.are.same({
      "1/2 0.333 it/s ETA 0:03 loss 0.5000 epoch 3 lr 1.000e-04 note warm",
      "1/2 0.333 it/s 0:03 loss 0.5000 epoch 3 lr 1.000e-04 note warm",
    }, lines(text))
  end)

  it("follows the given field order and counts from initial on resume", function()
    local text = capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 100, initial = 50, fields = {"dice", "loss"},
                                            interactive = false}))
      set_time(10)
      bar:update(60, {loss = 0.25, dice = 0.75})
      bar:finish()
    end)
    -- 10 items in 10 s, not 60: the first 50 were done before
    assert.are.same({
      "60/100 1.0 it/s ETA 0:40 dice 0.7500 loss 0.2500",
      "60/100 1.0 it/s 0:10 dice 0.7500 loss 0.2500",
    }, lines(text))
  end)
end)

describe("lpnx.progress smoothing and errors", function()
  it("smooths the rate with moving averages of items and seconds", function()
    capture(function(base, set_time)
      local bar = progress.new(merge(base, {total = 100, interactive = false}))
      assert.is_nil(bar:rate())
      assert.is_nil(bar:eta())
      set_time(1)
      bar:update(2)
      assert.are.equal(2, bar:rate())
      set_time(11) -- one slow step: 2 items in 10 s
      bar:update(4)
      -- (0.3 * 2 + 0.7 * 2) / (0.3 * 10 + 0.7 * 1) = 2 / 3.7
      assert.is_true(math.abs(bar:rate() - 2 / 3.7) < 1e-12)
      assert.is_true(math.abs(bar:eta() - 96 * 3.7 / 2) < 1e-9)
    end)
  end)

  it("uses lpnx.sys.now by default", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local bar = progress.new{total = 1, stream = f}
    assert.are.equal(lpnx.sys.now, bar.clock)
    bar:update(1)
    bar:finish()
    f:close()
    os.remove(path)
  end)

  it("rejects bad options and arguments", function()
    assert.matches("progress.new: expected total, the number of items", message(progress.new, {}))
    assert.matches("expected total to be a number >= 0, got %-1", message(progress.new, {total = -1}))
    assert.matches("expected an options table, got number", message(progress.new, 3))
    assert.matches("expected stream to have a write method", message(progress.new, {total = 1, stream = {}}))
    local bar = progress.new{total = 1, stream = {write = function() end}, interactive = false}
    assert.matches("bar:update: expected done as a number, got string", message(bar.update, bar, "1"))
    assert.matches("bar:update: expected fields as a table, got number", message(bar.update, bar, 1, 2))
  end)
end)
