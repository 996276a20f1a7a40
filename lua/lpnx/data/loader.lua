-- The batch loader: per-epoch sampling plans, augmentation, and worker
-- processes that build batches while the trainer computes.
--
-- Every epoch's plan (which images, in what order, how many positives) is a
-- pure function of (seed, epoch), and each sample's augmentation draws from
-- a generator made from (seed, epoch, position in the epoch), so a batch
-- is the same whether it was built inline, by one worker or by four, and
-- whether the run was resumed or not.
--
-- Workers are forked child processes (like PyTorch's DataLoader): they
-- inherit the data set and the transform, build their share of the batches
-- (batch b goes to worker (b - first) % workers) and send them back over a
-- pipe as raw tensors. A worker is at most one batch ahead of the trainer.
local lpnx = require "lpnx"
local data = require "lpnx.data"
local transforms = require "lpnx.transforms"

local Loader = {}
Loader.__index = Loader

local function mix(a, b)
  -- splitmix64 finaliser over a combination of two integers
  local z = (a * 0x9E3779B97F4A7C15 + b) & 0x7fffffffffffffff
  z = ((z ~ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0x7fffffffffffffff
  z = ((z ~ (z >> 27)) * 0x94D049BB133111EB) & 0x7fffffffffffffff
  return z ~ (z >> 31)
end

-- loader(ds, {batch = 8, shuffle = true, transform = fn(sample, g),
--             positive_fraction = nil | p | function(epoch) -> p,
--             seed = 0, workers = 0, drop_last = false, meta = model meta (mean/std/channels),
--             shard = nil | {rank = r, size = n}})
-- shard: data-parallel training over n processes; every process plans the
-- same global batches of `batch` images and builds only its share of each
-- (positions r+1, r+1+n, ... of the batch, r 0-based), augmented exactly
-- as a single process would. Each batch then carries total, the global
-- batch's size.
local function new(ds, opts)
  opts = opts or {}
  local self = setmetatable({}, Loader)
  self.ds = ds
  self.batch = opts.batch or 8
  if math.type(self.batch) ~= "integer" or self.batch < 1 then
    error("lpnx.data.loader: batch must be a positive integer", 2)
  end
  self.shuffle = opts.shuffle ~= false
  self.transform = opts.transform
  self.positive_fraction = opts.positive_fraction
  self.seed = opts.seed or 0
  self.workers = opts.workers or 0
  self.drop_last = opts.drop_last or false
  self.meta = opts.meta
  self.shard = opts.shard
  if self.shard then
    local r, n = self.shard.rank, self.shard.size
    if math.type(n) ~= "integer" or n < 1 or math.type(r) ~= "integer" or r < 0 or r >= n then
      error(("lpnx.data.loader: shard must be {rank = r, size = n} with 0 <= r < n, got rank %s size %s")
            :format(tostring(r), tostring(n)), 2)
    end
  end
  self.children = nil
  return self
end

-- The positive share for an epoch, or nil for the natural one.
function Loader:fraction(epoch)
  local p = self.positive_fraction
  if type(p) == "function" then p = p(epoch) end
  if p ~= nil and not (type(p) == "number" and p >= 0 and p <= 1) then
    error(("positive_fraction must be in [0, 1], got %s"):format(tostring(p)), 2)
  end
  return p
end

-- The data set indices of an epoch, in order.
function Loader:order(epoch)
  local n = self.ds:count()
  local g = lpnx.Generator(mix(self.seed, epoch))
  local p = self:fraction(epoch)
  if p then
    local pos, neg = self.ds:positives()
    if #pos == 0 or #neg == 0 then p = nil end -- nothing to balance
    if p then
      local k = math.floor(n * p + 0.5)
      local order = {}
      local function draw(list, count)
        local i, perm = 0, nil
        for _ = 1, count do
          if not perm or i == #list then perm, i = lpnx.randperm(#list, g), 0 end
          i = i + 1
          order[#order + 1] = list[math.tointeger(perm[i])]
        end
      end
      draw(pos, k)
      draw(neg, n - k)
      local shuffled = {}
      local perm = lpnx.randperm(n, g)
      for i = 1, n do shuffled[i] = order[math.tointeger(perm[i])] end
      return shuffled
    end
  end
  local order = {}
  if self.shuffle then
    local perm = lpnx.randperm(n, g)
    for i = 1, n do order[i] = math.tointeger(perm[i]) end
  else
    for i = 1, n do order[i] = i end
  end
  return order
end

-- The epoch's batches: arrays of {index = data set index, position = k}.
function Loader:plan(epoch)
  local order = self:order(epoch)
  local batches = {}
  for k, index in ipairs(order) do
    local b = (k - 1) // self.batch + 1
    batches[b] = batches[b] or {}
    batches[b][#batches[b] + 1] = {index = index, position = k}
  end
  if self.drop_last and #batches > 0 and #batches[#batches] < self.batch and #batches > 1 then
    batches[#batches] = nil
  end
  if self.shard then
    local r, n = self.shard.rank, self.shard.size
    for b, entries in ipairs(batches) do
      if #entries < n then
        error(("lpnx.data.loader: batch %d of epoch %d has %d images for %d processes: each needs at least one "
               .. "(use a batch of at least %d, or drop_last)"):format(b, epoch, #entries, n, n), 0)
      end
      local mine = {total = #entries}
      for k = r + 1, #entries, n do mine[#mine + 1] = entries[k] end
      batches[b] = mine
    end
  end
  return batches
end

function Loader:batches_per_epoch(epoch)
  return #self:plan(epoch or 1)
end

-- Builds one batch from its plan entries: {images = (N,C,S,S) network
-- input, masks = (N,1,S,S) or nil, ids = {...}, indices = {...}}
function Loader:build(epoch, entries)
  local images, masks, ids, indices = {}, {}, {}, {}
  for i, e in ipairs(entries) do
    local sample = self.ds:get(e.index)
    if self.transform then
      sample = self.transform(sample, transforms.generator_for(self.seed, epoch, e.position))
    end
    images[i] = sample.image:unsqueeze(1)
    if sample.mask then masks[i] = sample.mask:unsqueeze(1) end
    ids[i], indices[i] = sample.id, e.index
  end
  local batch = {images = data.prepare(lpnx.cat(images, 1), self.meta), ids = ids, indices = indices}
  if #masks == #images then batch.masks = lpnx.cat(masks, 1) end
  return batch
end

---------------------------------------------------------------------------
-- worker processes

local sys

local function worker_main(self, cmd_fd, out_fd, w)
  lpnx.set_num_threads(1)      -- libgomp's thread pool does not survive fork
  sys.catch_signal("INT")      -- Ctrl-C is the trainer's to handle; it stops us
  sys.catch_signal("TERM")
  while true do
    local msg = sys.read_message(cmd_fd)
    if not msg or msg == "quit" then break end
    local epoch, first = msg:match("^epoch (%-?%d+) (%d+)$")
    epoch, first = math.tointeger(tonumber(epoch)), math.tointeger(tonumber(first))
    local plan = self:plan(epoch)
    for b = first + w, #plan, self.workers do
      local ok, batch = pcall(self.build, self, epoch, plan[b])
      if ok then
        sys.write_message(out_fd, ("ok %d\n%s\n%s"):format(b, table.concat(batch.ids, "\t"),
                                                            table.concat(batch.indices, ",")))
        sys.write_tensor(out_fd, batch.images)
        sys.write_tensor(out_fd, batch.masks or lpnx.zeros(0))
      else
        sys.write_message(out_fd, "error " .. tostring(batch))
        break
      end
    end
  end
  sys.exit(0)
end

-- Starts the worker processes (once; they live until close()).
function Loader:start()
  if self.workers == 0 or self.children then return end
  sys = sys or lpnx.sys
  self.children = {}
  for w = 0, self.workers - 1 do
    local cmd_r, cmd_w = sys.pipe()
    local out_r, out_w = sys.pipe()
    io.stdout:flush()
    io.stderr:flush()
    local pid = sys.fork()
    if pid == 0 then
      sys.close(cmd_w)
      sys.close(out_r)
      for _, other in ipairs(self.children) do -- the earlier workers' pipe ends are not ours
        sys.close(other.cmd)
        sys.close(other.out)
      end
      local ok, err = pcall(worker_main, self, cmd_r, out_w, w)
      if not ok then pcall(sys.write_message, out_w, "error " .. tostring(err)) end
      sys.exit(ok and 0 or 1)
    end
    sys.close(cmd_r)
    sys.close(out_w)
    self.children[w + 1] = {pid = pid, cmd = cmd_w, out = out_r}
  end
end

-- Stops the workers: closing their pipes ends them (an idle worker reads
-- end-of-file, a busy one fails its next write); one that does not exit
-- within two seconds is killed.
function Loader:close()
  if not self.children then return end
  for _, c in ipairs(self.children) do
    pcall(sys.close, c.cmd)
    pcall(sys.close, c.out)
  end
  for _, c in ipairs(self.children) do
    local deadline = sys.now() + 2
    while sys.waitpid(c.pid, true) == "running" do
      if sys.now() > deadline then
        pcall(sys.kill, c.pid, "KILL")
        pcall(sys.waitpid, c.pid)
        break
      end
      sys.sleep(0.01)
    end
  end
  self.children = nil
  self.busy = false
end

local function receive(self, c, w, expect)
  local msg = sys.read_message(c.out)
  if not msg then
    self:close()
    error(("data worker %d stopped unexpectedly"):format(w), 0)
  end
  local err = msg:match("^error (.*)$")
  if err then
    self:close()
    error(("data worker %d: %s"):format(w, err), 0)
  end
  local b, ids, indices = msg:match("^ok (%d+)\n(.-)\n(.*)$")
  if tonumber(b) ~= expect then
    self:close()
    error(("data worker %d sent batch %s, expected %d"):format(w, tostring(b), expect), 0)
  end
  local batch = {ids = {}, indices = {}}
  for id in ids:gmatch("[^\t]+") do batch.ids[#batch.ids + 1] = id end
  for i in indices:gmatch("%d+") do batch.indices[#batch.indices + 1] = math.tointeger(tonumber(i)) end
  batch.images = sys.read_tensor(c.out)
  local masks = sys.read_tensor(c.out)
  if masks and masks:numel() > 0 then batch.masks = masks end
  return batch
end

-- iter(epoch [, {start = b}]) -> an iterator of (b, batch) from batch
-- start (1-based) to the end of the epoch.
function Loader:iter(epoch, opts)
  local start = opts and opts.start or 1
  local plan = self:plan(epoch)
  if self.workers == 0 then
    local b = start - 1
    return function()
      b = b + 1
      if b > #plan then return nil end
      local batch = self:build(epoch, plan[b])
      batch.total = plan[b].total or #plan[b]
      return b, batch
    end
  end
  if self.busy then self:close() end -- a previous epoch was left half-read
  self:start()
  for _, c in ipairs(self.children) do sys.write_message(c.cmd, ("epoch %d %d"):format(epoch, start)) end
  self.busy = true
  local b = start - 1
  return function()
    b = b + 1
    if b > #plan then
      self.busy = false
      return nil
    end
    local w = (b - start) % self.workers
    local batch = receive(self, self.children[w + 1], w, b)
    batch.total = plan[b].total or #plan[b]
    return b, batch
  end
end

return {new = new, Loader = Loader}
