-- lpnx: pneumothorax segmentation on chest X-rays, in Lua.
-- require "lpnx" gives the tensor library of lpnx.core plus the Lua parts.
local core = require "lpnx.core"

local lpnx = {}
-- lpnx.kernels: the raw C kernels (forward and backward) the nn modules
-- call; lpnx.ref: slow oracles with the same signatures, for specs.
for k, v in pairs(core) do
  if k:sub(1, 1) ~= "_" then lpnx[k] = v end
end

-- lpnx.dicom.present: the presentation chain of a DICOM viewer, its
-- policy in Lua (lpnx.present), its per-pixel work in C.
function lpnx.dicom.present(...) return require("lpnx.present").present(...) end

-- lpnx.load_torch: PyTorch checkpoints, read as data (lpnx.torch).
function lpnx.load_torch(...) return require("lpnx.torch").load(...) end
function lpnx.load_weights(...) return require("lpnx.torch").load_weights(...) end

-- Registered as modules so error messages name them ("bad argument #1 to
-- 'lpnx.kernels.conv2d_forward'").
package.loaded["lpnx.kernels"] = core.kernels

local Tensor = core.Tensor
local mt = core._Tensor_mt

-- Formats one number for printing with the shared precision of the tensor.
local function formatter(values)
  local all_int, maxabs = true, 0
  for _, v in ipairs(values) do
    if v ~= v or v == math.huge or v == -math.huge then
      all_int = all_int and false
    else
      if v ~= math.floor(v) then all_int = false end
      if math.abs(v) > maxabs then maxabs = math.abs(v) end
    end
  end
  if all_int and maxabs < 1e9 then
    return function(v)
      if v ~= v then return "nan" end
      if v == math.huge then return "inf" end
      if v == -math.huge then return "-inf" end
      return string.format("%d", v)
    end
  end
  if maxabs ~= 0 and (maxabs >= 1e5 or maxabs < 1e-4) then
    return function(v) return string.format("%.4e", v) end
  end
  return function(v)
    if v ~= v then return "nan" end
    return string.format("%.4f", v)
  end
end

local EDGE = 3        -- items shown at each end of a long dim
local SUMMARIZE = 1000 -- tensors with more elements print elided

-- Indices of one dim to print: all, or the first and last EDGE with a gap.
local function shown(n, elide)
  local idx = {}
  if elide and n > 2 * EDGE then
    for i = 1, EDGE do idx[#idx + 1] = i end
    idx[#idx + 1] = false
    for i = n - EDGE + 1, n do idx[#idx + 1] = i end
  else
    for i = 1, n do idx[i] = i end
  end
  return idx
end

-- Torch7's layout: matrices as rows, higher dims as (i,j,.,.) = slices.
function mt.__tostring(t)
  if not pcall(Tensor.dim, t) then return "[lpnx.Tensor (closed)]" end
  local size = t:size()
  local shape = #size == 0 and "scalar" or table.concat(size, "x")
  local footer = string.format("[lpnx.Tensor of size %s]", shape)
  if #size == 0 then return string.format("%g\n%s", t:item(), footer) end
  if t:numel() == 0 then return "[lpnx.Tensor of size " .. shape .. " (empty)]" end
  local elide = t:numel() > SUMMARIZE
  local flat = t:contiguous():view(-1):totable()
  local fmt = formatter(flat)
  local strides = t:contiguous():stride()
  local lines = {}
  local function row_text(base)
    local cells = {}
    local last = #size
    for _, j in ipairs(shown(size[last], elide)) do
      cells[#cells + 1] = j and fmt(flat[base + (j - 1) * strides[last] + 1]) or "..."
    end
    return cells
  end
  local rows = {}
  local function walk(d, base, prefix)
    if d >= #size - 1 then
      if #size == 1 then
        rows[#rows + 1] = {cells = row_text(base)}
        return
      end
      if prefix then rows[#rows + 1] = {header = "(" .. table.concat(prefix, ",") .. ",.,.) = "} end
      for _, i in ipairs(shown(size[#size - 1], elide)) do
        if i then
          rows[#rows + 1] = {cells = row_text(base + (i - 1) * strides[#size - 1])}
        else
          rows[#rows + 1] = {gap = true}
        end
      end
      return
    end
    for _, i in ipairs(shown(size[d], elide)) do
      if i then
        local p = {table.unpack(prefix or {})}
        p[#p + 1] = i
        walk(d + 1, base + (i - 1) * strides[d], p)
      else
        rows[#rows + 1] = {header = "..."}
      end
    end
  end
  walk(1, 0, nil)
  local width = 0
  for _, r in ipairs(rows) do
    for _, c in ipairs(r.cells or {}) do width = math.max(width, #c) end
  end
  for _, r in ipairs(rows) do
    if r.header then
      if #lines > 0 then lines[#lines + 1] = "" end
      lines[#lines + 1] = r.header
    elseif r.gap then
      lines[#lines + 1] = " ..."
    else
      local cells = {}
      for i, c in ipairs(r.cells) do cells[i] = string.rep(" ", width - #c) .. c end
      lines[#lines + 1] = " " .. table.concat(cells, " ")
    end
  end
  lines[#lines + 1] = footer
  return table.concat(lines, "\n")
end

-- stack(list [, dim]): tensors of one shape joined along a new dim.
function lpnx.stack(list, dim)
  assert(type(list) == "table" and #list > 0, "lpnx.stack: expected a non-empty list of tensors")
  dim = dim or 1
  local parts = {}
  for i, t in ipairs(list) do
    if not core.is_tensor(t) then error(("lpnx.stack: element %d is not a tensor"):format(i), 2) end
    parts[i] = t:unsqueeze(dim)
  end
  return core.cat(parts, dim)
end

-- flatten([start_dim [, end_dim]]) as in PyTorch.
function Tensor.flatten(t, first, last)
  local size = t:size()
  local n = #size
  if n == 0 then return t:reshape(1) end
  first = first or 1
  last = last or n
  if first < 0 then first = first + n + 1 end
  if last < 0 then last = last + n + 1 end
  if first < 1 or last > n or first > last then
    error(("flatten: dims %d..%d out of range for a %d-dim tensor"):format(first, last, n), 2)
  end
  local new = {}
  for d = 1, first - 1 do new[#new + 1] = size[d] end
  local m = 1
  for d = first, last do m = m * size[d] end
  new[#new + 1] = m
  for d = last + 1, n do new[#new + 1] = size[d] end
  return t:reshape(new)
end

local function same_size(a, b)
  if a:dim() ~= b:dim() then return false end
  for d = 1, a:dim() do
    if a:size(d) ~= b:size(d) then return false end
  end
  return true
end

-- equal(a, b): same shape and the same values (NaN equals nothing), as torch.equal.
function Tensor.equal(a, b)
  return lpnx.is_tensor(b) and same_size(a, b) and (a:numel() == 0 or a:ne(b):sum() == 0)
end

-- allclose(a, b [, rtol [, atol]]): |a - b| <= atol + rtol * |b| everywhere.
function Tensor.allclose(a, b, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  if not (lpnx.is_tensor(b) and same_size(a, b)) then return false end
  if a:numel() == 0 then return true end
  return (a - b):abs():le(b:abs() * rtol + atol):min() == 1
end

-- Copies with the same values: lpnx.Tensor methods also reachable as
-- functions (lpnx.sum(t), lpnx.sigmoid(t), ...), as in PyTorch.
for _, name in ipairs {"sum", "mean", "max", "min", "argmax", "argmin", "abs", "sqrt", "exp",
                       "log", "sigmoid", "relu", "tanh", "clamp", "add", "sub", "mul", "div",
                       "pow", "maximum", "minimum", "transpose", "permute", "reshape", "view",
                       "narrow", "select", "unsqueeze", "squeeze", "flatten", "clone", "equal",
                       "allclose"} do
  lpnx[name] = lpnx[name] or Tensor[name]
end

-- How convolutions are computed, process-wide like the thread count:
-- for each use (a training-mode forward, an evaluation-mode forward, a
-- backward) the kernels' algorithm (lpnx/ops/conv2d.h). "auto" sums the
-- training forward in double, so the ReLU and max-pool decisions that
-- pick which gradients flow are those of exact arithmetic but for one
-- rounding per output, and uses Winograd's fewer multiplies where the
-- rounding only shifts values (inference, gradients).
local conv_modes = {
  auto = {train = "double", eval = "winograd", backward = "winograd"},
  winograd = {train = "winograd", eval = "winograd", backward = "winograd"},
  winograd2 = {train = "winograd2", eval = "winograd2", backward = "winograd2"},
  direct = {train = "direct", eval = "direct", backward = "direct"},
  double = {train = "double", eval = "double", backward = "direct"},
}
local conv_mode = "auto"

-- The names set_conv_algorithm takes, in the order help texts list them.
lpnx.conv_algorithms = {"auto", "winograd", "winograd2", "direct", "double"}

-- set_conv_algorithm("auto" | "winograd" | "winograd2" | "direct" | "double")
function lpnx.set_conv_algorithm(name)
  if type(name) ~= "string" or not conv_modes[name] then
    local quoted = {}
    for i, n in ipairs(lpnx.conv_algorithms) do quoted[i] = ("%q"):format(n) end
    error(("set_conv_algorithm: expected %s or %s, got %s"):format(table.concat(quoted, ", ", 1, #quoted - 1),
      quoted[#quoted], type(name) == "string" and ("%q"):format(name) or tostring(name)), 2)
  end
  conv_mode = name
end

-- get_conv_algorithm() -> name, {train = algo, eval = algo, backward = algo}
function lpnx.get_conv_algorithm()
  local m = conv_modes[conv_mode]
  return conv_mode, {train = m.train, eval = m.eval, backward = m.backward}
end

-- The kernels' algorithm for one use ("train", "eval" or "backward").
function lpnx.conv_algorithm_for(use)
  return conv_modes[conv_mode][use]
end

-- Submodules load on first use: lpnx.nn, lpnx.models, lpnx.optim, lpnx.metrics,
-- lpnx.siim, lpnx.synth, lpnx.data, lpnx.transforms, lpnx.train, lpnx.predict,
-- lpnx.evaluation, lpnx.progress, lpnx.report, lpnx.dist, lpnx.fs, and lpnx.ref (the oracles,
-- a C module of its own). (lpnx.dicom, png, rle, csv, image, draw and sys come from C.)
local lazy = {nn = "lpnx.nn", models = "lpnx.models", optim = "lpnx.optim", metrics = "lpnx.metrics",
              siim = "lpnx.siim", synth = "lpnx.synth", data = "lpnx.data", transforms = "lpnx.transforms",
              train = "lpnx.train", predict = "lpnx.predict", evaluation = "lpnx.evaluation",
              progress = "lpnx.progress", report = "lpnx.report", dist = "lpnx.dist", fs = "lpnx.fs",
              ref = "lpnx.ref"}
setmetatable(lpnx, {
  __index = function(t, k)
    local name = lazy[k]
    if not name then return nil end
    local m = require(name)
    rawset(t, k, m)
    return m
  end,
})

return lpnx
