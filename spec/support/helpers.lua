-- Small assertions shared by the specs.
local lpnx = require "lpnx"
local assert = require "luassert"
local M = {}

-- Largest absolute difference between a tensor and a tensor or nested table.
function M.max_diff(a, b)
  if not lpnx.is_tensor(b) then b = lpnx.tensor(b) end
  assert.are.same(b:size(), a:size())
  if a:numel() == 0 then return 0 end
  return (a - b):abs():max()
end

-- Asserts a and b agree to tol (absolute) element by element.
function M.assert_near(a, b, tol)
  local d = M.max_diff(a, b)
  assert(d <= (tol or 1e-6), ("max difference %g exceeds %g"):format(d, tol or 1e-6))
end

-- A fresh temporary folder, removed by the caller with M.rmdir.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

function M.rmdir(p)
  os.execute("rm -rf '" .. p .. "'")
end

-- Path of a committed fixture.
function M.fixture(name)
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/support/[^/]*$") or "spec"
  return dir .. "/fixtures/" .. name
end

return M
