-- Run by spec/dist_spec.lua under `mpirun -np 2`: exercises every
-- collective of lpnx.dist and prints one "rank R: ..." line per check.
local lpnx = require "lpnx"
local dist = lpnx.dist
local rank, size = dist.init()
local function say(fmt, ...) io.write(("rank %d: " .. fmt .. "\n"):format(rank, ...)) io.flush() end
say("size %d local %d", size, dist.local_size())

local t = lpnx.tensor({1, 2, 3}):mul(rank + 1)
dist.allreduce(t, "sum")
say("sum %g %g %g", t[1], t[2], t[3])
local m = lpnx.tensor({2, 4}):mul(rank + 1)
dist.allreduce(m, "mean")
say("mean %g %g", m[1], m[2])

-- bucketed: a bucket of 1 MiB holds 262144 floats; the big tensor goes alone
local small = {}
for k = 1, 50 do small[k] = lpnx.full({k}, rank + k) end
local big = lpnx.full({300000}, rank + 0.5)
local list = {small[1], big}
for k = 2, 50 do list[#list + 1] = small[k] end
dist.allreduce_list(list, "sum", 1)
local ok = true
for k = 1, 50 do ok = ok and small[k]:eq(2 * k + 1):sum() == k end
say("list %s big %g %g", tostring(ok), big[1], big[300000])

local nums = dist.allreduce_numbers({rank, 0.1, 1e300}, "sum")
say("numbers %.17g %.17g %.17g", nums[1], nums[2], nums[3])

local b = rank == 0 and lpnx.tensor({7, 8, 9}) or lpnx.zeros(3)
dist.broadcast(b, 0)
say("broadcast %g %g %g", b[1], b[2], b[3])

-- argument errors come back as Lua errors before MPI is called
local e1 = select(2, pcall(dist.allreduce, lpnx.zeros(3, 4):t(), "sum"))
say("error %s", tostring(e1))
local e2 = select(2, pcall(dist.allreduce, lpnx.zeros(3), "max"))
say("error %s", tostring(e2))
local e3 = select(2, pcall(dist.broadcast, lpnx.zeros(3), 5))
say("error %s", tostring(e3))
-- an error inside MPI: the receiving buffer is shorter than what is sent
local e4 = select(2, pcall(dist.broadcast, rank == 0 and lpnx.zeros(1000) or lpnx.zeros(10), 0))
if rank == 1 then say("mpi error %s", tostring(e4)) end
dist.barrier()
dist.finalize()
say("done")
