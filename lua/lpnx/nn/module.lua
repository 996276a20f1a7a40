-- nn.Module: Torch7's protocol, batch-only (N,C,H,W).
--   m:forward(x) -> y          m:backward(x, gy) -> gx (parameter gradients accumulate)
--   m:zero_grad()              m:train() / m:eval()
--   m:parameters() -> params, grads     m:named_parameters() -> {{name=, value=, grad=}}
--   m:state_dict() -> {key = tensor}    m:load_state_dict(sd, {strict = true})
-- Parameters, buffers and children are registered by name, in order, so
-- state-dict keys and their order are PyTorch's ("layer1.0.conv1.weight").
local lpnx = require "lpnx"
local class = require "lpnx.class"
local util = require "lpnx.util"

local Module = class("nn.Module")

function Module:__init()
  self._params = {}    -- {name=, value=, grad=} in registration order
  self._buffers = {}   -- {name=, value=}
  self._children = {}  -- {name=, module=}
  self.training = true
end

-- Adds a parameter: value and its gradient (zeros of the same shape).
-- Also reachable as self[name] and self["grad_" .. name].
function Module:register_parameter(name, value)
  local grad = lpnx.zeros(value:size())
  self._params[#self._params + 1] = {name = name, value = value, grad = grad}
  self[name] = value
  self["grad_" .. name] = grad
  return value
end

-- Adds a buffer: state that is saved but not trained (running statistics).
function Module:register_buffer(name, value)
  self._buffers[#self._buffers + 1] = {name = name, value = value}
  self[name] = value
  return value
end

-- Adds a child module under name (also self[name]); returns it.
function Module:add_module(name, module)
  name = tostring(name)
  for _, c in ipairs(self._children) do
    if c.name == name then error(("module %s already has a child '%s'"):format(self.__name, name), 2) end
  end
  self._children[#self._children + 1] = {name = name, module = module}
  self[name] = module
  return module
end

function Module:children()
  local list = {}
  for i, c in ipairs(self._children) do list[i] = c.module end
  return list
end

-- Calls fn(module, prefix) on self and every descendant, parents first.
function Module:apply(fn, prefix)
  prefix = prefix or ""
  fn(self, prefix)
  for _, c in ipairs(self._children) do
    c.module:apply(fn, prefix .. c.name .. ".")
  end
  return self
end

function Module:named_parameters()
  local list = {}
  self:apply(function(m, prefix)
    for _, p in ipairs(m._params) do
      list[#list + 1] = {name = prefix .. p.name, value = p.value, grad = p.grad}
    end
  end)
  return list
end

function Module:named_buffers()
  local list = {}
  self:apply(function(m, prefix)
    for _, b in ipairs(m._buffers) do list[#list + 1] = {name = prefix .. b.name, value = b.value} end
  end)
  return list
end

function Module:parameters()
  local params, grads = {}, {}
  for i, p in ipairs(self:named_parameters()) do
    params[i], grads[i] = p.value, p.grad
  end
  return params, grads
end

-- Every parameter and buffer by its full key, PyTorch's order kept in the
-- second result.
function Module:state_dict()
  local sd, keys = {}, {}
  self:apply(function(m, prefix)
    for _, p in ipairs(m._params) do
      sd[prefix .. p.name] = p.value
      keys[#keys + 1] = prefix .. p.name
    end
    for _, b in ipairs(m._buffers) do
      sd[prefix .. b.name] = b.value
      keys[#keys + 1] = prefix .. b.name
    end
  end)
  return sd, keys
end

local shape = util.shape_tuple

-- Copies values from sd into this module's own tensors (so references
-- held elsewhere, such as an optimizer's, stay valid). strict (default):
-- missing, unexpected or wrongly shaped keys are an error listing them
-- all, and nothing is changed. Otherwise what matches is loaded and the
-- rest reported: returns {missing=, unexpected=, mismatched=}.
function Module:load_state_dict(sd, opts)
  if type(sd) ~= "table" then error("load_state_dict: expected a table of tensors, got " .. type(sd), 2) end
  local strict = not (opts and opts.strict == false)
  local own, keys = self:state_dict()
  local report = {missing = {}, unexpected = {}, mismatched = {}}
  for _, k in ipairs(keys) do
    local v = sd[k]
    if v == nil then
      report.missing[#report.missing + 1] = k
    elseif not lpnx.is_tensor(v) then
      report.mismatched[#report.mismatched + 1] = ("%s: expected a tensor, got a %s"):format(k, type(v))
    elseif v:numel() ~= own[k]:numel() or (v:dim() ~= own[k]:dim() and own[k]:dim() > 0) then
      report.mismatched[#report.mismatched + 1] =
        ("%s: expected %s, got %s"):format(k, shape(own[k]), shape(v))
    else
      local same = true
      for d = 1, own[k]:dim() do
        if own[k]:size(d) ~= v:size(d) then same = false end
      end
      if not same then
        report.mismatched[#report.mismatched + 1] =
          ("%s: expected %s, got %s"):format(k, shape(own[k]), shape(v))
      end
    end
  end
  local unexpected = {}
  for k in pairs(sd) do
    if own[k] == nil then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  report.unexpected = unexpected
  local bad = #report.missing + #report.unexpected + #report.mismatched > 0
  if strict and bad then
    -- the first few of each kind (the report has them all)
    local function some(list, sep)
      local shown = table.move(list, 1, math.min(#list, 8), 1, {})
      local text = table.concat(shown, sep)
      if #list > #shown then text = text .. (" and %d more (%d in all)"):format(#list - #shown, #list) end
      return text
    end
    local lines = {"load_state_dict: the state dict does not match the model"}
    if #report.missing > 0 then lines[#lines + 1] = "  missing keys: " .. some(report.missing, ", ") end
    if #report.unexpected > 0 then lines[#lines + 1] = "  unexpected keys: " .. some(report.unexpected, ", ") end
    if #report.mismatched > 0 then lines[#lines + 1] = "  wrong shapes: " .. some(report.mismatched, "; ") end
    error(table.concat(lines, "\n"), 2)
  end
  local skip = {}
  for _, m in ipairs(report.mismatched) do skip[m:match("^(.-):")] = true end
  for _, k in ipairs(keys) do
    local v = sd[k]
    if v ~= nil and not skip[k] then own[k]:copy_(v:view(own[k]:size())) end
  end
  return report
end

function Module:zero_grad()
  for _, p in ipairs(self:named_parameters()) do p.grad:zero_() end
  return self
end

function Module:train(mode)
  if mode == nil then mode = true end
  self:apply(function(m) m.training = mode end)
  return self
end

function Module:eval()
  return self:train(false)
end

function Module:forward()
  error(self.__name .. ":forward is not implemented", 2)
end

function Module:backward()
  error(self.__name .. ":backward is not implemented", 2)
end

-- Number of trainable values.
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:named_parameters()) do n = n + p.value:numel() end
  return n
end

function Module.extra_repr()
  return ""
end

function Module.__tostring(m)
  local lines = {}
  local function walk(mod, name, indent)
    local extra = mod:extra_repr()
    local head = indent .. (name and ("(" .. name .. "): ") or "") .. mod.__name
    if extra ~= "" then head = head .. "(" .. extra .. ")" end
    lines[#lines + 1] = head
    for _, c in ipairs(mod._children) do walk(c.module, c.name, indent .. "  ") end
  end
  walk(m, nil, "")
  return table.concat(lines, "\n")
end

return Module
