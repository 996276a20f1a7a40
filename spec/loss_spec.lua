local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local gradcheck = require "spec.support.gradcheck"

local K, R = lpnx.kernels, lpnx.ref
local nn = require "lpnx.nn.loss"

local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function near(expected, got, tol)
  assert(math.abs(expected - got) <= tol, ("expected %.10g, got %.10g (tolerance %g)"):format(expected, got, tol))
end

-- The small case the PyTorch numbers below were computed on.
local X = {{0.5, -1.2, 3.0}, {-0.3, 2.2, -4.0}}
local T = {{1, 0, 1}, {0, 0.5, 1}}

-- Expected (loss, gradient) pairs, computed with PyTorch 1.13 in float64
-- (autograd for the gradients):
--   bce        F.binary_cross_entropy_with_logits(x, t)
--   bce_pw3    the same with pos_weight=torch.tensor(3.0)
--   bce_pwvec  the same with pos_weight=torch.tensor([1, 2, 0.5]) (broadcast over rows)
--   dice       dice_loss(x, t) of shared/reference/torch_unet.py (eps=1)
--   dice_eps05 dice_loss(x, t, 0.5)
--   focal_*    torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction="mean")
--              with (alpha=0.25, gamma=2), (alpha=-1 i.e. none, gamma=2), (none, gamma=0.5)
--   combo      0.5 * bce + 2 * dice + 0.25 * focal(none, gamma=2)
local TORCH = {
  bce = {1.09392254921, {-0.0629234448, 0.0385792028, -0.0079043122, 0.0709262472, 0.0667082518, -0.163668965}},
  bce_pw3 = {2.62504119039,
             {-0.188770334, 0.0385792028, -0.0237129366, 0.0709262472, 0.0500831703, -0.491006895}},
  bce_pwvec = {0.763784719231,
               {-0.0629234448, 0.0385792028, -0.0039521561, 0.0709262472, 0.0583957111, -0.0818344825}},
  dice = {0.335151876672,
          {-0.0410134989, 0.0154598847, -0.0078843558, 0.0212446061, -0.00393406029, -0.00308254442}},
  dice_eps05 = {0.35858808135,
                {-0.0446517151, 0.0159578737, -0.00858375947, 0.0219289307, -0.00450349205, -0.00335599008}},
  focal_g2_a025 = {0.203693005615,
                   {-0.00574737489, 0.00426069922, -1.31196603e-05, 0.0240510549, 0.00833853148, -0.0452664939}},
  focal_g2 = {0.72639349935,
              {-0.0229894996, 0.00568093229, -5.24786411e-05, 0.0320680732, 0.016677063, -0.181065976}},
  focal_g05 = {0.937358324784,
               {-0.0537727555, 0.0266736037, -0.0025613005, 0.0635799887, 0.0471698572, -0.168158594}},
  combo = {1.39886340278, {-0.119236095, 0.0516296039, -0.0197339874, 0.0859693541, 0.0296552711, -0.133266065}},
}

local function expect(name, loss, grad)
  local want = TORCH[name]
  near(want[1], loss, 1e-6)
  h.assert_near(grad:view(-1), want[2], 2e-7)
end

describe("loss kernels agree with PyTorch", function()
  local x, t = lpnx.tensor(X), lpnx.tensor(T)
  for _, M in ipairs {{"kernels", K}, {"ref", R}} do
    local which, F = M[1], M[2]

    it(which .. ": BCE with logits, without and with pos_weight (number and broadcast tensor)", function()
      expect("bce", F.bce_with_logits(x, t), F.bce_with_logits_backward(x, t))
      expect("bce_pw3", F.bce_with_logits(x, t, 3), F.bce_with_logits_backward(x, t, 3))
      expect("bce_pw3", F.bce_with_logits(x, t, lpnx.tensor{3}), F.bce_with_logits_backward(x, t, lpnx.tensor{3}))
      local w = lpnx.tensor{1, 2, 0.5}
      expect("bce_pwvec", F.bce_with_logits(x, t, w), F.bce_with_logits_backward(x, t, w))
    end)

    it(which .. ": soft Dice over the batch is torch_unet.py's dice_loss", function()
      expect("dice", F.dice_loss(x, t, 1), F.dice_loss_backward(x, t, 1))
      expect("dice_eps05", F.dice_loss(x, t, 0.5), F.dice_loss_backward(x, t, 0.5))
    end)

    it(which .. ": focal loss is torchvision's sigmoid_focal_loss, soft targets included", function()
      expect("focal_g2_a025", F.focal_loss(x, t, 2, 0.25), F.focal_loss_backward(x, t, 2, 0.25))
      expect("focal_g2", F.focal_loss(x, t, 2), F.focal_loss_backward(x, t, 2))
      expect("focal_g05", F.focal_loss(x, t, 0.5), F.focal_loss_backward(x, t, 0.5))
    end)
  end

  it("gamma 0 focal loss without alpha is plain BCE", function()
    local a = lpnx.randn(3, 1, 5, 4) * 3
    local b = lpnx.rand(3, 1, 5, 4)
    near(K.bce_with_logits(a, b), K.focal_loss(a, b, 0), 1e-12)
    h.assert_near(K.focal_loss_backward(a, b, 0), K.bce_with_logits_backward(a, b), 1e-9)
  end)
end)

describe("loss kernels against the oracles", function()
  lpnx.manual_seed(7)
  -- (N,1,H,W) masks of odd sizes, a multi-channel one, a 1-D one, and one
  -- above the threading threshold.
  local shapes = {{1, 1, 1, 1}, {2, 1, 7, 5}, {3, 2, 9, 11}, {13}, {2, 1, 128, 160}}
  local function inputs(size, soft)
    local x = lpnx.randn(size) * 6
    local t = soft and lpnx.rand(size) or lpnx.rand(size):gt(0.7)
    return x, t
  end

  for _, size in ipairs(shapes) do
    local label = table.concat(size, "x")
    it("fast kernels match the oracles on " .. label .. " (hard and soft targets)", function()
      for _, soft in ipairs {false, true} do
        local x, t = inputs(size, soft)
        local n = x:numel()
        local gtol = 1e-6 / n + 1e-9
        near(R.bce_with_logits(x, t), K.bce_with_logits(x, t), 1e-9)
        h.assert_near(K.bce_with_logits_backward(x, t), R.bce_with_logits_backward(x, t), gtol)
        near(R.bce_with_logits(x, t, 2.5), K.bce_with_logits(x, t, 2.5), 1e-9)
        h.assert_near(K.bce_with_logits_backward(x, t, 2.5), R.bce_with_logits_backward(x, t, 2.5), gtol)
        near(R.dice_loss(x, t, 1), K.dice_loss(x, t, 1), 1e-9)
        h.assert_near(K.dice_loss_backward(x, t, 1), R.dice_loss_backward(x, t, 1), gtol)
        near(R.focal_loss(x, t, 2, 0.25), K.focal_loss(x, t, 2, 0.25), 1e-9)
        h.assert_near(K.focal_loss_backward(x, t, 2, 0.25), R.focal_loss_backward(x, t, 2, 0.25), gtol)
        near(R.focal_loss(x, t, 1.5), K.focal_loss(x, t, 1.5), 1e-9)
        h.assert_near(K.focal_loss_backward(x, t, 1.5), R.focal_loss_backward(x, t, 1.5), gtol)
      end
    end)
  end

  it("a broadcast pos_weight tensor (one weight per image) matches the oracle", function()
    local x, t = inputs({3, 1, 6, 5}, true)
    local w = lpnx.tensor{1, 4, 0.5}:view(3, 1, 1, 1)
    near(R.bce_with_logits(x, t, w), K.bce_with_logits(x, t, w), 1e-9)
    h.assert_near(K.bce_with_logits_backward(x, t, w), R.bce_with_logits_backward(x, t, w), 1e-9)
    -- the same as spelling the weights out in full
    local full = w:expand(3, 1, 6, 5):contiguous()
    near(K.bce_with_logits(x, t, full), K.bce_with_logits(x, t, w), 1e-12)
  end)

  it("strided logits and targets give what their contiguous copies give", function()
    local x, t = inputs({2, 1, 5, 7}, true)
    local xs, ts = x:transpose(3, 4), t:transpose(3, 4)
    local xc, tc = xs:contiguous(), ts:contiguous()
    assert.is_false(xs:is_contiguous())
    near(K.dice_loss(xc, tc, 1), K.dice_loss(xs, ts, 1), 1e-12)
    -- the copies made for strided inputs are never taken for the optional arguments
    near(K.bce_with_logits(xc, tc), K.bce_with_logits(xs, ts), 1e-12)
    near(R.bce_with_logits(xc, tc), R.bce_with_logits(xs, ts), 1e-12)
    near(K.focal_loss(xc, tc, 2), K.focal_loss(xs, ts, 2), 1e-12)
    h.assert_near(K.focal_loss_backward(xs, ts, 2), K.focal_loss_backward(xc, tc, 2), 0)
    assert.are.same({2, 1, 7, 5}, K.bce_with_logits_backward(xs, ts):size())
  end)
end)

describe("loss gradients by finite differences", function()
  lpnx.manual_seed(11)
  local x = lpnx.randn(2, 1, 4, 5) * 3
  local soft = lpnx.rand(2, 1, 4, 5)
  local hard = lpnx.rand(2, 1, 4, 5):gt(0.5)
  -- Gradients of a mean are O(1/n): tolerances scale with that.
  local opts = {eps = 1e-2, rtol = 1e-3, atol = 1e-6}

  local cases = {
    {"BCE", function(t) return K.bce_with_logits(x, t) end, function(t) return K.bce_with_logits_backward(x, t) end},
    {"BCE with pos_weight 3", function(t) return K.bce_with_logits(x, t, 3) end,
      function(t) return K.bce_with_logits_backward(x, t, 3) end},
    {"Dice", function(t) return K.dice_loss(x, t, 1) end, function(t) return K.dice_loss_backward(x, t, 1) end},
    {"Dice eps 1e-3", function(t) return K.dice_loss(x, t, 1e-3) end,
      function(t) return K.dice_loss_backward(x, t, 1e-3) end},
    {"focal gamma 2 alpha 0.25", function(t) return K.focal_loss(x, t, 2, 0.25) end,
      function(t) return K.focal_loss_backward(x, t, 2, 0.25) end},
    {"focal gamma 0.5", function(t) return K.focal_loss(x, t, 0.5) end,
      function(t) return K.focal_loss_backward(x, t, 0.5) end},
    {"focal gamma 3", function(t) return K.focal_loss(x, t, 3) end,
      function(t) return K.focal_loss_backward(x, t, 3) end},
  }
  for _, c in ipairs(cases) do
    it(c[1] .. " (hard and soft targets)", function()
      for _, t in ipairs {hard, soft} do
        local n = gradcheck.check(function() return c[2](t) end, x, c[3](t), opts)
        assert.is_true(n >= 30)
      end
    end)
  end

  it("the oracles' gradients pass the same check", function()
    gradcheck.check(function() return R.focal_loss(x, soft, 2, 0.75) end, x,
                    R.focal_loss_backward(x, soft, 2, 0.75), opts)
    gradcheck.check(function() return R.dice_loss(x, soft, 1) end, x, R.dice_loss_backward(x, soft, 1), opts)
    gradcheck.check(function() return R.bce_with_logits(x, soft, 0.5) end, x,
                    R.bce_with_logits_backward(x, soft, 0.5), opts)
  end)

  it("ComboLoss's gradient is the weighted sum's", function()
    local loss = nn.ComboLoss{bce = 0.5, dice = 2, focal = 0.25}
    gradcheck.check(function() return loss:forward(x, soft) end, x, loss:backward(x, soft), opts)
  end)
end)

describe("losses at extreme logits", function()
  -- logits +-30 with targets that agree and disagree
  local x = lpnx.tensor{-30, -30, 30, 30, -30, 30}
  local t = lpnx.tensor{0, 1, 0, 1, 0.5, 0.5}

  local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end
  local function all_finite(g) return g:ne(g):sum() == 0 and g:abs():max() < math.huge end

  it("stay finite and exact: BCE of a confident wrong guess is |x|", function()
    local b = K.bce_with_logits_backward(x, t)
    -- per element: ~0, 30, 30, ~0, 15, 15 (log1p(e^-30) = 9.4e-14 is below the tolerance)
    near((30 + 30 + 15 + 15) / 6, K.bce_with_logits(x, t), 1e-9)
    h.assert_near(b, lpnx.tensor{0, -1, 1, 0, -0.5, 0.5} / 6, 1e-7)
    for _, v in ipairs {K.dice_loss(x, t, 1), K.focal_loss(x, t, 2), K.focal_loss(x, t, 0.5, 0.25)} do
      assert.is_true(finite(v))
    end
    assert.is_true(all_finite(K.dice_loss_backward(x, t, 1)))
    assert.is_true(all_finite(K.focal_loss_backward(x, t, 2)))
    assert.is_true(all_finite(K.focal_loss_backward(x, t, 0.5, 0.25)))
    -- focal of a confident wrong guess: (1 - e^-30)^2 * 30 ~ 30
    near(30, K.focal_loss(lpnx.tensor{30}, lpnx.tensor{0}, 2), 1e-9)
  end)

  it("stay finite far beyond float exp's range", function()
    local big = lpnx.tensor{-1e4, 1e4, -500, 500}
    local tt = lpnx.tensor{1, 0, 0.3, 1}
    near((1e4 + 1e4 + tt[3] * 500) / 4, K.bce_with_logits(big, tt), 1e-9)
    assert.is_true(all_finite(K.bce_with_logits_backward(big, tt)))
    assert.is_true(finite(K.focal_loss(big, tt, 0.5)))
    assert.is_true(all_finite(K.focal_loss_backward(big, tt, 0.5)))
    assert.is_true(all_finite(K.dice_loss_backward(big, tt, 0)))
  end)

  it("match the oracles and pass the finite-difference check at +-30", function()
    for _, args in ipairs {{}, {2}} do
      near(R.bce_with_logits(x, t, args[1]), K.bce_with_logits(x, t, args[1]), 1e-9)
    end
    h.assert_near(K.focal_loss_backward(x, t, 2, 0.25), R.focal_loss_backward(x, t, 2, 0.25), 1e-9)
    h.assert_near(K.dice_loss_backward(x, t, 1), R.dice_loss_backward(x, t, 1), 1e-9)
    local opts = {eps = 1e-2, rtol = 1e-3, atol = 1e-9}
    gradcheck.check(function() return K.bce_with_logits(x, t) end, x, K.bce_with_logits_backward(x, t), opts)
    gradcheck.check(function() return K.focal_loss(x, t, 2) end, x, K.focal_loss_backward(x, t, 2), opts)
    gradcheck.check(function() return K.dice_loss(x, t, 1) end, x, K.dice_loss_backward(x, t, 1), opts)
  end)
end)

describe("loss modules", function()
  local x, t = lpnx.tensor(X), lpnx.tensor(T)

  it("BCEWithLogitsLoss, DiceLoss and FocalLoss forward and backward", function()
    expect("bce", nn.BCEWithLogitsLoss():forward(x, t), nn.BCEWithLogitsLoss():backward(x, t))
    local pw = nn.BCEWithLogitsLoss{pos_weight = 3}
    expect("bce_pw3", pw:forward(x, t), pw:backward(x, t))
    local d = nn.DiceLoss()
    assert.are.equal(1, d.eps)
    expect("dice", d:forward(x, t), d:backward(x, t))
    local f = nn.FocalLoss()
    assert.are.equal(2, f.gamma)
    expect("focal_g2", f:forward(x, t), f:backward(x, t))
    local fa = nn.FocalLoss{gamma = 2, alpha = 0.25}
    expect("focal_g2_a025", fa:forward(x, t), fa:backward(x, t))
  end)

  it("ComboLoss is the weighted sum", function()
    local c = nn.ComboLoss{bce = 0.5, dice = 2, focal = 0.25}
    expect("combo", c:forward(x, t), c:backward(x, t))
    local default = nn.ComboLoss()
    near(TORCH.bce[1] + TORCH.dice[1], default:forward(x, t), 1e-6)
  end)

  it("ComboLoss skips terms of weight 0", function()
    local c = nn.ComboLoss{dice = 0}
    c.dice.forward = function() error("dice should not run") end
    c.dice.backward = c.dice.forward
    c.focal.forward = c.dice.forward
    c.focal.backward = c.dice.forward
    expect("bce", c:forward(x, t), c:backward(x, t))
  end)
end)

describe("loss errors", function()
  local x, t = lpnx.tensor(X), lpnx.tensor(T)

  it("kernels name the argument and both shapes", function()
    assert.matches("expected target of the logits' shape 2x3, got 3x2",
                   message(function() K.bce_with_logits(x, t:t():contiguous()) end), 1, true)
    assert.matches("expected target of the logits' shape 2x3, got 6",
                   message(function() R.dice_loss(x, t:view(6), 1) end), 1, true)
    assert.matches("expected non-empty logits, got 0x3",
                   message(function() K.focal_loss(lpnx.zeros(0, 3), lpnx.zeros(0, 3), 2) end), 1, true)
    assert.matches("expected pos_weight broadcastable to the logits' shape 2x3, got 2",
                   message(function() K.bce_with_logits(x, t, lpnx.ones(2)) end), 1, true)
    assert.matches("expected pos_weight as a number or a tensor, got string",
                   message(function() K.bce_with_logits(x, t, "3") end), 1, true)
    assert.matches("bad argument #2",
                   message(function() K.dice_loss(x, {}, 1) end), 1, true)
  end)

  it("kernels check the numbers", function()
    assert.matches("gamma must be a finite number >= 0, got -1",
                   message(function() K.focal_loss(x, t, -1) end), 1, true)
    assert.matches("alpha must be a number in [0, 1], got 1.5",
                   message(function() K.focal_loss_backward(x, t, 2, 1.5) end), 1, true)
    assert.matches("eps must be a finite number >= 0, got -0.5",
                   message(function() K.dice_loss(x, t, -0.5) end), 1, true)
    assert.matches("pos_weight must be a finite number >= 0, got -2",
                   message(function() R.bce_with_logits_backward(x, t, -2) end), 1, true)
    assert.matches("eps must be finite, got inf",
                   message(function() K.dice_loss(x, t, math.huge) end), 1, true)
  end)

  it("modules name themselves", function()
    assert.matches("DiceLoss: expected target of the logits' shape 2x3, got 3x2",
                   message(function() nn.DiceLoss():forward(x, t:t()) end), 1, true)
    assert.matches("BCEWithLogitsLoss: expected target as a tensor, got table",
                   message(function() nn.BCEWithLogitsLoss():backward(x, T) end), 1, true)
    assert.matches("FocalLoss: unknown option 'gama'",
                   message(function() nn.FocalLoss{gama = 2} end), 1, true)
    assert.matches("FocalLoss: alpha must be a finite number in [0, 1], got 2",
                   message(function() nn.FocalLoss{alpha = 2} end), 1, true)
    assert.matches("ComboLoss: every weight is 0 (set bce, dice or focal)",
                   message(function() nn.ComboLoss{bce = 0, dice = 0} end), 1, true)
    assert.matches("ComboLoss: dice weight must be a finite number >= 0, got -1",
                   message(function() nn.ComboLoss{dice = -1} end), 1, true)
    assert.matches("ComboLoss: eps must be a finite number >= 0, got -1",
                   message(function() nn.ComboLoss{eps = -1} end), 1, true)
    assert.matches("BCEWithLogitsLoss: pos_weight must be a number or a tensor, got string",
                   message(function() nn.BCEWithLogitsLoss{pos_weight = "2"} end), 1, true)
  end)
end)
