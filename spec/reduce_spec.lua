local lpnx = require "lpnx"
local h = require "spec.support.helpers"

describe("reductions", function()
  local t = lpnx.tensor{{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}},
                        {{-1, -2, -3, -4}, {0, 0, 0, 0}, {1, 1, 1, 100}}}

  it("sum and mean of everything are numbers", function()
    assert.are.equal(78 + 93, t:sum())
    assert.are.equal((78 + 93) / 24, t:mean())
    assert.are.equal(78 + 93, lpnx.sum(t))
  end)

  it("sum over each dim removes that dim", function()
    assert.are.same({{0, 0, 0, 0}, {5, 6, 7, 8}, {10, 11, 12, 112}}, t:sum(1):totable())
    assert.are.same({{15, 18, 21, 24}, {0, -1, -2, 96}}, t:sum(2):totable())
    assert.are.same({{10, 26, 42}, {-10, 0, 103}}, t:sum(3):totable())
    assert.are.same({{10, 26, 42}, {-10, 0, 103}}, t:sum(-1):totable())
  end)

  it("keepdim keeps the reduced dim as size 1", function()
    assert.are.same({2, 1, 4}, t:sum(2, true):size())
    assert.are.same({2, 3, 1}, t:mean(3, true):size())
    local centred = t - t:mean(3, true)
    h.assert_near(centred:sum(3), lpnx.zeros(2, 3), 1e-5)
  end)

  it("mean over a dim divides by its size", function()
    assert.are.same({{2.5, 6.5, 10.5}, {-2.5, 0, 25.75}}, t:mean(3):totable())
  end)

  it("max and min of everything, and along a dim with 1-based indices", function()
    assert.are.equal(100, t:max())
    assert.are.equal(-4, t:min())
    local v, i = t:max(3)
    assert.are.same({{4, 8, 12}, {-1, 0, 100}}, v:totable())
    assert.are.same({{4, 4, 4}, {1, 1, 4}}, i:totable())
    local mv, mi = t:min(1)
    assert.are.same({{-1, -2, -3, -4}, {0, 0, 0, 0}, {1, 1, 1, 12}}, mv:totable())
    assert.are.same({{2, 2, 2, 2}, {2, 2, 2, 2}, {2, 2, 2, 1}}, mi:totable())
  end)

  it("argmax and argmin give 1-based positions, first on ties", function()
    assert.are.equal(24, t:argmax())
    assert.are.equal(16, t:argmin())
    assert.are.same({{3, 3, 3, 3}, {3, 3, 3, 3}}, t:argmax(2):totable())
    assert.are.equal(1, lpnx.tensor{5, 5, 5}:argmax())
  end)

  it("max propagates NaN like PyTorch", function()
    local x = lpnx.tensor{1, 0 / 0, 3}
    local m = x:max()
    assert.is_true(m ~= m)
    assert.are.equal(2, x:argmax())
  end)

  it("reductions of non-contiguous views see the view's elements", function()
    local m = lpnx.arange(12):view(3, 4)
    assert.are.same({6, 22, 38}, m:sum(2):totable())
    assert.are.same({6, 22, 38}, m:t():sum(1):totable())
    assert.are.equal(1 + 2 + 5 + 6 + 9 + 10, m:narrow(2, 2, 2):sum())
  end)

  it("long sums stay accurate", function()
    local n = 1000000
    local x = lpnx.full({n}, 0.1)
    assert.is_true(math.abs(x:sum() - n * 0.1) < 0.01)
    local rows = lpnx.ones(4, 250000):sum(2)
    assert.are.same({250000, 250000, 250000, 250000}, rows:totable())
  end)
end)
