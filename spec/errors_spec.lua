local lpnx = require "lpnx"

-- The message of the error f raises (busted's has_error needs the exact text).
local function message(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("errors say what was expected and what came", function()
  it("broadcast clashes name both shapes", function()
    local m = message(function() return lpnx.zeros(2, 3) + lpnx.zeros(4, 3) end)
    assert.matches("shapes 2x3 and 4x3 cannot broadcast: dim 1 is 2 vs 4", m, 1, true)
  end)

  it("matmul names the inner sizes", function()
    local m = message(function() return lpnx.matmul(lpnx.zeros(2, 3), lpnx.zeros(4, 5)) end)
    assert.matches("matmul: shapes 2x3 and 4x5 do not match (inner sizes 3 and 4)", m, 1, true)
  end)

  it("an in-place op cannot grow self", function()
    local m = message(function() return lpnx.zeros(3):add_(lpnx.zeros(2, 3)) end)
    assert.matches("in-place op: 2x3 does not broadcast to 3", m, 1, true)
  end)

  it("indices out of range name the dim and its size", function()
    assert.matches("index 4 out of range for dim 2 of size 3",
                   message(function() return lpnx.zeros(2, 3):get(1, 4) end), 1, true)
    assert.matches("index 3 out of range for dim 1 of size 2",
                   message(function() return lpnx.zeros(2, 3)[3] end), 1, true)
    assert.matches("expected 2 indices for a 2x3 tensor, got 1",
                   message(function() return lpnx.zeros(2, 3):get(1) end), 1, true)
  end)

  it("bad sizes are argument errors", function()
    assert.matches("size must be a non-negative integer, got -1",
                   message(function() return lpnx.zeros(-1) end), 1, true)
    assert.matches("size must be a non-negative integer, got 2.5",
                   message(function() return lpnx.ones(2.5) end), 1, true)
    assert.matches("size 2 must be a non-negative integer, got string",
                   message(function() return lpnx.zeros{2, "x"} end), 1, true)
    assert.matches("expected sizes as numbers or a table, got string",
                   message(function() return lpnx.zeros("a") end), 1, true)
    assert.matches("at most 8 dims", message(function() return lpnx.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end), 1, true)
  end)

  it("a tensor too large for memory is an error, not a crash", function()
    assert.matches("not enough memory for a 3x65536x65536x65536 tensor",
                   message(function() return lpnx.zeros(3, 65536, 65536, 65536) end), 1, true)
    assert.matches("size overflows the address space",
                   message(function() return lpnx.empty(2 ^ 40, 2 ^ 40) end), 1, true)
  end)

  it("ragged or non-numeric tables are rejected", function()
    assert.matches("ragged table: a row at depth 2 has 1 elements, expected 2",
                   message(function() return lpnx.tensor{{1, 2}, {3}} end), 1, true)
    assert.matches("expected a number, got string",
                   message(function() return lpnx.tensor{{1, "x"}} end), 1, true)
  end)

  it("view explains why it cannot", function()
    assert.matches("cannot view a 2x3 tensor (6 elements) as 4x2",
                   message(function() return lpnx.zeros(2, 3):view(4, 2) end), 1, true)
    assert.matches("use :reshape()",
                   message(function() return lpnx.zeros(2, 3):t():view(6) end), 1, true)
  end)

  it("wrong argument types name the argument", function()
    assert.matches("expected a tensor or a number, got string",
                   message(function() return lpnx.zeros(2) + "x" end), 1, true)
    assert.matches("lpnx.Tensor expected, got string",
                   message(function() return lpnx.Tensor.sum("x") end), 1, true)
    assert.matches("dim 3 out of range for a 2-dim tensor",
                   message(function() return lpnx.zeros(2, 3):sum(3) end), 1, true)
  end)

  it("cat, narrow, expand and reductions check their inputs", function()
    assert.matches("cat: tensor 2 is 3x2, expected 2x3 apart from dim 1",
                   message(function() return lpnx.cat{lpnx.zeros(2, 3), lpnx.zeros(3, 2)} end), 1, true)
    assert.matches("narrow: start 3 and length 2 out of range for dim 2 of size 3",
                   message(function() return lpnx.zeros(2, 3):narrow(2, 3, 2) end), 1, true)
    assert.matches("expand: cannot expand 1x3 to 2x4",
                   message(function() return lpnx.zeros(1, 3):expand(2, 4) end), 1, true)
    assert.matches("max of an empty tensor (size 0)",
                   message(function() return lpnx.zeros(0):max() end), 1, true)
    assert.matches("in-place op on an expanded tensor",
                   message(function() return lpnx.zeros(1, 3):expand(2, 3):add_(1) end), 1, true)
  end)

  it("a closed tensor raises instead of reading freed memory", function()
    local t = lpnx.zeros(3)
    do local closing <close> = t end -- luacheck: ignore closing
    assert.matches("tensor was closed", message(function() return t + 1 end), 1, true)
    assert.are.equal("[lpnx.Tensor (closed)]", tostring(t))
  end)

  it("failed operations leave their inputs unchanged", function()
    local t = lpnx.tensor{1, 2, 3}
    pcall(function() t:add_(lpnx.zeros(2)) end)
    pcall(function() t:copy_(lpnx.zeros(4)) end)
    assert.are.same({1, 2, 3}, t:totable())
  end)
end)
