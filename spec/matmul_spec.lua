local lpnx = require "lpnx"
local h = require "spec.support.helpers"

-- Plain Lua triple loop in double precision.
local function naive(a, b)
  local at, bt = a:totable(), b:totable()
  local m, k, n = #at, #bt, #bt[1]
  local c = {}
  for i = 1, m do
    c[i] = {}
    for j = 1, n do
      local s = 0
      for l = 1, k do s = s + at[i][l] * bt[l][j] end
      c[i][j] = s
    end
  end
  return lpnx.tensor(c)
end

describe("matmul", function()
  it("multiplies small matrices exactly", function()
    local a = lpnx.tensor{{1, 2}, {3, 4}, {5, 6}}
    local b = lpnx.tensor{{1, 0, 2}, {0, 1, 3}}
    assert.are.same({{1, 2, 8}, {3, 4, 18}, {5, 6, 28}}, lpnx.matmul(a, b):totable())
  end)

  it("agrees with a naive loop on random matrices", function()
    lpnx.manual_seed(3)
    local a, b = lpnx.randn(17, 33), lpnx.randn(33, 9)
    h.assert_near(lpnx.matmul(a, b), naive(a, b), 1e-4)
  end)

  it("agrees with the lpnx.ref oracle on a large product", function()
    lpnx.manual_seed(4)
    local a, b = lpnx.randn(130, 257), lpnx.randn(257, 70)
    h.assert_near(lpnx.matmul(a, b), lpnx.ref.matmul(a, b), 1e-3)
  end)

  it("takes transposed and narrowed views without copying them first", function()
    lpnx.manual_seed(5)
    local a, b = lpnx.randn(8, 5), lpnx.randn(6, 8)
    local expect = naive(a:t():contiguous(), b:t():contiguous())
    h.assert_near(lpnx.matmul(a:t(), b:t()), expect, 1e-5)
    local big = lpnx.randn(10, 10)
    local sub = big:narrow(1, 2, 4):narrow(2, 3, 5)
    h.assert_near(lpnx.matmul(sub, sub:t()), naive(sub:contiguous(), sub:t():contiguous()), 1e-5)
    local strided = lpnx.randn(4, 6):narrow(2, 1, 3):t() -- stride 1 on neither dim after a permute
    local other = lpnx.randn(4, 2)
    h.assert_near(lpnx.matmul(strided, other), naive(strided:contiguous(), other), 1e-5)
  end)

  it("handles vectors and batches", function()
    local m = lpnx.tensor{{1, 2}, {3, 4}}
    local v = lpnx.tensor{1, 1}
    assert.are.same({3, 7}, lpnx.matmul(m, v):totable())
    assert.are.same({4, 6}, lpnx.matmul(v, m):totable())
    assert.are.equal(11, lpnx.matmul(lpnx.tensor{1, 2}, lpnx.tensor{3, 4}))
    local batch = lpnx.stack{m, m * 2}
    local out = lpnx.matmul(batch, m)
    assert.are.same({2, 2, 2}, out:size())
    assert.are.same({{14, 20}, {30, 44}}, out[2]:totable())
  end)

  it("an empty inner dim gives zeros", function()
    local out = lpnx.matmul(lpnx.zeros(2, 0), lpnx.zeros(0, 3))
    assert.are.same({{0, 0, 0}, {0, 0, 0}}, out:totable())
  end)
end)

describe("cat and stack", function()
  it("cat joins along dim 1 by default and along any dim", function()
    local a = lpnx.tensor{{1, 2}}
    local b = lpnx.tensor{{3, 4}, {5, 6}}
    assert.are.same({{1, 2}, {3, 4}, {5, 6}}, lpnx.cat{a, b}:totable())
    local c = lpnx.tensor{{7}, {8}}
    assert.are.same({{3, 4, 7}, {5, 6, 8}}, lpnx.cat({b, c}, 2):totable())
  end)

  it("cat copies channel blocks of (N,C,H,W) tensors as the U-Net decoder needs", function()
    local x = lpnx.ones(2, 3, 4, 4)
    local skip = lpnx.full({2, 5, 4, 4}, 2)
    local y = lpnx.cat({x, skip}, 2)
    assert.are.same({2, 8, 4, 4}, y:size())
    assert.are.equal(2 * 16 * (3 + 10), y:sum())
    assert.are.equal(2, y:get(2, 4, 1, 1))
    assert.are.equal(1, y:get(2, 3, 4, 4))
  end)

  it("stack adds a new dim", function()
    local s = lpnx.stack({lpnx.tensor{1, 2}, lpnx.tensor{3, 4}}, 2)
    assert.are.same({{1, 3}, {2, 4}}, s:totable())
  end)
end)
