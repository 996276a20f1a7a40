-- Finite-difference gradient checks.
--
-- check(loss, x, analytic, opts) perturbs elements of tensor x in place
-- (restoring them), evaluates loss() -> number (accumulate it in double:
-- lpnx's sum() already does) with central differences, and compares with
-- the analytic gradient tensor of x's shape. Points where the function
-- bends sharply within +-eps (ReLU and max-pool kinks) are skipped.
-- Returns the number of points checked; fails with the worst mismatch.
local lpnx = require "lpnx"
local assert = require "luassert"

local M = {}

function M.check(loss, x, analytic, opts)
  opts = opts or {}
  local eps = opts.eps or 1e-2
  local rtol, atol = opts.rtol or 2e-2, opts.atol or 2e-3
  local samples = opts.samples or 60
  assert.are.same(x:size(), analytic:size())
  local flat = x:view(-1)               -- x must be contiguous: a view, not a copy
  local g = analytic:contiguous():view(-1)
  local n = flat:numel()
  local gen = lpnx.Generator(opts.seed or 1)
  local picks = {}
  if n <= samples then
    for i = 1, n do picks[i] = i end
  else
    for i = 1, samples do picks[i] = gen:random(1, n) end
  end
  local f0 = loss()
  local checked, worst = 0, nil
  for _, i in ipairs(picks) do
    local orig = flat[i]
    flat[i] = orig + eps
    local xp = flat[i]
    local fp = loss()
    flat[i] = orig - eps
    local xm = flat[i]
    local fm = loss()
    flat[i] = orig
    local numeric = (fp - fm) / (xp - xm)
    local curvature = math.abs(fp - 2 * f0 + fm)
    local slope = math.abs(fp - fm) + 1e-12
    if curvature <= (opts.kink or 0.5) * slope + 1e-6 then
      local a = g[i]
      local err = math.abs(numeric - a)
      if err > atol + rtol * math.abs(numeric) then
        if not worst or err > worst.err then
          worst = {err = err, index = i, numeric = numeric, analytic = a}
        end
      end
      checked = checked + 1
    end
  end
  if worst then
    error(("gradient mismatch at element %d: numeric %.6g, analytic %.6g (|diff| %.3g)")
      :format(worst.index, worst.numeric, worst.analytic, worst.err), 2)
  end
  assert(checked >= math.min(#picks, opts.min_checked or math.ceil(#picks / 2)),
         ("only %d of %d points checked (the rest were kinks)"):format(checked, #picks))
  return checked
end

-- sum(y * gy) as a number: the scalar whose gradient wrt y is gy.
function M.dot(y, gy)
  return (y * gy):sum()
end

return M
