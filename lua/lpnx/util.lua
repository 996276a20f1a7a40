-- Argument checks and message pieces the Lua modules share. Messages start
-- with where ("SGD", "DiceLoss", "predict.triplet"); level is error()'s,
-- counted from the check itself. Unless a check says otherwise it is 4 by
-- default: the caller of a class constructor (Class(...) -> the class
-- helper's __call -> __init -> the check).
local util = {}

local CTOR = 4

---------------------------------------------------------------------------
-- message pieces

-- "2x3x4"; "scalar" for a 0-dim tensor.
function util.shape(t)
  local size = t:size()
  return #size == 0 and "scalar" or table.concat(size, "x")
end

-- "(2,3,4)": sizes in the form of the layouts messages name ("expected
-- (N,1,H,W), got (2,3,4)"); "()" for a 0-dim tensor.
function util.shape_tuple(t)
  return "(" .. table.concat(t:size(), ",") .. ")"
end

-- A value as it appears in a message: numbers as Lua users write them
-- ("2", "0.5", "inf"), strings quoted, anything else by its type.
function util.show(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then return ("%.14g"):format(v) end
  if type(v) == "string" then return ('"%s"'):format(v) end
  return type(v)
end

---------------------------------------------------------------------------
-- checks

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

-- true for a number that is neither NaN nor infinite.
function util.is_finite(v)
  return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge
end

-- v, a finite number in [lo, hi] (hi_open: [lo, hi); no hi: >= lo; lo =
-- -math.huge: any finite number).
function util.check_number(where, what, v, lo, hi, hi_open, level)
  local ok = util.is_finite(v) and v >= lo
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

-- v, a number in [lo, hi], never NaN; an infinite bound (hi = math.huge)
-- admits infinity. "where: what must be a number in [lo, hi], got v".
function util.number_in(where, what, v, lo, hi, level)
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then
    error(("%s: %s must be a number in [%g, %g], got %s"):format(where, what, lo, hi, tostring(v)), level or CTOR)
  end
  return v
end

-- list, a non-empty array of numbers each in [lo, hi] (as number_in,
-- naming the element "what[i]"). level defaults to 3: the caller of the
-- function that checks.
function util.number_list(where, what, list, lo, hi, level)
  level = level or 3
  if type(list) ~= "table" or #list == 0 then
    error(("%s: %s must be a non-empty list of numbers"):format(where, what), level)
  end
  for i, v in ipairs(list) do
    util.number_in(where, ("%s[%d]"):format(what, i), v, lo, hi, level + 1)
  end
  return list
end

-- v as an integer (an integral float below 2^53 is converted) of at
-- least lo.
function util.integer_at_least(where, what, v, lo, level)
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v) and v < 2 ^ 53) then
    error(("%s: %s must be an integer, got %s"):format(where, what, tostring(v)), level or CTOR)
  end
  v = math.tointeger(v)
  if v < lo then error(("%s: %s must be at least %d, got %d"):format(where, what, lo, v), level or CTOR) end
  return v
end

-- v, an integer (of integer subtype) >= 1. level defaults to 3: the
-- caller of the function that checks.
function util.positive_integer(where, what, v, level)
  if math.type(v) ~= "integer" or v < 1 then
    error(("%s: %s must be a positive integer, got %s"):format(where, what, tostring(v)), level or 3)
  end
  return v
end

-- opts[key], or default when it is nil: a finite number for which ok(v)
-- holds; wants says what ok wants ("in [0, 1]"): "where: key must be
-- wants, got v" (v as util.show writes it), or "where: key must be a
-- number, got TYPE". level defaults to 3: the caller of the function that
-- checks (a builder taking options).
function util.option_number(where, opts, key, default, ok, wants, level)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" then
    error(("%s: %s must be a number, got %s"):format(where, key, type(v)), level or 3)
  end
  if not (util.is_finite(v) and ok(v)) then
    error(("%s: %s must be %s, got %s"):format(where, key, wants, util.show(v)), level or 3)
  end
  return v
end

-- The names of a name table (its keys, sorted) or of an array (in order).
function util.names_of(names)
  local list = {}
  if names[1] ~= nil then
    for i, name in ipairs(names) do list[i] = name end
  else
    for name in pairs(names) do list[#list + 1] = name end
    table.sort(list)
  end
  return list
end

-- "a, b or c" ("" for none).
function util.either(list)
  if #list < 2 then return list[1] or "" end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

-- Whether a program is in a folder of PATH.
function util.installed(program)
  local fs = require "lpnx.fs"
  for folder in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if fs.stat(folder .. "/" .. program) == "file" then return true end
  end
  return false
end

-- gnuplot with a script on its standard input: true, or false when it
-- failed. Another program never gets the sanitizer runtime a sanitizer
-- build of lpnx runs with (LD_PRELOAD of libasan): its own leaks would
-- fail it.
function util.gnuplot(script)
  local preload = os.getenv("LD_PRELOAD") or ""
  local env = preload:match("libasan") and "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS " or ""
  local p = io.popen(env .. "gnuplot >/dev/null 2>&1", "w")
  p:write(script)
  return p:close() == true
end

-- make_folder(path): the folder and its missing parents (lpnx.fs.mkdir_p),
-- or "cannot create folder PATH: why" raised at the caller's caller.
function util.make_folder(path)
  local ok, err = pcall(require("lpnx.fs").mkdir_p, path)
  if not ok then
    error(("cannot create folder %s: %s"):format(path, (tostring(err):gsub("^lpnx%.fs%.mkdir_p: ", ""))), 3)
  end
end

return util
