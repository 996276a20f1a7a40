-- PyTorch checkpoints, read as data: lpnx.load_torch(path) -> tensors, info, names,
-- and lpnx.load_weights(path), which takes a checkpoint or a safetensors file.
--
-- Reads what torch.save writes (the zip format of PyTorch 1.6 and later)
-- through a restricted unpickler that builds tensors, dicts, lists and
-- numbers and calls nothing: a pickle naming any other global (os.system,
-- builtins.eval, ...) is refused with an error that names it.
--
--   tensors   {dotted name = float32 tensor}: float16, bfloat16, float64 and
--             integer storages converted; views (offsets, strides, storages
--             shared by several tensors) give their own values
--   info      the checkpoint's other top-level values as Lua values
--             (epoch, best score, ...); a top-level entry holding tensors that
--             were not loaded (an optimizer's state) says so as a string
--   names     the tensors' names in the checkpoint's order
--
-- Where the weights are: a state dict itself; or the one under
-- "state_dict", "model_state_dict", "model" or "net" (in that order), or the
-- only top-level entry that holds tensors. Nested dicts give dotted names;
-- DataParallel's "module." and torch.compile's "_orig_mod." prefixes, on
-- every name, are removed.
local lpnx = require "lpnx"
local core = require "lpnx.core"

local torch = {}

torch.state_dict_keys = {"state_dict", "model_state_dict", "model", "net"}

local function is_dict(v) return type(v) == "table" and v.kind == "dict" end
local function is_list(v) return type(v) == "table" and v.kind == "list" end

-- Whether v holds a tensor anywhere.
local function holds_tensor(v)
  if lpnx.is_tensor(v) then return true end
  if is_dict(v) then
    for i = 1, v.n do if holds_tensor(v.values[i]) then return true end end
  elseif is_list(v) then
    for i = 1, v.n do if holds_tensor(v.items[i]) then return true end end
  end
  return false
end

local function count_tensors(v)
  if lpnx.is_tensor(v) then return 1 end
  local n = 0
  if is_dict(v) then
    for i = 1, v.n do n = n + count_tensors(v.values[i]) end
  elseif is_list(v) then
    for i = 1, v.n do n = n + count_tensors(v.items[i]) end
  end
  return n
end

-- A value as plain Lua: dicts as tables (string or integer keys), lists as arrays.
local function plain(v)
  if is_dict(v) then
    local t = {}
    for i = 1, v.n do
      local k = v.keys[i]
      if type(k) == "string" or math.type(k) == "integer" then t[k] = plain(v.values[i]) end
    end
    return t
  elseif is_list(v) then
    local t = {}
    for i = 1, v.n do t[i] = plain(v.items[i]) end
    return t
  elseif type(v) == "table" and v.kind == "torch" then
    return "<torch " .. v.name .. ">"
  end
  return v
end

local function key_text(k)
  if type(k) == "string" then return k end
  if math.type(k) == "integer" then return tostring(k) end
  return nil
end

-- Walks v, putting tensors under dotted names into tensors/names and other
-- leaves into info.
local function flatten(v, prefix, tensors, names, info, path)
  if lpnx.is_tensor(v) then
    if tensors[prefix] then error(("lpnx.load_torch: %s: the name '%s' appears twice"):format(path, prefix), 0) end
    tensors[prefix] = v
    names[#names + 1] = prefix
  elseif is_dict(v) or is_list(v) then
    local n = v.n
    for i = 1, n do
      local k, item
      if is_dict(v) then k, item = key_text(v.keys[i]), v.values[i] else k, item = tostring(i - 1), v.items[i] end
      if k == nil then
        error(("lpnx.load_torch: %s: a key under '%s' is neither a string nor an integer"):format(path, prefix), 0)
      end
      flatten(item, prefix == "" and k or prefix .. "." .. k, tensors, names, info, path)
    end
  elseif prefix ~= "" then
    info[prefix] = plain(v)
  end
end

function torch.load(path)
  if type(path) ~= "string" then
    error(("lpnx.load_torch: expected a path, got %s"):format(type(path)), 2)
  end
  local root = core._torch_tree(path)
  local info = {}
  local weights = root
  if is_dict(root) then
    -- a dict of dicts: find the state dict among its entries
    local direct = false
    for i = 1, root.n do if lpnx.is_tensor(root.values[i]) then direct = true end end
    if not direct then
      local by_key, holders = {}, {}
      for i = 1, root.n do
        local k = key_text(root.keys[i])
        if k and holds_tensor(root.values[i]) then
          by_key[k] = root.values[i]
          holders[#holders + 1] = k
        end
      end
      local chosen
      for _, k in ipairs(torch.state_dict_keys) do
        if by_key[k] then chosen = k break end
      end
      if not chosen and #holders == 1 then chosen = holders[1] end
      if chosen then
        weights = by_key[chosen]
        for i = 1, root.n do
          local k = key_text(root.keys[i])
          if k and k ~= chosen then
            if by_key[k] then
              info[k] = ("(%d tensors, not loaded)"):format(count_tensors(by_key[k]))
            else
              info[k] = plain(root.values[i])
            end
          end
        end
      elseif #holders > 1 then
        error(("lpnx.load_torch: %s: tensors under %s, and none is named %s: cannot tell which are the weights")
              :format(path, table.concat(holders, ", "), table.concat(torch.state_dict_keys, ", ")), 0)
      end
    end
  end
  local tensors, names = {}, {}
  flatten(weights, "", tensors, names, info, path)
  if #names == 0 then error(("lpnx.load_torch: %s: the checkpoint holds no tensors"):format(path), 0) end
  -- wrappers that only prefix every name: DataParallel and
  -- DistributedDataParallel ("module."), torch.compile ("_orig_mod."), in
  -- either order
  local stripped = true
  while stripped do
    stripped = false
    for _, prefix in ipairs {"module.", "_orig_mod."} do
      local all = true
      for _, n in ipairs(names) do
        if n:sub(1, #prefix) ~= prefix then all = false break end
      end
      if all then
        local renamed = {}
        for i, n in ipairs(names) do
          names[i] = n:sub(#prefix + 1)
          renamed[names[i]] = tensors[n]
        end
        tensors, stripped = renamed, true
      end
    end
  end
  return tensors, info, names
end

-- load_weights(path) -> tensors, meta_or_info, names: a safetensors file
-- (lpnx.load) or a PyTorch checkpoint (load above), told apart by their
-- first bytes, not by the file's name.
function torch.load_weights(path)
  if type(path) ~= "string" then
    error(("lpnx.load_weights: expected a path, got %s"):format(type(path)), 2)
  end
  local f = io.open(path, "rb")
  local head = f and f:read(4)
  if f then f:close() end
  -- a zip archive, or a pickle (PROTO 2-5: the legacy format, whose first
  -- pickle is the magic number; load says what else a bare pickle is)
  if head == "PK\3\4" or (head and head:byte(1) == 0x80 and head:byte(2) >= 2 and head:byte(2) <= 5) then
    return torch.load(path)
  end
  return lpnx.load(path)
end

return torch
