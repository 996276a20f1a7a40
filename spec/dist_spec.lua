-- Data-parallel training: the split kernels that synchronised batch
-- normalisation and the Dice loss use, the whole network with a batch
-- spread over simulated processes (coroutines standing in for ranks), the
-- sharded loader, and, where mpirun is installed (make deps installs Open
-- MPI), real runs of 2 processes.
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"

local K, R = lpnx.kernels, lpnx.ref

local function rel(a, b)
  local d = math.sqrt((a - b):pow(2):sum())
  return d / math.max(math.sqrt(a:pow(2):sum()), 1e-30)
end

local function rows(t, list)
  local parts = {}
  for k, i in ipairs(list) do parts[k] = t:narrow(1, i, 1) end
  return lpnx.cat(parts, 1)
end

local function add_lists(a, b)
  local out = {}
  for i = 1, #a do out[i] = a[i] + b[i] end
  return out
end

-- Runs body(rank, size, sum) in `size` coroutines standing in for the
-- processes of a job; sum(list) is their collective: it returns the
-- elementwise sum of every rank's list once all of them have called it.
local function run_ranks(size, body)
  local cos, results, waiting = {}, {}, {}
  local function sum(list) return coroutine.yield(list) end
  for r = 1, size do
    cos[r] = coroutine.create(function() return body(r - 1, size, sum) end)
  end
  local input = {}
  while true do
    local alive = 0
    for r = 1, size do
      if coroutine.status(cos[r]) ~= "dead" then
        local ok, v = coroutine.resume(cos[r], input[r])
        assert(ok, v)
        if coroutine.status(cos[r]) == "dead" then results[r] = v else waiting[r] = v; alive = alive + 1 end
      end
    end
    if alive == 0 then return results end
    assert(alive == size, "the ranks left the collective at different points")
    local total = waiting[1]
    for r = 2, size do total = add_lists(total, waiting[r]) end
    for r = 1, size do input[r] = {table.unpack(total)} end
  end
end

describe("synchronised batch normalisation kernels", function()
  local g = lpnx.Generator(7)
  local function stats(C)
    return lpnx.rand({C}, g):add(0.5), lpnx.randn({C}, g), lpnx.zeros(C), lpnx.ones(C)
  end

  it("equal their oracles", function()
    for _, shape in ipairs {{2, 3, 5, 4}, {1, 1, 3, 3}, {3, 4, 1, 7}} do
      local x = lpnx.randn(shape, g):mul(3):add(1)
      local C = shape[2]
      local s1, n1 = K.batchnorm_sum(x)
      local s2, n2 = R.batchnorm_sum(x)
      assert.are.equal(shape[1] * shape[3] * shape[4], n1)
      assert.are.equal(n1, n2)
      local mean = {}
      for c = 1, C do
        assert.is_true(math.abs(s1[c] - s2[c]) <= 1e-9 * (1 + math.abs(s2[c])))
        mean[c] = s1[c] / n1
      end
      local q1, q2 = K.batchnorm_sqdev(x, mean), R.batchnorm_sqdev(x, mean)
      for c = 1, C do assert.is_true(math.abs(q1[c] - q2[c]) <= 1e-9 * (1 + q2[c])) end
      local w, b, rm, rv = stats(C)
      local rm2, rv2 = rm:clone(), rv:clone()
      local sm, si, sm2, si2 = lpnx.zeros(C), lpnx.zeros(C), lpnx.zeros(C), lpnx.zeros(C)
      local y1 = K.batchnorm_train_apply(x, w, b, rm, rv, 0.1, 1e-5, sm, si, mean, q1, n1)
      local y2 = R.batchnorm_train_apply(x, w, b, rm2, rv2, 0.1, 1e-5, sm2, si2, mean, q1, n1)
      helpers.assert_near(y1, y2, 1e-5)
      helpers.assert_near(rm, rm2, 1e-6)
      helpers.assert_near(rv, rv2, 1e-6)
      helpers.assert_near(si, si2, 1e-6)
      local gy = lpnx.randn(shape, g)
      local a1, d1 = K.batchnorm_backward_reduce(x, gy, sm)
      local a2, d2 = R.batchnorm_backward_reduce(x, gy, sm)
      for c = 1, C do
        assert.is_true(math.abs(a1[c] - a2[c]) <= 1e-9 * (1 + math.abs(a2[c])))
        assert.is_true(math.abs(d1[c] - d2[c]) <= 1e-9 * (1 + math.abs(d2[c])))
      end
      local gw1, gb1, gw2, gb2 = lpnx.zeros(C), lpnx.zeros(C), lpnx.zeros(C), lpnx.zeros(C)
      local gx1 = K.batchnorm_backward_input(x, gy, w, sm, si, gw1, gb1, a1, d1, n1, 0.5)
      local gx2 = R.batchnorm_backward_input(x, gy, w, sm, si, gw2, gb2, a1, d1, n1, 0.5)
      helpers.assert_near(gx1, gx2, 1e-5)
      helpers.assert_near(gw1, gw2, 1e-5)
      helpers.assert_near(gb1, gb2, 1e-5)
    end
  end)

  it("give the fused kernels' bits when nothing is summed in between", function()
    local x, gy = lpnx.randn({3, 5, 6, 7}, g), lpnx.randn({3, 5, 6, 7}, g)
    local w, b, rm, rv = stats(5)
    local rm2, rv2 = rm:clone(), rv:clone()
    local sm, si, sm2, si2 = lpnx.zeros(5), lpnx.zeros(5), lpnx.zeros(5), lpnx.zeros(5)
    local fused = K.batchnorm_train(x, w, b, rm, rv, 0.1, 1e-5, sm, si)
    local sum, n = K.batchnorm_sum(x)
    local mean = {}
    for c = 1, 5 do mean[c] = sum[c] / n end
    local split = K.batchnorm_train_apply(x, w, b, rm2, rv2, 0.1, 1e-5, sm2, si2, mean, K.batchnorm_sqdev(x, mean), n)
    assert.is_true(fused:equal(split))
    assert.is_true(rm:equal(rm2) and rv:equal(rv2) and sm:equal(sm2) and si:equal(si2))
    local gw, gb, gw2, gb2 = lpnx.zeros(5), lpnx.zeros(5), lpnx.zeros(5), lpnx.zeros(5)
    local gx = K.batchnorm_backward(x, gy, w, sm, si, gw, gb)
    local s_gy, dot = K.batchnorm_backward_reduce(x, gy, sm)
    local gx2 = K.batchnorm_backward_input(x, gy, w, sm, si, gw2, gb2, s_gy, dot, n, 1)
    assert.is_true(gx:equal(gx2) and gw:equal(gw2) and gb:equal(gb2))
  end)

  it("over two halves of a batch, with summed statistics, equal one pass over the whole batch", function()
    local x, gy = lpnx.randn({4, 3, 5, 5}, g):mul(2):add(0.5), lpnx.randn({4, 3, 5, 5}, g)
    local w, b, rm, rv = stats(3)
    local sm, si = lpnx.zeros(3), lpnx.zeros(3)
    local gw, gb = lpnx.zeros(3), lpnx.zeros(3)
    local y = K.batchnorm_train(x, w, b, rm:clone(), rv:clone(), 0.1, 1e-5, sm, si)
    local gx = K.batchnorm_backward(x, gy, w, sm, si, gw, gb)
    local halves = {{1, 3}, {2, 4}} -- ranks take items r+1, r+1+size
    local out = run_ranks(2, function(r, size, sum)
      local xr, gyr = rows(x, halves[r + 1]), rows(gy, halves[r + 1])
      local s, n = K.batchnorm_sum(xr)
      s[#s + 1] = n
      s = sum(s)
      local count = table.remove(s)
      local mean = {}
      for c = 1, 3 do mean[c] = s[c] / count end
      local ss = sum(K.batchnorm_sqdev(xr, mean))
      local smr, sir, rmr, rvr = lpnx.zeros(3), lpnx.zeros(3), rm:clone(), rv:clone()
      local yr = K.batchnorm_train_apply(xr, w, b, rmr, rvr, 0.1, 1e-5, smr, sir, mean, ss, count)
      local a, d = K.batchnorm_backward_reduce(xr, gyr, smr)
      local both = sum(table.move(d, 1, 3, 4, a))
      local gwr, gbr = lpnx.zeros(3), lpnx.zeros(3)
      local gxr = K.batchnorm_backward_input(xr, gyr, w, smr, sir, gwr, gbr, table.move(both, 1, 3, 1, {}),
                                             table.move(both, 4, 6, 1, {}), count, 1 / size)
      return {y = yr, gx = gxr, gw = gwr, gb = gbr, rm = rmr, rv = rvr, mean = smr}
    end)
    for r = 1, 2 do
      helpers.assert_near(out[r].y, rows(y, halves[r]), 1e-5)
      helpers.assert_near(out[r].gx, rows(gx, halves[r]), 1e-5)
      helpers.assert_near(out[r].mean, sm, 1e-6)
    end
    helpers.assert_near(out[1].gw + out[2].gw, gw, 1e-5)
    helpers.assert_near(out[1].gb + out[2].gb, gb, 1e-5)
    assert.is_true(out[1].rm:equal(out[2].rm) and out[1].rv:equal(out[2].rv))
    local rm_full, rv_full = rm:clone(), rv:clone()
    K.batchnorm_train(x, w, b, rm_full, rv_full, 0.1, 1e-5, lpnx.zeros(3), lpnx.zeros(3))
    helpers.assert_near(out[1].rm, rm_full, 1e-6)
    helpers.assert_near(out[1].rv, rv_full, 1e-6) -- unbiased over all 100 values, not 50
  end)

  it("reject statistics that do not fit", function()
    local x = lpnx.randn({2, 3, 4, 4}, g)
    local w, b, rm, rv = stats(3)
    local sm, si = lpnx.zeros(3), lpnx.zeros(3)
    assert.has_error(function() K.batchnorm_sqdev(x, {1, 2}) end,
                     "bad argument #2 to 'batchnorm_sqdev' (expected mean as 3 numbers (one per channel), got 2)")
    assert.has_error(function() K.batchnorm_sqdev(x, {1, "x", 3}) end,
                     "bad argument #2 to 'batchnorm_sqdev' (expected mean[2] to be a finite number)")
    assert.has_error(function()
      K.batchnorm_train_apply(x, w, b, rm, rv, 0.1, 1e-5, sm, si, {0, 0, 0}, {1, 1, 1}, 10)
    end, "bad argument #12 to 'batchnorm_train_apply' (count must be more than 1 and at least the 32 values "
         .. "per channel of x, got 10.0)")
    assert.has_error(function()
      K.batchnorm_train_apply(x, w, b, rm, rv, 0.1, 1e-5, sm, si, {0, 0, 0}, {1, -1, 1}, 64)
    end, "bad argument #11 to 'batchnorm_train_apply' (expected ss[2] >= 0)")
    assert.has_error(function()
      K.batchnorm_backward_input(x, x, w, sm, si, lpnx.zeros(3), lpnx.zeros(3), {0, 0, 0}, {0, 0, 0}, 64, 0)
    end, "bad argument #11 to 'batchnorm_backward_input' (part must be in (0, 1], got 0.0)")
  end)
end)

describe("the Dice loss over a batch spread over processes", function()
  local g = lpnx.Generator(8)

  it("sums its three sums and gives each process its part of the gradient", function()
    local x = lpnx.randn({4, 1, 6, 6}, g):mul(2)
    local t = lpnx.rand({4, 1, 6, 6}, g):gt(0.6)
    local a, b, c = K.dice_sums(x, t)
    local a2, b2, c2 = R.dice_sums(x, t)
    assert.is_true(math.abs(a - a2) < 1e-9 and math.abs(b - b2) < 1e-9 and c == c2)
    assert.are.equal(t:sum(), c)
    local full = K.dice_loss_backward(x, t, 1)
    helpers.assert_near(K.dice_loss_backward_sums(x, t, a, b, c, 1), full, 0)
    helpers.assert_near(R.dice_loss_backward_sums(x, t, a, b, c, 1), full, 1e-7)
    local out = run_ranks(2, function(r, _, sum)
      local mine = r == 0 and {1, 2} or {3, 4}
      local loss = lpnx.nn.DiceLoss{}:distribute(sum, 0.5)
      local xr, tr = rows(x, mine), rows(t, mine)
      return {loss = loss:forward(xr, tr), grad = loss:backward(xr, tr)}
    end)
    assert.is_true(math.abs(out[1].loss - K.dice_loss(x, t, 1)) < 1e-7)
    assert.are.equal(out[1].loss, out[2].loss)
    helpers.assert_near(lpnx.cat({out[1].grad, out[2].grad}, 1), full, 1e-9)
    assert.has_error(function() K.dice_loss_backward_sums(x, t, -1, b, c, 1) end,
                     "bad argument #3 to 'dice_loss_backward_sums' (sum_pt must be a finite number >= 0, got -1.0)")
  end)

  it("distribute checks its arguments", function()
    assert.has_error(function() lpnx.nn.BCEWithLogitsLoss{}:distribute(5, 0.5) end,
                     "nn.BCEWithLogitsLoss:distribute: sync must be a function or nil, got number")
    assert.has_error(function() lpnx.nn.ComboLoss{}:distribute(nil, 0) end,
                     "nn.ComboLoss:distribute: share must be in (0, 1], got 0")
  end)
end)

describe("a U-Net trained on a batch spread over two processes", function()
  it("matches one process on the whole batch: loss, outputs and summed gradients (sync BN)", function()
    local g = lpnx.Generator(11)
    local x, t = lpnx.randn({4, 3, 64, 64}, g), lpnx.rand({4, 1, 64, 64}, g):gt(0.7)
    local function build()
      lpnx.manual_seed(3)
      local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 8, decoder_channels = {16, 8, 8, 8, 4}}
      m.encoder.conv1.need_input_grad = false
      m:train()
      return m
    end
    local full = build()
    local crit = lpnx.nn.ComboLoss{bce = 1, dice = 1, focal = 1}
    local loss = crit:forward(full:forward(x), t)
    full:backward(x, crit:backward(full.output, t))
    local _, grads = full:parameters()
    local share = {{1, 3}, {2, 4}}
    local out = run_ranks(2, function(r, _, sum)
      local m = build()
      m:apply(function(mod) if mod.__name == "nn.BatchNorm2d" then mod.sync = sum end end)
      local c = lpnx.nn.ComboLoss{bce = 1, dice = 1, focal = 1}:distribute(sum, 2 / 4)
      local xr, tr = rows(x, share[r + 1]), rows(t, share[r + 1])
      lpnx.dist.share_batch(m, 2) -- each holds every other image
      local l = c:forward(m:forward(xr), tr)
      m:backward(xr, c:backward(m.output, tr))
      local _, gr = m:parameters()
      return {loss = l, out = m.output:clone(), grads = gr, model = m}
    end)
    assert.is_true(math.abs(out[1].loss - loss) < 1e-6 * loss)
    assert.are.equal(out[1].loss, out[2].loss)
    -- the same arithmetic as one process: outputs bit for bit, gradients to the last bits of double sums
    for r = 1, 2 do assert.is_true(rows(full.output, share[r]):equal(out[r].out)) end
    local worst = 0
    for i, gf in ipairs(grads) do worst = math.max(worst, rel(gf, out[1].grads[i] + out[2].grads[i])) end
    assert.is_true(worst < 1e-6, ("summed gradients differ by %g (relative norm)"):format(worst))
    -- the running statistics are the whole batch's, the same in both processes
    local rm_full = full.encoder.bn1.running_var
    assert.is_true(out[1].model.encoder.bn1.running_var:equal(out[2].model.encoder.bn1.running_var))
    assert.is_true(rel(rm_full, out[1].model.encoder.bn1.running_var) < 1e-6)
  end)
end)

describe("the sharded loader", function()
  local dir
  setup(function()
    dir = helpers.tmpdir()
    local syn = lpnx.synth
    assert(os.execute(("LUA_PATH='%s' LUA_CPATH='%s' lua5.4 examples/make_synthetic.lua --out %s/data --count 10 "
                       .. "--size 128 --seed 2 --test-fraction 0 > /dev/null 2>&1")
                      :format(package.path, package.cpath, dir)))
    assert(syn)
  end)
  teardown(function() helpers.rmdir(dir) end)

  it("gives each process its share of every global batch, augmented as one process would", function()
    local ds = lpnx.data.siim{root = dir .. "/data", csv = dir .. "/data/train-rle.csv", size = 64}
    local opts = {batch = 4, transform = lpnx.transforms.siim_train(64), seed = 5, drop_last = true}
    local one = lpnx.data.loader(ds, opts)
    local parts = {}
    for r = 0, 1 do
      local o = {shard = {rank = r, size = 2}}
      for k, v in pairs(opts) do o[k] = v end
      parts[r + 1] = lpnx.data.loader(ds, o)
    end
    local seen = 0
    for b, whole in one:iter(2) do
      assert.are.equal(4, whole.total)
      for r = 1, 2 do
        local _, part = parts[r]:iter(2, {start = b})()
        assert.are.equal(4, part.total)
        assert.are.same({whole.ids[r], whole.ids[r + 2]}, part.ids)
        assert.is_true(part.images:equal(rows(whole.images, {r, r + 2})))
        assert.is_true(part.masks:equal(rows(whole.masks, {r, r + 2})))
      end
      seen = seen + 1
    end
    assert.are.equal(2, seen) -- 10 images, batches of 4, the last 2 dropped
    assert.has_error(function() lpnx.data.loader(ds, {batch = 4, shard = {rank = 2, size = 2}}) end,
                     "lpnx.data.loader: shard must be {rank = r, size = n} with 0 <= r < n, got rank 2 size 2")
    local tiny = lpnx.data.loader(ds, {batch = 4, shard = {rank = 0, size = 3}})
    assert.has_error(function() tiny:plan(1) end,
                     "lpnx.data.loader: batch 3 of epoch 1 has 2 images for 3 processes: each needs at least one "
                     .. "(use a batch of at least 3, or drop_last)")
  end)
end)

describe("a process group of one (lpnx.dist.single)", function()
  local group = lpnx.dist.single()

  it("is rank 0 of 1, the root, on a machine of its own", function()
    assert.are.same({0, 1, 1, true}, {group:rank(), group:size(), group:local_size(), group:is_root()})
    group:barrier()
  end)

  it("sums to the values themselves, in a new list, and its mean is the value", function()
    local list = {1, 2.5, 3}
    local sum = group:sum(list)
    assert.are.same(list, sum)
    assert.are_not.equal(list, sum)
    assert.are.same(list, group:summer()(list))
    assert.are.equal(0.1, group:mean(0.1, 3))
  end)

  it("leaves tensors and modules as they are and shards nothing off", function()
    local t = lpnx.tensor{1, 2}
    assert.are.equal(t, group:sum_tensors({t})[1])
    assert.are.equal(t, group:broadcast(t))
    assert.is_true(t:equal(lpnx.tensor{1, 2}))
    local list = {"a", "b", "c"}
    assert.are.same(list, group:shard(list))
    local m = lpnx.nn.Sequential(lpnx.nn.Conv2d(1, 2, 3), lpnx.nn.BatchNorm2d(2))
    local before = m:state_dict()["0.weight"]:clone()
    group:broadcast_module(m)
    group:broadcast_buffers(m)
    assert.is_true(before:equal(m:state_dict()["0.weight"]))
    assert.are.equal(1, group:sync_batchnorm(m))
    assert.is_nil(m:get(2).sync)
  end)

  it("makes a loss that of this process's batch", function()
    local g = lpnx.Generator(3)
    local x, t = lpnx.randn({2, 1, 5, 5}, g), lpnx.rand({2, 1, 5, 5}, g):gt(0.5)
    local c = lpnx.nn.ComboLoss{}
    local plain = c:forward(x, t)
    c:distribute(function(l) return l end, 0.5)
    group:distribute(c, 1)
    assert.is_nil(c.sync)
    assert.are.equal(plain, c:forward(x, t))
  end)
end)

-- Real processes under Open MPI: mpirun as root needs to be told it may.
local function have_mpirun()
  return lpnx.dist.available and os.execute("command -v mpirun > /dev/null 2>&1") == true
end

local function mpirun(np, cmd)
  -- Under make ASAN=1 the ranks inherit the sanitizer (LD_PRELOAD); Open
  -- MPI's own allocations at exit are not lpnx's leaks, and mpirun itself
  -- runs without it.
  local preload = os.getenv("LD_PRELOAD")
  local env = ""
  if preload and preload ~= "" then
    env = ("-x LD_PRELOAD='%s' -x ASAN_OPTIONS='detect_leaks=0' -x UBSAN_OPTIONS "):format(preload)
  end
  return ("env -u LD_PRELOAD OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
          .. "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 300 mpirun -np %d -x LUA_PATH -x LUA_CPATH %s%s")
         :format(np, env, cmd)
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  return out
end

describe("lpnx.dist under mpirun #mpi", function()
  local dir
  setup(function()
    if not have_mpirun() then return end
    dir = helpers.tmpdir()
    assert(os.execute(("lua5.4 examples/make_synthetic.lua --out %s/data --count 12 --size 128 --seed 4 "
                       .. "--test-fraction 0 > /dev/null 2>&1"):format(dir)))
  end)
  teardown(function() if dir then helpers.rmdir(dir) end end)

  it("is built and mpirun is installed (make deps installs Open MPI)", function()
    assert.is_true(lpnx.dist.available, "lpnx.mpi was not built")
    assert.is_true(have_mpirun(), "mpirun is missing")
  end)

  it("runs every collective, and errors come back as Lua errors", function()
    local out = sh(mpirun(2, "lua5.4 spec/support/mpi_collectives.lua"))
    assert.matches("exit=0", out, 1, true)
    for r = 0, 1 do
      for _, line in ipairs {
        "size 2 local 2", "sum 3 6 9", "mean 3 6", "list true big 2 2",
        "numbers 1 0.20000000000000001 2.0000000000000001e+300", "broadcast 7 8 9",
        "error spec/support/mpi_collectives.lua:35: lpnx.dist.allreduce: bad argument #1 to 'lpnx.mpi.allreduce' "
          .. "(allreduce works in place: expected a contiguous tensor)",
        "error lpnx.dist.allreduce: op must be 'sum' or 'mean', got max",
        "error spec/support/mpi_collectives.lua:39: lpnx.dist.broadcast: bad argument #2 to 'lpnx.mpi.broadcast' "
          .. "(root must be a rank in [0, 2), got 5)",
        "done"} do
        assert.matches(("rank %d: %s"):format(r, line), out, 1, true)
      end
    end
    assert.matches("rank 1: mpi error spec/support/mpi_collectives.lua:42: lpnx.dist.broadcast: MPI_ERR_TRUNCATE: "
                   .. "message truncated", out, 1, true)
  end)

  it("dist.group() offers what dist.single() does, over the processes", function()
    local out = sh(mpirun(2, "lua5.4 spec/support/mpi_group.lua"))
    assert.matches("exit=0", out, 1, true)
    for r = 0, 1 do
      for _, line in ipairs {("size 2 local 2 root %s"):format(tostring(r == 0)), "sum 3 1", "mean 3.25",
                             "tensors 3 6", "broadcast 7 7", r == 0 and "shard a,c" or "shard b", "module true 0",
                             "sync 1 function", "distribute function 0.5", "done"} do
        assert.matches(("rank %d: %s"):format(r, line), out, 1, true)
      end
    end
  end)

  it("2 processes with --sync-bn end with the very weights of 1 process over the same global batches", function()
    -- each side at its default thread count: the one process runs every core, each of the two one
    local args = ("--data %s/data --size 64 --encoder resnet18 --encoder-width 8 --decoder-channels 32,16,8,8,4 "
                  .. "--epochs 2 --batch 4 --lr 1e-3 --workers 1 --seed 5 --val-fraction 0.25"):format(dir)
    local one = sh(("lua5.4 examples/train.lua %s --out %s/one"):format(args, dir))
    assert.matches("exit=0", one, 1, true)
    local two = sh(mpirun(2, ("lua5.4 examples/train.lua %s --out %s/two --dist --sync-bn"):format(args, dir)))
    assert.matches("exit=0", two, 1, true)
    assert.matches("trained 2 epochs", two, 1, true)
    local a, b = lpnx.load(dir .. "/one/model.safetensors"), lpnx.load(dir .. "/two/model.safetensors")
    local n, differ = 0, {}
    for k, v in pairs(a) do
      assert.is_truthy(b[k], k)
      n = n + 1
      if not v:equal(b[k]) then differ[#differ + 1] = ("%s (relative norm %g)"):format(k, rel(v, b[k])) end
    end
    assert.is_true(n > 100)
    table.sort(differ)
    assert.are.same({}, differ)
    -- the same steps, losses and validation scores in the two logs (rank 0 writes the one)
    local function log_without_time(path)
      return (io.open(path):read("a"):gsub(",[%d.]*\n", "\n"))
    end
    assert.are.equal(log_without_time(dir .. "/one/log.csv"), log_without_time(dir .. "/two/log.csv"))
  end)

  it("without --sync-bn the processes end with bitwise identical weights", function()
    local out = sh(mpirun(2, ("lua5.4 spec/support/mpi_train_ranks.lua %s/data %s/ranks"):format(dir, dir)))
    assert.matches("exit=0", out, 1, true)
    assert.matches("rank 1 of 2: 6 steps", out, 1, true)
    assert.matches("rank 0 of 2: 6 steps", out, 1, true)
    local a, b = lpnx.load(dir .. "/ranks/rank-0.safetensors"), lpnx.load(dir .. "/ranks/rank-1.safetensors")
    local n = 0
    for k, v in pairs(a) do
      n = n + 1
      assert.is_true(v:equal(b[k]), k .. " differs between the ranks")
    end
    assert.is_true(n > 100)
    local best = lpnx.load(dir .. "/ranks/model.safetensors")
    for k, v in pairs(best) do assert.is_true(v:equal(a[k]), k) end
  end)

  it("a process that dies ends the others with an error instead of a hang", function()
    local t0 = lpnx.sys.now()
    local out = sh(mpirun(2, "lua5.4 spec/support/mpi_die.lua"))
    assert.is_true(lpnx.sys.now() - t0 < 60)
    assert.matches("rank 0: first allreduce 2", out, 1, true)
    assert.not_matches("finished", out, 1, true)
    assert.matches("exited on signal 9", out, 1, true)
    assert.not_matches("exit=0", out, 1, true)
    assert.not_matches("exit=124", out, 1, true) -- not the timeout
  end)

  it("train.lua --dist: a killed process stops the job; flags are checked", function()
    local args = ("--data %s/data --out %s/killed --size 64 --encoder resnet18 --encoder-width 8 "
                  .. "--decoder-channels 32,16,8,8,4 --epochs 500 --batch 4 --workers 1 --dist"):format(dir, dir)
    local log = dir .. "/killed.txt"
    os.execute(("(%s > %s 2>&1; echo \"exit=$?\" >> %s) &"):format(mpirun(2, "lua5.4 examples/train.lua " .. args),
                                                                     log, log))
    local killed = false
    for _ = 1, 600 do
      local f = io.open(dir .. "/killed/log.csv")
      local lines = f and select(2, f:read("a"):gsub("\n", "")) or 0
      if f then f:close() end
      if lines > 3 then
        -- rank 1 (and its data worker): the processes whose environment says so
        -- (procps tools are run without the sanitizer a make ASAN=1 run preloads)
        local p = io.popen(("for p in $(env -u LD_PRELOAD pgrep -f '[o]ut %s/killed'); do "
                            .. "{ tr '\\0' '\\n' < /proc/$p/environ; } 2>/dev/null | "
                            .. "grep -qx OMPI_COMM_WORLD_RANK=1 && kill -9 $p && echo $p; done"):format(dir))
        killed = p:read("a") ~= ""
        p:close()
        break
      end
      lpnx.sys.sleep(0.1)
    end
    assert.is_true(killed, "rank 1 was not found")
    local text
    for _ = 1, 600 do
      text = io.open(log):read("a")
      if text:match("exit=%d+") then break end
      lpnx.sys.sleep(0.1)
    end
    assert.matches("exited on signal 9", text, 1, true)
    assert.not_matches("exit=0", text, 1, true)
    assert.not_matches("exit=124", text, 1, true)
    local left = sh(("env -u LD_PRELOAD pgrep -f '[o]ut %s/killed' || true"):format(dir))
    assert.are.equal("exit=0\n", left)

    local bad = sh(mpirun(2, ("lua5.4 examples/train.lua --data %s/data --out %s/bad --batch 1 --dist --size 64")
                             :format(dir, dir)))
    assert.matches("a global batch of 1 images cannot be shared by 2 processes: use --batch 2 or more", bad, 1, true)
    assert.not_matches("exit=0", bad, 1, true)
    local nodist = sh(("lua5.4 examples/train.lua --data %s/data --out %s/bad --sync-bn"):format(dir, dir))
    assert.matches("train.lua: --sync-bn needs --dist\nexit=2", nodist, 1, true)
  end)
end)

describe("lpnx.dist.share_batch", function()
  it("sets every convolution of a model and needs no MPI", function()
    local m = lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {16, 8, 8, 8, 4}}
    local convs = lpnx.dist.share_batch(m, 2)
    assert.is_true(convs > 20)
    local seen = 0
    m:apply(function(mod)
      if mod.__name == "nn.Conv2d" then
        seen = seen + 1
        assert.are.equal(2, mod.batch_parts)
      end
    end)
    assert.are.equal(convs, seen)
    assert.has_error(function() lpnx.dist.share_batch(m, 3) end,
      "lpnx.dist.share_batch: parts must be a power of two, got 3")
  end)
end)
