local lpnx = require "lpnx"
local h = require "spec.support.helpers"

describe("arithmetic", function()
  local a = lpnx.tensor{{1, 2, 3}, {4, 5, 6}}

  it("+ - * / work elementwise on same-shape tensors", function()
    local b = lpnx.tensor{{6, 5, 4}, {3, 2, 1}}
    assert.are.same({{7, 7, 7}, {7, 7, 7}}, (a + b):totable())
    assert.are.same({{-5, -3, -1}, {1, 3, 5}}, (a - b):totable())
    assert.are.same({{6, 10, 12}, {12, 10, 6}}, (a * b):totable())
    assert.are.same({{0.5, 1, 3}, {4, 5, 6}}, (a / lpnx.tensor{{2, 2, 1}, {1, 1, 1}}):totable())
  end)

  it("numbers work on either side", function()
    assert.are.same({{2, 3, 4}, {5, 6, 7}}, (a + 1):totable())
    assert.are.same({{9, 8, 7}, {6, 5, 4}}, (10 - a):totable())
    assert.are.same({{2, 4, 6}, {8, 10, 12}}, (2 * a):totable())
    assert.are.same({{1, 0.5, 0.25}}, (1 / lpnx.tensor{{1, 2, 4}}):totable())
    assert.are.same({{1, 4, 9}, {16, 25, 36}}, (a ^ 2):totable())
    assert.are.same({{-1, -2, -3}, {-4, -5, -6}}, (-a):totable())
  end)

  it("broadcasts a trailing-dims tensor over the leading dims", function()
    local row = lpnx.tensor{10, 20, 30}
    assert.are.same({{11, 22, 33}, {14, 25, 36}}, (a + row):totable())
    assert.are.same({{11, 22, 33}, {14, 25, 36}}, (row + a):totable())
    local x = lpnx.ones(2, 3, 4)
    local y = lpnx.arange(12):view(3, 4)
    local z = x * y
    assert.are.same({2, 3, 4}, z:size())
    assert.are.equal(11, z:get(2, 3, 4))
    assert.are.equal(2 * 66, z:sum())
  end)

  it("broadcasts size-1 dims both ways, as PyTorch does", function()
    local col = lpnx.tensor{{1}, {2}}
    local row = lpnx.tensor{{10, 20, 30}}
    assert.are.same({{11, 21, 31}, {12, 22, 32}}, (col + row):totable())
    local per_channel = lpnx.tensor{1, 2}:view(1, 2, 1, 1)
    local img = lpnx.ones(3, 2, 2, 2)
    local out = img * per_channel
    assert.are.equal(3 * 4 * (1 + 2), out:sum())
    assert.are.equal(2, out:get(3, 2, 2, 1))
  end)

  it("works on non-contiguous operands", function()
    local m = lpnx.arange(6):view(2, 3)
    local s = m:t() + m:t()
    assert.are.same({{0, 6}, {2, 8}, {4, 10}}, s:totable())
    local n = m:narrow(2, 2, 2) * 10
    assert.are.same({{10, 20}, {40, 50}}, n:totable())
  end)

  it("add and sub take PyTorch's alpha", function()
    local x = lpnx.tensor{1, 2}
    assert.are.same({7, 12}, x:add(lpnx.tensor{3, 5}, 2):totable())
    assert.are.same({-5, -8}, x:sub(lpnx.tensor{3, 5}, 2):totable())
    assert.are.same({1, 2}, x:totable())
  end)

  it("comparisons give 0/1 masks", function()
    local x = lpnx.tensor{0.2, 0.5, 0.9}
    assert.are.same({0, 0, 1}, x:gt(0.5):totable())
    assert.are.same({0, 1, 1}, x:ge(0.5):totable())
    assert.are.same({1, 0, 0}, x:lt(0.5):totable())
    assert.are.same({0, 1, 0}, x:eq(lpnx.tensor{0, 0.5, 0}):totable())
  end)
end)

describe("in-place operations", function()
  it("add_ mul_ sub_ div_ change the tensor and return it", function()
    local x = lpnx.tensor{1, 2, 3}
    local r = x:add_(1):mul_(2):sub_(lpnx.tensor{1, 1, 1}):div_(lpnx.tensor{1, 1, 7})
    assert.are.equal(x, r)
    assert.are.same({3, 5, 1}, x:totable())
    x:add_(lpnx.tensor{1, 1, 1}, 0.5)
    assert.are.same({3.5, 5.5, 1.5}, x:totable())
  end)

  it("in-place ops broadcast the other operand into self", function()
    local x = lpnx.zeros(2, 3)
    x:add_(lpnx.tensor{1, 2, 3})
    x:mul_(lpnx.tensor{{1}, {2}})
    assert.are.same({{1, 2, 3}, {2, 4, 6}}, x:totable())
  end)

  it("fill_, zero_, copy_ and clamp_", function()
    local x = lpnx.empty(2, 2):fill_(4)
    assert.are.same({{4, 4}, {4, 4}}, x:totable())
    x:copy_(lpnx.tensor{{-1, 0.5}, {2, 3}})
    x:clamp_(0, 2)
    assert.are.same({{0, 0.5}, {2, 2}}, x:totable())
    x:copy_(lpnx.tensor{9, 8})
    assert.are.same({{9, 8}, {9, 8}}, x:totable())
    x:zero_()
    assert.are.equal(0, x:abs():sum())
    assert.are.same({-1, 5}, lpnx.tensor{-3, 7}:clamp(-1, 5):totable())
    assert.are.same({-3, 5}, lpnx.tensor{-3, 7}:clamp(nil, 5):totable())
  end)

  it("in-place ops on a transposed view write the right elements", function()
    local m = lpnx.zeros(2, 3)
    m:t():add_(lpnx.tensor{{1, 2}, {3, 4}, {5, 6}})
    assert.are.same({{1, 3, 5}, {2, 4, 6}}, m:totable())
    m:add_(m:t():t())
    assert.are.same({{2, 6, 10}, {4, 8, 12}}, m:totable())
  end)
end)

describe("unary functions", function()
  it("abs, sqrt, exp, log, relu, neg", function()
    local x = lpnx.tensor{-4, 0, 4}
    assert.are.same({4, 0, 4}, x:abs():totable())
    assert.are.same({0, 0, 4}, x:relu():totable())
    assert.are.same({4, 0, -4}, x:neg():totable())
    h.assert_near(lpnx.tensor{1, 4, 9}:sqrt(), {1, 2, 3})
    h.assert_near(lpnx.tensor{0, 1}:exp(), {1, math.exp(1)}, 1e-6)
    h.assert_near(lpnx.tensor{1, math.exp(2)}:log(), {0, 2}, 1e-6)
  end)

  it("sigmoid is exact at 0 and stable at the tails", function()
    local s = lpnx.tensor{0, 100, -100, 2}:sigmoid()
    assert.are.equal(0.5, s[1])
    assert.are.equal(1, s[2])
    assert.is_true(s[3] >= 0 and s[3] < 1e-40)
    assert.is_true(math.abs(s[4] - 1 / (1 + math.exp(-2))) < 1e-7)
  end)

  it("in-place variants change the tensor itself", function()
    local x = lpnx.tensor{-1, 4}
    x:abs_():sqrt_()
    assert.are.same({1, 2}, x:totable())
  end)

  it("large tensors take the parallel path and agree with the small one", function()
    local n = 300000
    local x = lpnx.randn(n)
    local y = x:sigmoid()
    local i = 123457
    assert.is_true(math.abs(y[i] - 1 / (1 + math.exp(-x[i]))) < 1e-6)
    local z = x + x
    assert.are.equal(2 * x[n], z[n])
  end)
end)
