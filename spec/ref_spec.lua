-- lpnx.ref: the oracles are a module of their own, not part of lpnx.core.
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs a Lua chunk in a fresh lua5.4 with this build's paths; returns
-- its output and whether it exited with 0.
local function fresh(code)
  local f = assert(io.popen(("lua5.4 -e %s 2>&1"):format(quote(code))))
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

describe("lpnx.ref", function()
  it("is not in lpnx.core and loads on require", function()
    local out, ok = fresh([[
      local core = require "lpnx.core"
      io.write(tostring(core.ref), " ", tostring(package.loaded["lpnx.ref"]), "\n")
      local ref = require "lpnx.ref"
      io.write(type(ref.conv2d_forward), " ", type(ref.image.resize), " ", type(ref.matmul), "\n")]])
    assert.is_true(ok, out)
    assert.are.equal("nil nil\nfunction function function\n", out)
  end)

  it("names the missing module when its bindings are called without it", function()
    local out, ok = fresh([[
      require "lpnx.core"
      local bindings = debug.getregistry()["lpnx.ref.bindings"]
      local a = require("lpnx.core").ones(2, 2)
      print(select(2, pcall(bindings.matmul, a, a)))]])
    assert.is_true(ok, out)
    assert.matches('lpnx.ref: the oracles are not loaded %(require "lpnx.ref" first%)', out)
  end)

  it("gives the oracle's result through lpnx.core's checks", function()
    local lpnx = require "lpnx"
    local ref = require "lpnx.ref"
    local a = lpnx.tensor{{1, 2}, {3, 4}}
    assert.are.same({{7, 10}, {15, 22}}, ref.matmul(a, a):totable())
    assert.has_error(function() ref.matmul(a, lpnx.ones(3, 1)) end,
      "ref.matmul: expected (m,k) and (k,n), got 2x2 and 3x1")
  end)
end)
