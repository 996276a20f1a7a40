-- Run by spec/dist_spec.lua under mpirun: trains with lpnx.train.run{dist
-- = true} and has every rank save its own final weights to
-- OUT/rank-R.safetensors, so that the ranks can be compared.
--   mpirun -np 2 lua5.4 spec/support/mpi_train_ranks.lua DATA OUT [sync_bn]
local lpnx = require "lpnx"
local data, out, sync = arg[1], arg[2], arg[3] == "sync_bn"
local r = lpnx.train.run{
  data = data, out = out, size = 64, encoder = "resnet18", encoder_width = 8,
  decoder_channels = {32, 16, 8, 8, 4}, epochs = 2, batch = 2, lr = 1e-3, workers = 0, seed = 3,
  val_fraction = 0.2, dist = true, sync_bn = sync, threads = 1, progress = false,
}
local sd = {}
for k, v in pairs(r.model:state_dict()) do sd[k] = v end
lpnx.dist.barrier()
lpnx.save(("%s/rank-%d.safetensors"):format(out, r.rank), sd)
print(("rank %d of %d: %d steps, val dice %s"):format(r.rank, r.size, r.steps, tostring(r.val_dice)))
lpnx.dist.finalize()
