-- Run by spec/dist_spec.lua under `mpirun -np 2`: rank 1 kills itself
-- (SIGKILL) while rank 0 goes on calling collectives; the job must end
-- with an error rather than leave rank 0 waiting.
local lpnx = require "lpnx"
local dist = lpnx.dist
local rank = dist.init()
local t = lpnx.ones(1000)
dist.allreduce(t, "sum")
io.write(("rank %d: first allreduce %g\n"):format(rank, t[1]))
io.flush()
if rank == 1 then lpnx.sys.kill(lpnx.sys.getpid(), "KILL") end
for _ = 1, 100000 do dist.allreduce(t, "mean") end
io.write(("rank %d: finished\n"):format(rank))
dist.finalize()
