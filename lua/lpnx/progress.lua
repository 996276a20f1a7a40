-- Progress bars for training and inference loops.
--
--   local bar = lpnx.progress.new{total = 100, label = "epoch 1/10", unit = "img"}
--   for i = 1, 100 do
--     ...
--     bar:update(i, {loss = loss, dice = dice})
--   end
--   bar:finish()
--
-- On a terminal the bar is one line redrawn in place with \r, at most
-- every redraw_interval seconds, cut to the terminal's width:
--   epoch 1/10 [#########.........] 45/100  3.2 img/s  ETA 0:17  loss 0.4123  dice 0.6012
-- Elsewhere (a log file, CI) it writes plain lines, one each time progress
-- passes another log_step of the total or log_interval seconds have gone
-- by, and one at finish with the elapsed time instead of the ETA:
--   epoch 1/10 45/100 3.2 img/s ETA 0:17 loss 0.4123 dice 0.6012
--   epoch 1/10 100/100 3.2 img/s 0:31 loss 0.4012 dice 0.6500
--
-- progress.new options:
--   total            number of items (required, >= 0)
--   label            text in front ("")
--   unit             what an item is, for the rate ("it")
--   stream           where to write (io.stderr); anything with :write
--   width            columns to fit (nil: the stream's terminal width, or 80)
--   interactive      redraw in place (nil: whether the stream is a terminal)
--   clock            function returning seconds (lpnx.sys.now)
--   initial          items already done when the bar starts (0), e.g. on resume
--   fields           order of the fields ({"loss"}; others follow sorted by name)
--   redraw_interval  seconds between redraws on a terminal (0.1)
--   log_interval     seconds after which a plain line is written anyway (30)
--   log_step         share of the total between plain lines (0.1)
--
-- The rate is smoothed: exponential moving averages (weight 0.3) of the
-- items done and the time taken between measurements, their ratio being the
-- rate, so one slow batch does not swing the ETA. The finish line shows the
-- average rate over the whole run.
local lpnx = require "lpnx"

local progress = {}

local Bar = {}
Bar.__index = Bar

local SMOOTHING = 0.3 -- weight of the newest measurement in the moving averages
local MIN_BAR = 5      -- narrower than this, the bar is left out

-- "1:02:03" for an hour or more, "2:03" below; rounded to whole seconds;
-- "?" for a negative, infinite or NaN duration.
function progress.format_duration(seconds)
  if type(seconds) ~= "number" then
    error(("progress.format_duration: expected seconds as a number, got %s"):format(type(seconds)), 2)
  end
  if seconds ~= seconds or seconds < 0 or seconds == math.huge then return "?" end
  local s = math.floor(seconds + 0.5)
  local h, m = s // 3600, s % 3600 // 60
  s = s % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
  return ("%d:%02d"):format(m, s)
end

-- One field value as text: integers as they are, floats with 4 decimals
-- (scientific when tiny or huge), anything else through tostring.
local function format_value(v)
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if type(v) ~= "number" then return tostring(v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  local a = math.abs(v)
  if a == 0 or (a >= 1e-3 and a < 1e5) then return ("%.4f"):format(v) end
  return ("%.3e"):format(v)
end

local function format_rate(rate)
  if not rate then return "?" end
  if rate >= 100 then return ("%.0f"):format(rate) end
  if rate >= 1 then return ("%.1f"):format(rate) end
  return ("%.3g"):format(rate)
end

local function check_number(name, v, min, default)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < min then
    error(("progress.new: expected %s to be a number >= %s, got %s"):format(name, min, tostring(v)), 3)
  end
  return v
end

function progress.new(opts)
  if type(opts) ~= "table" then error(("progress.new: expected an options table, got %s"):format(type(opts)), 2) end
  if opts.total == nil then error("progress.new: expected total, the number of items", 2) end
  local self = setmetatable({}, Bar)
  self.total = check_number("total", opts.total, 0)
  self.label = tostring(opts.label or "")
  self.unit = tostring(opts.unit or "it")
  self.stream = opts.stream or io.stderr
  if type(self.stream.write) ~= "function" then error("progress.new: expected stream to have a write method", 2) end
  self.width = opts.width and check_number("width", opts.width, 1)
  self.clock = opts.clock or lpnx.sys.now
  if type(self.clock) ~= "function" then error("progress.new: expected clock to be a function", 2) end
  self.redraw_interval = check_number("redraw_interval", opts.redraw_interval, 0, 0.1)
  self.log_interval = check_number("log_interval", opts.log_interval, 0, 30)
  self.log_step = check_number("log_step", opts.log_step, 0, 0.1)
  self.initial = check_number("initial", opts.initial, 0, 0)
  self.field_order = opts.fields or {"loss"}
  local interactive = opts.interactive
  if interactive == nil then
    interactive = io.type(self.stream) == "file" and lpnx.sys.isatty(self.stream)
  end
  self.interactive = interactive and true or false

  self.done = self.initial
  self.fields = {}
  self.start = self.clock()
  self.finished = false
  -- moving averages of items and seconds between measurements
  self.avg_items, self.avg_seconds = nil, nil
  self.measured_done, self.measured_at = self.done, self.start
  -- interactive: what was drawn; plain: what was logged
  self.drawn_len, self.drawn_at = nil, nil
  self.logged_step, self.logged_at = self.log_step > 0 and self.total > 0
      and math.floor(self.done / self.total / self.log_step + 1e-9) or 0, self.start
  return self
end

-- Folds the progress since the last measurement into the moving averages
-- (at most once per redraw_interval, so bursts of updates do not count
-- as tiny intervals).
function Bar:_measure(now)
  local dt = now - self.measured_at
  local dn = self.done - self.measured_done
  if dn < 0 then -- went backwards: start over
    self.avg_items, self.avg_seconds = nil, nil
    self.measured_done, self.measured_at = self.done, now
    return
  end
  if dt <= 0 or (self.avg_seconds and dt < self.redraw_interval) then return end
  if self.avg_seconds then
    self.avg_items = SMOOTHING * dn + (1 - SMOOTHING) * self.avg_items
    self.avg_seconds = SMOOTHING * dt + (1 - SMOOTHING) * self.avg_seconds
  else
    self.avg_items, self.avg_seconds = dn, dt
  end
  self.measured_done, self.measured_at = self.done, now
end

-- Items per second, or nil before the first measurement.
function Bar:rate()
  if not self.avg_seconds or self.avg_seconds <= 0 then return nil end
  return self.avg_items / self.avg_seconds
end

-- Seconds left at the smoothed rate, or nil when unknown.
function Bar:eta()
  local rate = self:rate()
  if not rate or rate <= 0 then return nil end
  return math.max(self.total - self.done, 0) / rate
end

-- The fields as "name value" pieces, in field_order and then by name.
function Bar:_field_texts()
  local out, seen = {}, {}
  for _, k in ipairs(self.field_order) do
    if self.fields[k] ~= nil then
      out[#out + 1] = k .. " " .. format_value(self.fields[k])
      seen[k] = true
    end
  end
  local rest = {}
  for k in pairs(self.fields) do
    if not seen[k] then rest[#rest + 1] = tostring(k) end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do out[#out + 1] = k .. " " .. format_value(self.fields[k]) end
  return out
end

local function count_text(self)
  return ("%s/%s"):format(format_value(self.done), format_value(self.total))
end

-- The pieces after the bar: count, rate, ETA (or elapsed when final), fields.
function Bar:_pieces(final, now)
  local rate, time_text
  if final then
    local elapsed = now - self.start
    rate = elapsed > 0 and (self.done - self.initial) / elapsed or self:rate()
    time_text = progress.format_duration(elapsed)
  else
    rate = self:rate()
    local eta = self:eta()
    time_text = "ETA " .. (eta and progress.format_duration(eta) or "?")
  end
  local pieces = {count_text(self), format_rate(rate) .. " " .. self.unit .. "/s", time_text}
  for _, f in ipairs(self:_field_texts()) do pieces[#pieces + 1] = f end
  return pieces
end

function Bar:_width()
  if self.width then return math.floor(self.width) end
  local ok, w = pcall(lpnx.sys.terminal_width, io.type(self.stream) == "file" and self.stream or nil)
  return ok and w or 80
end

-- The terminal line: label, bar, then the pieces separated by two spaces,
-- fitting in width - 1 columns (the last column would wrap on some
-- terminals): the bar shrinks first, then goes, then the line is cut.
function Bar:_line(final, now)
  local rest = table.concat(self:_pieces(final, now), "  ")
  local width = self:_width() - 1
  local head = self.label ~= "" and self.label .. " " or ""
  local bar_width = width - #head - #rest - 3 -- "[", "] "
  local line
  if bar_width >= MIN_BAR then
    local frac = self.total > 0 and math.min(math.max(self.done / self.total, 0), 1) or 1
    local filled = math.floor(bar_width * frac + 1e-9)
    line = head .. "[" .. ("#"):rep(filled) .. ("."):rep(bar_width - filled) .. "] " .. rest
  else
    line = head .. rest
  end
  if #line > width then line = line:sub(1, math.max(width, 0)) end
  return line
end

-- A plain line: label and pieces separated by single spaces.
function Bar:_plain_line(final, now)
  local pieces = self:_pieces(final, now)
  if self.label ~= "" then table.insert(pieces, 1, self.label) end
  return table.concat(pieces, " ")
end

function Bar:_write(s)
  self.stream:write(s)
  if self.stream.flush then self.stream:flush() end
end

-- Redraws the terminal line, padding over what is left of a longer one.
function Bar:_draw(final, now)
  local line = self:_line(final, now)
  local pad = self.drawn_len and self.drawn_len > #line and (" "):rep(self.drawn_len - #line) or ""
  self:_write("\r" .. line .. pad .. (final and "\n" or ""))
  self.drawn_len = not final and #line or nil
  self.drawn_at = now
end

-- bar:update(done [, fields]): done items so far; fields (e.g. {loss =
-- 0.41, dice = 0.6}) replace the shown ones when given.
function Bar:update(done, fields)
  if type(done) ~= "number" then error(("bar:update: expected done as a number, got %s"):format(type(done)), 2) end
  if fields ~= nil and type(fields) ~= "table" then
    error(("bar:update: expected fields as a table, got %s"):format(type(fields)), 2)
  end
  if self.finished then return end
  local now = self.clock()
  self.done = done
  if fields then self.fields = fields end
  self:_measure(now)
  if self.interactive then
    if not self.drawn_at or now - self.drawn_at >= self.redraw_interval then self:_draw(false, now) end
    return
  end
  if done >= self.total then return end -- finish writes the last line
  local step = self.log_step > 0 and self.total > 0 and math.floor(done / self.total / self.log_step + 1e-9) or 0
  if step > self.logged_step or now - self.logged_at >= self.log_interval then
    self:_write(self:_plain_line(false, now) .. "\n")
    self.logged_step = math.max(step, self.logged_step)
    self.logged_at = now
  end
end

-- bar:finish([fields]): the final line (average rate, elapsed time);
-- later updates and finishes do nothing.
function Bar:finish(fields)
  if fields ~= nil and type(fields) ~= "table" then
    error(("bar:finish: expected fields as a table, got %s"):format(type(fields)), 2)
  end
  if self.finished then return end
  if fields then self.fields = fields end
  local now = self.clock()
  self.finished = true
  if self.interactive then
    self:_draw(true, now)
  else
    self:_write(self:_plain_line(true, now) .. "\n")
  end
end

-- bar:log(line): prints line on its own line; on a terminal the bar is
-- cleared first and drawn again below it.
function Bar:log(line)
  line = tostring(line)
  if self.interactive and self.drawn_len then
    self:_write("\r" .. (" "):rep(self.drawn_len) .. "\r" .. line .. "\n")
    self.drawn_len = nil
    self:_draw(false, self.clock())
  else
    self:_write(line .. "\n")
  end
end

return progress
