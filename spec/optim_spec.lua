local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local optim = require "lpnx.optim"

local K, R = lpnx.kernels, lpnx.ref

local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- The parameters and three steps of gradients the PyTorch numbers below
-- were computed on.
local P1 = {{0.5, -0.3, 0.8}, {0.1, -0.7, 0.2}}
local P2 = {1.5, -2.0, 0.25, 0.0}
local G = {
  {{{0.1, -0.2, 0.3}, {0.05, 0.0, -0.4}}, {1.0, -0.5, 0.25, 2.0}},
  {{{-0.3, 0.1, 0.2}, {0.4, -0.1, 0.0}}, {0.5, 0.5, -1.0, 0.1}},
  {{{0.2, 0.2, -0.1}, {-0.05, 0.3, 0.1}}, {-0.25, 1.5, 0.75, -0.3}},
}

-- Parameters after steps 1, 2, 3 (p1 flattened, p2), from torch.optim in
-- PyTorch 1.13 with float32 tensors, p.grad set to G[k] before step k:
--   sgd_plain        SGD(lr=0.1)
--   sgd_momentum     SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)
--   sgd_nesterov     SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
--   adam             Adam(lr=0.01)
--   adam_wd          Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
--   adamw            AdamW(lr=0.01)
--   adamw_wd         AdamW(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
local TORCH = {
  sgd_plain = {
    {{0.49000001, -0.280000001, 0.769999981, 0.0949999988, -0.699999988, 0.24000001},
     {1.39999998, -1.95000005, 0.224999994, -0.200000003}},
    {{0.520000041, -0.289999992, 0.75, 0.054999996, -0.689999998, 0.24000001},
     {1.35000002, -2, 0.324999988, -0.210000008}},
    {{0.50000006, -0.310000002, 0.75999999, 0.0599999949, -0.720000029, 0.230000004},
     {1.375, -2.1500001, 0.249999985, -0.180000007}},
  },
  sgd_momentum = {
    {{0.489499986, -0.279700011, 0.769200027, 0.0949000046, -0.699299991, 0.239800006},
     {1.39849997, -1.94799995, 0.224749997, -0.200000003}},
    {{0.50660944, -0.270178288, 0.722787738, 0.0542245954, -0.689040601, 0.275404185},
     {1.26089132, -1.9444468, 0.291822731, -0.388819993}},
    {{0.50355202, -0.279365569, 0.689366162, 0.0220679287, -0.70618701, 0.298200071},
     {1.15840876, -2.07449889, 0.284425527, -0.531408072}},
  },
  sgd_nesterov = {
    {{0.480049998, -0.261429995, 0.741479993, 0.0903099999, -0.69866997, 0.275620013},
     {1.30715001, -1.90120006, 0.202024996, -0.379999995}},
    {{0.527632892, -0.263490289, 0.677123189, 0.0100074084, -0.677775502, 0.307334334},
     {1.12745142, -1.95046782, 0.371188641, -0.560277998}},
    {{0.504887044, -0.294079214, 0.655582845, -0.016702652, -0.724311531, 0.316541344},
     {1.05725694, -2.23281407, 0.290412486, -0.655805647}},
  },
  adam = {
    {{0.49000001, -0.290000021, 0.790000021, 0.0900000036, -0.699999988, 0.210000008},
     {1.49000001, -1.99000001, 0.239999995, -0.00999999978}},
    {{0.49494192, -0.287336648, 0.780296504, 0.0817853436, -0.692558646, 0.216700584},
     {1.4806782, -1.99052632, 0.245595023, -0.0170640033}},
    {{0.494754046, -0.29006362, 0.774777591, 0.0762704462, -0.696801066, 0.220174402},
     {1.47504163, -1.9964788, 0.245331839, -0.0215167273}},
  },
  adam_wd = {
    {{0.490000069, -0.290000051, 0.790000021, 0.0900001675, -0.690000117, 0.209999979},
     {1.49000001, -1.99000001, 0.240000039, -0.00999999605}},
    {{0.49351576, -0.286304086, 0.780276477, 0.081335187, -0.680353343, 0.215856895},
     {1.48065257, -1.98732483, 0.245845199, -0.0166828632}},
    {{0.490849197, -0.288251907, 0.773569882, 0.0758039281, -0.681598485, 0.217726782},
     {1.47444797, -1.99246144, 0.244902179, -0.0204077754}},
  },
  adamw = {
    {{0.489950001, -0.289970011, 0.789920032, 0.0899900049, -0.699929953, 0.209980011},
     {1.48985004, -1.98979998, 0.23997499, -0.00999999978}},
    {{0.494842917, -0.287277639, 0.780137539, 0.0817663446, -0.692418635, 0.216659606},
     {1.48037922, -1.99012733, 0.245546013, -0.017063003}},
    {{0.494605541, -0.289975882, 0.774540603, 0.0762432665, -0.696591794, 0.220111758},
     {1.47459459, -1.99588072, 0.245258272, -0.0215140209}},
  },
  adamw_wd = {
    {{0.489500105, -0.289700061, 0.789200008, 0.0899001956, -0.699299991, 0.209799975},
     {1.4885, -1.98800004, 0.239750043, -0.00999999605}},
    {{0.49446556, -0.287299007, 0.77881372, 0.0812554583, -0.690763772, 0.215891406},
     {1.47786224, -1.98712325, 0.245594546, -0.016676629}},
    {{0.493516266, -0.290608287, 0.773240268, 0.0758965462, -0.694989264, 0.218373254},
     {1.47147179, -1.99187481, 0.244737357, -0.0203939341}},
  },
}

local MAKE = {
  sgd_plain = function(p, g) return optim.SGD(p, g, {lr = 0.1}) end,
  sgd_momentum = function(p, g)
    return optim.SGD(p, g, {lr = 0.1, momentum = 0.9, dampening = 0.1, weight_decay = 0.01})
  end,
  sgd_nesterov = function(p, g)
    return optim.SGD(p, g, {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.01})
  end,
  adam = function(p, g) return optim.Adam(p, g, {lr = 0.01}) end,
  adam_wd = function(p, g)
    return optim.Adam(p, g, {lr = 0.01, betas = {0.8, 0.99}, eps = 1e-6, weight_decay = 0.1})
  end,
  adamw = function(p, g) return optim.AdamW(p, g, {lr = 0.01}) end,
  adamw_wd = function(p, g)
    return optim.AdamW(p, g, {lr = 0.01, betas = {0.8, 0.99}, eps = 1e-6, weight_decay = 0.1})
  end,
}

local function fresh()
  local params = {lpnx.tensor(P1), lpnx.tensor(P2)}
  local grads = {lpnx.zeros(2, 3), lpnx.zeros(4)}
  return params, grads
end

local function set_grads(grads, k)
  grads[1]:copy_(lpnx.tensor(G[k][1]))
  grads[2]:copy_(lpnx.tensor(G[k][2]))
end

describe("optimizers agree with torch.optim over three steps", function()
  for _, name in ipairs {"sgd_plain", "sgd_momentum", "sgd_nesterov", "adam", "adam_wd", "adamw", "adamw_wd"} do
    it(name, function()
      local params, grads = fresh()
      local opt = MAKE[name](params, grads)
      for k = 1, 3 do
        set_grads(grads, k)
        opt:step()
        h.assert_near(params[1]:view(-1), TORCH[name][k][1], 5e-7)
        h.assert_near(params[2], TORCH[name][k][2], 5e-7)
      end
      assert.are.equal(3, opt.step_count)
    end)
  end

  it("AdamW defaults to weight_decay 1e-2, Adam to 0", function()
    local params, grads = fresh()
    assert.are.equal(1e-2, optim.AdamW(params, grads).weight_decay)
    local adam = optim.Adam(params, grads)
    assert.are.same({1e-3, {0.9, 0.999}, 1e-8, 0}, {adam.lr, adam.betas, adam.eps, adam.weight_decay})
  end)

  it("are found by name in optim.by_name", function()
    assert.are.same({sgd = optim.SGD, adam = optim.Adam, adamw = optim.AdamW}, optim.by_name)
    local params, grads = fresh()
    assert.are.equal("AdamW", optim.by_name.adamw(params, grads, {lr = 0.1}).type)
  end)

  it("step uses the current lr field and zero_grad zeroes the grads", function()
    local params, grads = fresh()
    local opt = optim.SGD(params, grads, {lr = 0.1})
    set_grads(grads, 1)
    opt.lr = 0
    opt:step()
    h.assert_near(params[1], P1, 0)
    opt.lr = 1
    opt:step()
    h.assert_near(params[2], {0.5, -1.5, 0, -2}, 1e-7)
    opt:zero_grad()
    assert.are.equal(0, grads[1]:abs():sum() + grads[2]:abs():sum())
  end)
end)

describe("optimizer kernels against the oracles", function()
  lpnx.manual_seed(3)
  -- odd sizes, batch-like 4-D, and one above the threading threshold
  for _, size in ipairs {{1}, {7, 3}, {3, 5, 5, 2}, {40001}} do
    local label = table.concat(size, "x")
    it("sgd_step and adam_step match the oracles on " .. label, function()
      local p = lpnx.randn(size)
      local pf, pr = p:clone(), p:clone()
      local bf, br = lpnx.zeros(size), lpnx.zeros(size)
      local mf, mr, vf, vr = lpnx.zeros(size), lpnx.zeros(size), lpnx.zeros(size), lpnx.zeros(size)
      for step = 1, 4 do
        local g = lpnx.randn(size)
        K.sgd_step(pf, g, bf, 0.05, 0.9, 0.1, 1e-3, false, step == 1)
        R.sgd_step(pr, g, br, 0.05, 0.9, 0.1, 1e-3, false, step == 1)
        h.assert_near(pf, pr, 1e-7)
        h.assert_near(bf, br, 1e-7)
      end
      for step = 1, 4 do
        local g = lpnx.randn(size)
        local decoupled = step % 2 == 0
        K.adam_step(pf, g, mf, vf, step, 1e-2, 0.9, 0.999, 1e-8, 0.05, decoupled)
        R.adam_step(pr, g, mr, vr, step, 1e-2, 0.9, 0.999, 1e-8, 0.05, decoupled)
        h.assert_near(pf, pr, 1e-7)
        h.assert_near(mf, mr, 1e-7)
        h.assert_near(vf, vr, 1e-7)
      end
      K.sgd_step(pf, lpnx.ones(size), nil, 0.5, 0, 0, 0, false, false)
      R.sgd_step(pr, lpnx.ones(size), nil, 0.5, 0, 0, 0, false, false)
      h.assert_near(pf, pr, 1e-7)
    end)
  end

  it("sgd_step with nesterov matches the oracle and takes a strided gradient", function()
    local p = lpnx.randn(4, 6)
    local pf, pr, bf, br = p:clone(), p:clone(), lpnx.zeros(4, 6), lpnx.zeros(4, 6)
    for step = 1, 3 do
      local g = lpnx.randn(6, 4):t()
      assert.is_false(g:is_contiguous())
      K.sgd_step(pf, g, bf, 0.1, 0.8, 0, 0.01, true, step == 1)
      R.sgd_step(pr, g:contiguous(), br, 0.1, 0.8, 0, 0.01, true, step == 1)
    end
    h.assert_near(pf, pr, 1e-7)
  end)

  it("sum_squares accumulates in double", function()
    local t = lpnx.tensor{{3, -4}, {1, 2}}
    assert.are.equal(30, K.sum_squares(t))
    assert.are.equal(30, R.sum_squares(t))
    assert.are.equal(30, K.sum_squares(t:t()))
    assert.are.equal(0, K.sum_squares(lpnx.zeros(0)))
    local big = lpnx.randn(50000)
    local want = R.sum_squares(big)
    assert(math.abs(K.sum_squares(big) - want) <= 1e-9 * want)
    -- 4096^2 = 2^24, where a float accumulator stops counting ones
    local t2 = lpnx.ones(1001)
    t2[1] = 4096
    assert.are.equal(2 ^ 24 + 1000, K.sum_squares(t2))
    assert.are.equal(2 ^ 24 + 1000, R.sum_squares(t2))
  end)
end)

describe("optimizer checkpoints", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rmdir(dir) end)

  -- Runs 3 steps uninterrupted, and 2 steps + save + load into fresh
  -- objects + 1 step; the parameters must agree exactly.
  local function round_trip(name, prefix)
    local params, grads = fresh()
    local opt = MAKE[name](params, grads)
    for k = 1, 3 do
      set_grads(grads, k)
      opt:step()
    end

    local p2, g2 = fresh()
    local o2 = MAKE[name](p2, g2)
    for k = 1, 2 do
      set_grads(g2, k)
      o2:step()
    end
    o2.lr = o2.lr * 0.5 -- as a scheduler would have; restored from the file
    local tensors, meta = o2:state_dict(prefix)
    tensors["model.1"], tensors["model.2"] = p2[1], p2[2]
    local path = dir .. "/ckpt.safetensors"
    lpnx.save(path, tensors, meta)

    local lt, lm = lpnx.load(path)
    local p3 = {lt["model.1"], lt["model.2"]}
    local g3 = {lpnx.zeros(2, 3), lpnx.zeros(4)}
    local o3 = MAKE[name](p3, g3)
    o3:load_state_dict(lt, lm, prefix)
    assert.are.equal(2, o3.step_count)
    assert.are.equal(o2.lr, o3.lr)
    o3.lr = o3.lr * 2
    set_grads(g3, 3)
    o3:step()
    h.assert_near(p3[1], params[1], 0)
    h.assert_near(p3[2], params[2], 0)
    return tensors, meta
  end

  it("Adam continues exactly after save and load", function()
    local tensors, meta = round_trip("adam_wd")
    assert.are.same({"exp_avg", "exp_avg_sq"}, {tensors["state.1.exp_avg"] and "exp_avg",
                                                tensors["state.2.exp_avg_sq"] and "exp_avg_sq"})
    assert.are.same({type = "Adam", n_params = "2", step = "2", lr = "0.005", betas = "0.8,0.99",
                     eps = "1e-06", weight_decay = "0.1"}, meta)
  end)

  it("AdamW and SGD with momentum continue exactly, under a key prefix too", function()
    round_trip("adamw")
    local tensors, meta = round_trip("sgd_nesterov", "optimizer.")
    assert.is_true(lpnx.is_tensor(tensors["optimizer.state.2.momentum_buffer"]))
    assert.are.equal("SGD", meta["optimizer.type"])
    assert.are.equal("true", meta["optimizer.nesterov"])
    round_trip("sgd_plain")
  end)

  it("load_state_dict restores the hyperparameters and copies the buffers", function()
    local params, grads = fresh()
    local a = optim.Adam(params, grads, {lr = 0.02, betas = {0.7, 0.95}, eps = 1e-5, weight_decay = 0.3})
    set_grads(grads, 1)
    a:step()
    local tensors, meta = a:state_dict()
    local b = optim.Adam({lpnx.tensor(P1), lpnx.tensor(P2)}, {lpnx.zeros(2, 3), lpnx.zeros(4)})
    b:load_state_dict(tensors, meta)
    assert.are.same({0.02, {0.7, 0.95}, 1e-5, 0.3, 1}, {b.lr, b.betas, b.eps, b.weight_decay, b.step_count})
    h.assert_near(b.state[1].exp_avg, a.state[1].exp_avg, 0)
    b.state[1].exp_avg:fill_(7)
    assert.are_not.equal(7, a.state[1].exp_avg:max())
  end)

  it("load_state_dict says what does not fit", function()
    local params, grads = fresh()
    local opt = optim.Adam(params, grads)
    set_grads(grads, 1)
    opt:step()
    local tensors, meta = opt:state_dict()

    local one = optim.Adam({lpnx.zeros(2, 3)}, {lpnx.zeros(2, 3)})
    assert.matches("Adam.load_state_dict: expected the state of 1 parameters, got 2",
                   message(function() one:load_state_dict(tensors, meta) end), 1, true)
    local other = optim.Adam({lpnx.zeros(3, 2), lpnx.zeros(4)}, {lpnx.zeros(3, 2), lpnx.zeros(4)})
    assert.matches("Adam.load_state_dict: 'state.1.exp_avg",
                   message(function() other:load_state_dict(tensors, meta) end), 1, true)
    assert.matches("has shape 2x3, expected 3x2 (the shape of param 1)",
                   message(function() other:load_state_dict(tensors, meta) end), 1, true)
    local sgd = optim.SGD(params, grads, {lr = 0.1})
    assert.matches("SGD.load_state_dict: expected the state of a SGD optimizer, got one of a Adam optimizer",
                   message(function() sgd:load_state_dict(tensors, meta) end), 1, true)
    local partial = {}
    for k, v in pairs(tensors) do partial[k] = v end
    partial["state.2.exp_avg_sq"] = nil
    assert.matches("Adam.load_state_dict: missing state tensor 'state.2.exp_avg_sq' after 1 steps",
                   message(function() opt:load_state_dict(partial, meta) end), 1, true)
    partial["state.2.exp_avg_sq"] = tensors["state.2.exp_avg_sq"]
    partial["state.3.exp_avg"] = tensors["state.2.exp_avg"]
    assert.matches("unexpected state tensor 'state.3.exp_avg' (2 parameters; buffers exp_avg, exp_avg_sq)",
                   message(function() opt:load_state_dict(partial, meta) end), 1, true)
    local bad = {}
    for k, v in pairs(meta) do bad[k] = v end
    bad.betas = "0.9"
    assert.matches("Adam.load_state_dict: meta 'betas' is missing or not two numbers: 0.9",
                   message(function() opt:load_state_dict(tensors, bad) end), 1, true)
    bad.betas, bad.lr = meta.betas, "fast"
    assert.matches("Adam.load_state_dict: meta 'lr' is missing or not a number: fast",
                   message(function() opt:load_state_dict(tensors, bad) end), 1, true)
    bad.lr, bad.eps = meta.lr, "-1"
    assert.matches("Adam.load_state_dict: eps must be a finite number >= 0, got -1",
                   message(function() opt:load_state_dict(tensors, bad) end), 1, true)
    -- a failed load changes nothing
    assert.are.same({1e-3, 1, 1e-8}, {opt.lr, opt.step_count, opt.eps})
  end)
end)

-- lr after construction and after each step(), from torch.optim.lr_scheduler
-- (PyTorch 1.13) on SGD(lr=0.1):
--   StepLR(step_size=3, gamma=0.5), 10 steps; StepLR(step_size=2), 6 steps;
--   CosineAnnealingLR(T_max=5, eta_min=0.001), 12 steps;
--   ReduceLROnPlateau(mode='min', factor=0.5, patience=2, cooldown=1, min_lr=0.02) on PLATEAU_MIN;
--   ReduceLROnPlateau(mode='max', factor=0.1, patience=1, threshold=0.01, threshold_mode='abs') on PLATEAU_MAX;
--   ReduceLROnPlateau() on 13 epochs of the metric 1.0.
local TORCH_LR = {
  step = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125},
  step_default = {0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.0010000000000000002,
                  0.0010000000000000002, 0.00010000000000000003},
  cosine = {0.1, 0.0905463412215599, 0.06579634122155989, 0.035203658778440096, 0.010453658778440105, 0.001,
            0.010453658778440102, 0.03520365877844012, 0.06579634122155993, 0.09054634122155995,
            0.10000000000000005, 0.09054634122155998, 0.06579634122155995},
  plateau_min = {0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025},
  plateau_max = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002, 0.010000000000000002,
                 0.0010000000000000002, 0.0010000000000000002},
  plateau_default = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.010000000000000002,
                     0.010000000000000002},
}
local PLATEAU_MIN = {1.0, 0.9, 0.95, 0.91, 0.9, 0.89995, 0.92, 0.93, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9}
local PLATEAU_MAX = {0.5, 0.6, 0.605, 0.62, 0.615, 0.61, 0.7, 0.69, 0.68, 0.67}

local function sgd(lr)
  return optim.SGD({lpnx.zeros(1)}, {lpnx.zeros(1)}, {lr = lr or 0.1})
end

-- lr sequence of a scheduler over n steps (metrics for ReduceLROnPlateau).
local function lrs(make, n, metrics)
  local opt = sgd()
  local s = make(opt)
  local out = {opt.lr}
  for i = 1, n do
    s:step(metrics and metrics[i])
    out[#out + 1] = opt.lr
    assert.are.equal(opt.lr, s:get_lr())
  end
  return out
end

local function assert_lrs(want, got)
  assert.are.equal(#want, #got)
  for i = 1, #want do
    assert(math.abs(want[i] - got[i]) <= 1e-15 * want[i],
           ("lr %d: expected %.17g, got %.17g"):format(i, want[i], got[i]))
  end
end

describe("schedulers follow PyTorch's lr sequences", function()
  it("StepLR", function()
    assert_lrs(TORCH_LR.step, lrs(function(o) return optim.StepLR(o, {step_size = 3, gamma = 0.5}) end, 10))
    assert_lrs(TORCH_LR.step_default, lrs(function(o) return optim.StepLR(o, {step_size = 2}) end, 6))
  end)

  it("CosineAnnealingLR", function()
    assert_lrs(TORCH_LR.cosine,
               lrs(function(o) return optim.CosineAnnealingLR(o, {T_max = 5, eta_min = 0.001}) end, 12))
  end)

  it("ReduceLROnPlateau in min/rel, max/abs and default modes", function()
    assert_lrs(TORCH_LR.plateau_min, lrs(function(o)
      return optim.ReduceLROnPlateau(o, {mode = "min", factor = 0.5, patience = 2, cooldown = 1, min_lr = 0.02})
    end, #PLATEAU_MIN, PLATEAU_MIN))
    assert_lrs(TORCH_LR.plateau_max, lrs(function(o)
      return optim.ReduceLROnPlateau(o, {mode = "max", factor = 0.1, patience = 1, threshold = 0.01,
                                         threshold_mode = "abs"})
    end, #PLATEAU_MAX, PLATEAU_MAX))
    local ones = {}
    for i = 1, 13 do ones[i] = 1.0 end
    assert_lrs(TORCH_LR.plateau_default, lrs(function(o) return optim.ReduceLROnPlateau(o) end, 13, ones))
  end)

  it("ReduceLROnPlateau stops at min_lr", function()
    local opt = sgd(0.1)
    local s = optim.ReduceLROnPlateau(opt, {factor = 0.5, patience = 0, min_lr = 0.03})
    for _ = 1, 5 do s:step(1) end
    assert.are.equal(0.03, opt.lr)
  end)

  it("state_dict round trips continue the same sequence, through strings too", function()
    local makers = {
      function(o) return optim.StepLR(o, {step_size = 3, gamma = 0.5}) end,
      function(o) return optim.CosineAnnealingLR(o, {T_max = 5, eta_min = 0.001}) end,
      function(o) return optim.ReduceLROnPlateau(o, {factor = 0.5, patience = 2, cooldown = 1}) end,
    }
    for _, make in ipairs(makers) do
      local full = lrs(make, #PLATEAU_MIN, PLATEAU_MIN)
      local o1 = sgd()
      local s1 = make(o1)
      for i = 1, 6 do s1:step(PLATEAU_MIN[i]) end
      local sd = s1:state_dict()
      local text = {}
      for k, v in pairs(sd) do text[k] = type(v) == "number" and ("%.17g"):format(v) or v end
      local o2 = sgd(o1.lr) -- the optimizer's lr comes back with the optimizer's own state
      local s2 = make(o2)
      s2:load_state_dict(text)
      o2.lr = o1.lr
      local got = {table.unpack(full, 1, 7)}
      for i = 7, #PLATEAU_MIN do
        s2:step(PLATEAU_MIN[i])
        got[#got + 1] = o2.lr
      end
      assert_lrs(full, got)
    end
    -- best starts at +inf: written as "inf", read back as math.huge
    local p = optim.ReduceLROnPlateau(sgd())
    local sd = p:state_dict()
    assert.are.equal(math.huge, sd.best)
    sd.best = tostring(sd.best)
    p:load_state_dict(sd)
    assert.are.equal(math.huge, p.best)
  end)
end)

describe("clip_grad_norm", function()
  -- torch.nn.utils.clip_grad_norm_ on grads {(2,2), (3)} below, max_norm 2:
  -- total 6.22495031357 (float32 norm; exactly sqrt(38.75) = 6.2249497990),
  -- clipped grads as listed.
  local function grads()
    return {lpnx.tensor{{3, -4}, {1, 2}}, lpnx.tensor{0.5, -1.5, 2.5}}
  end

  it("scales every gradient by max_norm / (total + 1e-6) as PyTorch does", function()
    local g = grads()
    local total = optim.clip_grad_norm(g, 2)
    assert(math.abs(total - math.sqrt(38.75)) < 1e-12)
    h.assert_near(g[1]:view(-1), {0.963863015, -1.28515065, 0.321287662, 0.642575324}, 2e-7)
    h.assert_near(g[2], {0.160643831, -0.481931508, 0.80321914}, 2e-7)
    assert(math.abs(math.sqrt(K.sum_squares(g[1]) + K.sum_squares(g[2])) - 2) < 1e-5)
  end)

  it("leaves gradients under the limit alone", function()
    local g = grads()
    assert(math.abs(optim.clip_grad_norm(g, 100) - math.sqrt(38.75)) < 1e-12)
    h.assert_near(g[1], {{3, -4}, {1, 2}}, 0)
  end)

  it("returns a non-finite norm unchanged and scales nothing", function()
    local g = grads()
    g[2][2] = 0 / 0
    local total = optim.clip_grad_norm(g, 1)
    assert.is_true(total ~= total)
    h.assert_near(g[1], {{3, -4}, {1, 2}}, 0)
    g = grads()
    g[1]:set(math.huge, 1, 1)
    assert.are.equal(math.huge, optim.clip_grad_norm(g, 1))
    assert.are.equal(2.5, g[2][3])
  end)
end)

describe("optimizer errors", function()
  local params, grads = fresh()

  it("constructors check hyperparameters and parameters", function()
    assert.matches("SGD: lr is required", message(function() optim.SGD(params, grads, {}) end), 1, true)
    assert.matches("SGD: lr must be a finite number >= 0, got -0.1",
                   message(function() optim.SGD(params, grads, {lr = -0.1}) end), 1, true)
    assert.matches("SGD: nesterov momentum requires a momentum and zero dampening",
                   message(function() optim.SGD(params, grads, {lr = 0.1, nesterov = true}) end), 1, true)
    assert.matches("Adam: betas[2] must be a finite number in [0, 1), got 1",
                   message(function() optim.Adam(params, grads, {betas = {0.9, 1}}) end), 1, true)
    assert.matches("AdamW: unknown option 'beta1'",
                   message(function() optim.AdamW(params, grads, {beta1 = 0.9}) end), 1, true)
    assert.matches("Adam: expected as many grads as params, got 2 params and 1 grads",
                   message(function() optim.Adam(params, {grads[1]}) end), 1, true)
    assert.matches("Adam: grad 2 has shape 5, expected 4 (the shape of param 2)",
                   message(function() optim.Adam(params, {grads[1], lpnx.zeros(5)}) end), 1, true)
    assert.matches("SGD: param 1 is not contiguous (updates are in place)",
                   message(function() optim.SGD({lpnx.zeros(3, 2):t()}, {lpnx.zeros(2, 3)}, {lr = 1}) end), 1, true)
  end)

  it("kernels check their arguments", function()
    local p, g = lpnx.zeros(2, 3), lpnx.zeros(2, 3)
    assert.matches("expected a momentum buffer when momentum is not 0, got nil",
                   message(function() K.sgd_step(p, g, nil, 0.1, 0.9, 0, 0, false, true) end), 1, true)
    assert.matches("expected grad of the parameter's shape 2x3, got 3x2",
                   message(function() K.sgd_step(p, lpnx.zeros(3, 2), nil, 0.1, 0, 0, 0, false, true) end), 1, true)
    assert.matches("expected a contiguous tensor",
                   message(function() K.sgd_step(lpnx.zeros(3, 2):t(), g, nil, 0.1, 0, 0, 0, false, true) end), 1, true)
    assert.matches("first must be a boolean, got nil",
                   message(function() K.sgd_step(p, g, nil, 0.1, 0, 0, 0, false) end), 1, true)
    assert.matches("momentum buffer must not share memory with the parameter",
                   message(function() K.sgd_step(p, g, p, 0.1, 0.9, 0, 0, false, true) end), 1, true)
    local m, v = lpnx.zeros(2, 3), lpnx.zeros(2, 3)
    assert.matches("step must be >= 1, got 0",
                   message(function() R.adam_step(p, g, m, v, 0, 1e-3, 0.9, 0.999, 1e-8, 0, false) end), 1, true)
    assert.matches("beta1 must be a number in [0, 1), got 1",
                   message(function() K.adam_step(p, g, m, v, 1, 1e-3, 1, 0.999, 1e-8, 0, false) end), 1, true)
    assert.matches("expected exp_avg_sq of the parameter's shape 2x3, got 6",
                   message(function() K.adam_step(p, g, m, lpnx.zeros(6), 1, 1e-3, 0.9, 0.999, 1e-8, 0, false) end),
                   1, true)
    assert.matches("exp_avg_sq must not share memory with exp_avg",
                   message(function() K.adam_step(p, g, m, m, 1, 1e-3, 0.9, 0.999, 1e-8, 0, false) end), 1, true)
  end)

  it("schedulers and clip_grad_norm check their options", function()
    local opt = sgd()
    assert.matches("StepLR: step_size must be an integer >= 1, got nil",
                   message(function() optim.StepLR(opt, {}) end), 1, true)
    assert.matches("CosineAnnealingLR: T_max must be an integer >= 1, got 0",
                   message(function() optim.CosineAnnealingLR(opt, {T_max = 0}) end), 1, true)
    assert.matches("ReduceLROnPlateau: factor must be a finite number in [0, 1), got 1",
                   message(function() optim.ReduceLROnPlateau(opt, {factor = 1}) end), 1, true)
    assert.matches("ReduceLROnPlateau: mode must be \"min\" or \"max\", got best",
                   message(function() optim.ReduceLROnPlateau(opt, {mode = "best"}) end), 1, true)
    assert.matches("ReduceLROnPlateau: step expects the monitored metric as a number, got nil",
                   message(function() optim.ReduceLROnPlateau(opt):step() end), 1, true)
    assert.matches("StepLR: expected an optimizer (a table with a number field lr), got nil",
                   message(function() optim.StepLR(nil, {step_size = 1}) end), 1, true)
    assert.matches("StepLR.load_state_dict: expected the state of a StepLR, got CosineAnnealingLR",
                   message(function()
                     optim.StepLR(opt, {step_size = 1}):load_state_dict(
                       optim.CosineAnnealingLR(sgd(), {T_max = 3}):state_dict())
                   end), 1, true)
    assert.matches("clip_grad_norm: max_norm must be a finite number >= 0, got -1",
                   message(function() optim.clip_grad_norm(grads, -1) end), 1, true)
    assert.matches("clip_grad_norm: grad 1 is a number, not a tensor",
                   message(function() optim.clip_grad_norm({1}, 1) end), 1, true)
  end)

  it("is reachable as lpnx.optim", function()
    assert.are.equal(optim, lpnx.optim)
  end)
end)
