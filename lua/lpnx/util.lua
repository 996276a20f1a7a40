-- Argument checks the Lua modules share. Messages start with where ("SGD",
-- "DiceLoss"); level is error()'s, counted from the check itself, and is 4
-- by default: the caller of a class constructor (Class(...) -> the class
-- helper's __call -> __init -> the check).
local util = {}

local CTOR = 4

-- "2x3x4"; "scalar" for a 0-dim tensor.
function util.shape(t)
  local size = t:size()
  return #size == 0 and "scalar" or table.concat(size, "x")
end

function util.same_shape(a, b)
  local x, y = a:size(), b:size()
  if #x ~= #y then return false end
  for d = 1, #x do
    if x[d] ~= y[d] then return false end
  end
  return true
end

-- opts (nil gives {}) with every key one of the names in the array allowed:
-- a misspelt option would otherwise be silently ignored.
function util.check_options(opts, allowed, where, level)
  if opts == nil then return {} end
  level = level or CTOR
  if type(opts) ~= "table" then error(("%s: expected an options table, got %s"):format(where, type(opts)), level) end
  local known = {}
  for _, name in ipairs(allowed) do known[name] = true end
  for k in pairs(opts) do
    if not known[k] then error(("%s: unknown option '%s'"):format(where, tostring(k)), level) end
  end
  return opts
end

-- opts (nil gives {}) with every key one of the names in the array allowed,
-- for module functions: the error is raised at level 3 (the caller of the
-- function that checks) and lists the names allowed, sorted in place.
function util.check_keys(name, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(("%s: expected an options table, got %s"):format(name, type(opts)), 3) end
  local ok = {}
  for _, k in ipairs(allowed) do ok[k] = true end
  for k in pairs(opts) do
    if not ok[k] then
      table.sort(allowed)
      error(("%s: unknown option '%s' (expected one of %s)"):format(name, tostring(k), table.concat(allowed, ", ")), 3)
    end
  end
  return opts
end

-- v, a finite number in [lo, hi] (hi_open: [lo, hi); no hi: >= lo; lo =
-- -math.huge: any finite number).
function util.check_number(where, what, v, lo, hi, hi_open, level)
  local ok = type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge and v >= lo
  if ok and hi then ok = hi_open and v < hi or (not hi_open and v <= hi) end
  if not ok then
    local range
    if hi then
      range = ("in [%g, %g%s"):format(lo, hi, hi_open and ")" or "]")
    elseif lo == -math.huge then
      range = ""
    else
      range = (">= %g"):format(lo)
    end
    error(("%s: %s must be a finite number %s, got %s"):format(where, what, range, tostring(v)), level or CTOR)
  end
  return v
end

return util
