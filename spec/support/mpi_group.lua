-- Run by spec/dist_spec.lua under `mpirun -np 2`: the process group of
-- lpnx.dist.group(), one "rank R: ..." line per check.
local lpnx = require "lpnx"
local dist = require "lpnx.dist"
local group = dist.group()
local rank = group:rank()
local function say(fmt, ...) io.write(("rank %d: " .. fmt .. "\n"):format(rank, ...)) io.flush() end
say("size %d local %d root %s", group:size(), group:local_size(), tostring(group:is_root()))
local s = group:sum({rank + 1, 0.5})
say("sum %g %g", s[1], s[2])
say("mean %g", group:mean(rank == 0 and 1 or 4, rank == 0 and 1 or 3))
local t = lpnx.tensor({1, 2}):mul(rank + 1)
group:sum_tensors({t})
say("tensors %g %g", t[1], t[2])
local b = lpnx.full({2}, rank + 7)
group:broadcast(b)
say("broadcast %g %g", b[1], b[2])
say("shard %s", table.concat(group:shard({"a", "b", "c"}), ","))
lpnx.manual_seed(rank)
local m = lpnx.nn.Sequential(lpnx.nn.Conv2d(1, 2, 3), lpnx.nn.BatchNorm2d(2))
m:get(2).running_mean:fill_(rank)
group:broadcast_module(m)
local w = m:get(1).weight:sum()
say("module %s %g", tostring(group:sum({w})[1] == 2 * w), m:get(2).running_mean[1])
say("sync %d %s", group:sync_batchnorm(m), type(m:get(2).sync))
local loss = lpnx.nn.ComboLoss{}
group:distribute(loss, 0.5)
say("distribute %s %g", type(loss.sync), loss.share)
group:barrier()
dist.finalize()
say("done")
