-- lpnx.dist: data-parallel training over MPI (Open MPI), started with
--   mpirun -np N lua5.4 script.lua
-- Every process runs the same script; rank 0 is the one that writes files
-- and talks. The collectives here must be called by every process in the
-- same order. Errors from MPI come back as Lua errors.
--
--   dist.available            true when lpnx was built with MPI
--   dist.init() -> rank, size dist.rank(), dist.size(), dist.local_size()
--   dist.active()             dist.finalize()   dist.barrier()   dist.abort([code])
--   dist.allreduce(t [, "sum"|"mean"]) -> t            in place
--   dist.allreduce_list(tensors [, op [, bucket_mb]]) -> tensors
--                             many tensors in few calls (packed into buckets)
--   dist.allreduce_numbers(list [, op]) -> list      a new list, in double
--   dist.broadcast(t [, root]) -> t                  in place
--   dist.broadcast_module(m [, root])                parameters and buffers
--   dist.broadcast_buffers(m [, root])               buffers only (BN statistics)
--   dist.sync_batchnorm(m [, on])                    BatchNorm2d statistics over every process
--   dist.share_batch(m, parts)                       every Conv2d of m groups its images as
--                             the whole batch that parts processes share (interleaved) is grouped
--   dist.summer() -> fn(list) -> list                 a sum over every process (what
--                             nn.BatchNorm2d.sync and a loss's distribute() take)
--   dist.shard(list [, rank, size]) -> list          items rank+1, rank+1+size, ...
--
-- A process group is what a data-parallel program asks of its processes,
-- with one interface for the processes of mpirun (dist.group()) and for a
-- plain run of one process (dist.single(), which needs no MPI), so that
-- the program runs the same code either way:
--   g:rank(), g:size(), g:local_size()  0-based rank; processes; processes on this machine
--   g:is_root()                  rank 0: the process that writes files and talks
--   g:barrier()
--   g:sum(list) -> list          numbers summed over the processes (a new list)
--   g:summer() -> fn(list) -> list   g:sum as a function (what train.validate takes)
--   g:mean(value, weight) -> number  the weight-weighted mean of every process's value
--   g:sum_tensors(list) -> list  tensors summed over the processes, in place (gradients)
--   g:broadcast(t) -> t          rank 0's tensor in every process, in place
--   g:broadcast_module(m)        rank 0's parameters and buffers; g:broadcast_buffers(m) buffers only
--   g:sync_batchnorm(m)          BatchNorm2d statistics over the whole group
--   g:distribute(loss, share)    loss:distribute over the group (share: this process's part of the batch)
--   g:shard(list) -> list        this process's share: items rank+1, rank+1+size, ...
-- With one process every sum is the value itself, a broadcast leaves
-- things as they are, and the shard is the whole list.
local class = require "lpnx.class"
local nn = require "lpnx.nn"

local dist = {}

local made, mpi = pcall(require, "lpnx.mpi")
dist.available = made

local function need()
  if not made then
    error("lpnx.dist: this lpnx was built without MPI (apt-get install openmpi-bin libopenmpi-dev, "
          .. "then make)", 3)
  end
end

-- Calls mpi[name](...), reporting any error as "lpnx.dist.NAME: ..." at
-- the caller of the lpnx.dist function.
local function call(name, ...)
  local ok, a = pcall(mpi[name], ...)
  if not ok then
    local msg = tostring(a):gsub("^[^\n]-dist%.lua:%d+: ", "")
    if not msg:match("^lpnx%.dist%.") then msg = ("lpnx.dist.%s: %s"):format(name, msg) end
    error(msg, 3)
  end
  return a
end

local function check_op(op, what)
  op = op or "sum"
  if op ~= "sum" and op ~= "mean" then
    error(("lpnx.dist.%s: op must be 'sum' or 'mean', got %s"):format(what, tostring(op)), 3)
  end
  return op
end

-- Initialises MPI (once) and returns this process's rank and the size.
function dist.init()
  need()
  if not mpi.active() then mpi.init() end
  return mpi.rank(), mpi.size()
end

function dist.active() return made and mpi.active() end

function dist.finalize()
  if made and mpi.active() then mpi.finalize() end
end

function dist.rank() need() return mpi.rank() end
function dist.size() need() return mpi.size() end
function dist.local_size() need() return mpi.local_size() end
function dist.barrier() need() call("barrier") end

-- Ends every process of the job (MPI_Abort) with code (default 1).
function dist.abort(code)
  need()
  mpi.abort(code or 1)
end

function dist.allreduce(t, op)
  need()
  return call("allreduce", t, check_op(op, "allreduce"))
end

function dist.allreduce_list(list, op, bucket_mb)
  need()
  if bucket_mb ~= nil and not (type(bucket_mb) == "number" and bucket_mb > 0) then
    error(("lpnx.dist.allreduce_list: bucket_mb must be a positive number, got %s"):format(tostring(bucket_mb)), 2)
  end
  local floats = math.max(1, math.floor((bucket_mb or 25) * 262144))
  return call("allreduce_list", list, check_op(op, "allreduce_list"), floats)
end

function dist.allreduce_numbers(list, op)
  need()
  return call("allreduce_numbers", list, check_op(op, "allreduce_numbers"))
end

function dist.broadcast(t, root)
  need()
  return call("broadcast", t, root or 0)
end

function dist.broadcast_buffers(m, root)
  need()
  for _, b in ipairs(m:named_buffers()) do mpi.broadcast(b.value, root or 0) end
end

function dist.broadcast_module(m, root)
  need()
  for _, p in ipairs(m:named_parameters()) do mpi.broadcast(p.value, root or 0) end
  dist.broadcast_buffers(m, root)
end

-- A function summing a list of numbers over every process: what
-- nn.BatchNorm2d.sync and the losses' distribute() take.
function dist.summer()
  need()
  return function(list) return mpi.allreduce_numbers(list, "sum") end
end

-- Sets field to value in every module of m that is a cls; returns how many.
local function set_each(m, cls, field, value)
  local count = 0
  m:apply(function(mod)
    if class.isinstance(mod, cls) then
      mod[field] = value
      count = count + 1
    end
  end)
  return count
end

-- share_batch(m, parts): parts processes (a power of two) share each batch,
-- each holding every parts-th image; every Conv2d of m then groups its
-- images as one process groups the whole batch, so that the processes'
-- summed weight gradients are that process's bits. Returns how many
-- convolutions it set. Needs no MPI.
function dist.share_batch(m, parts)
  if math.type(parts) ~= "integer" or parts < 1 or parts & (parts - 1) ~= 0 then
    error(("lpnx.dist.share_batch: parts must be a power of two, got %s"):format(tostring(parts)), 2)
  end
  return set_each(m, nn.Conv2d, "batch_parts", parts)
end

-- Makes every BatchNorm2d in m normalise with statistics over the whole
-- global batch (all processes), in train mode, forward and backward;
-- on = false turns it off again. Returns the number of layers.
function dist.sync_batchnorm(m, on)
  return set_each(m, nn.BatchNorm2d, "sync", on ~= false and dist.summer() or nil)
end

-- This process's share of a list: items rank+1, rank+1+size, ... (rank
-- 0-based, as MPI counts).
function dist.shard(list, rank, size)
  rank = rank or dist.rank()
  size = size or dist.size()
  local out = {}
  for i = rank + 1, #list, size do out[#out + 1] = list[i] end
  return out
end

---------------------------------------------------------------------------
-- process groups (see the top of this file)

-- One process: no MPI, nothing to exchange.
local Single = {}
Single.__index = Single

function dist.single() return setmetatable({}, Single) end

function Single.rank() return 0 end
function Single.size() return 1 end
function Single.local_size() return 1 end
function Single.is_root() return true end
function Single.barrier() end
local function copy(list) return table.move(list, 1, #list, 1, {}) end
function Single.sum(_, list) return copy(list) end
function Single.summer() return copy end
function Single.mean(_, value) return value end
function Single.sum_tensors(_, list) return list end
function Single.broadcast(_, t) return t end
function Single.broadcast_module() end
function Single.broadcast_buffers() end
function Single.sync_batchnorm(_, m) return dist.sync_batchnorm(m, false) end -- its own statistics
function Single.distribute(_, loss) loss:distribute(nil) end
function Single.shard(_, list) return dist.shard(list, 0, 1) end

-- Every process of the mpirun job (MPI_COMM_WORLD).
local World = {}
World.__index = World

-- Initialises MPI (once) and returns the group of every process.
function dist.group()
  need()
  local rank, size = dist.init()
  local self = setmetatable({rank_ = rank, size_ = size}, World)
  self.sum_fn = function(list) return mpi.allreduce_numbers(list, "sum") end
  return self
end

function World:rank() return self.rank_ end
function World:size() return self.size_ end
function World.local_size() return dist.local_size() end
function World:is_root() return self.rank_ == 0 end
function World.barrier() dist.barrier() end
function World:sum(list) return self.sum_fn(list) end
function World:summer() return self.sum_fn end

function World:mean(value, weight)
  local t = self.sum_fn({value * weight, weight})
  return t[1] / t[2]
end

function World.sum_tensors(_, list) return dist.allreduce_list(list, "sum") end
function World.broadcast(_, t) return dist.broadcast(t, 0) end
function World.broadcast_module(_, m) dist.broadcast_module(m, 0) end
function World.broadcast_buffers(_, m) dist.broadcast_buffers(m, 0) end
function World.sync_batchnorm(_, m) return dist.sync_batchnorm(m) end
function World:distribute(loss, share) loss:distribute(self.sum_fn, share) end
function World:shard(list) return dist.shard(list, self.rank_, self.size_) end

return dist
