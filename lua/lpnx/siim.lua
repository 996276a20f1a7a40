-- The SIIM-ACR pneumothorax CSV files: the training masks (train-rle.csv)
-- and submissions.
--
--   read_csv(path) -> entries, ids
--       entries[image_id] = array of RLE strings (empty for a "-1" image);
--       ids = image ids in order of first appearance.
--   mask(entry, h, w [, image_id]) -> (H,W) 0/1 mask, the union of the entry's RLEs
--   is_positive(entry) -> true when the entry has at least one run
--   write_submission(path, rows)
--       rows: array of {image_id, rle} or {ImageId = , EncodedPixels = };
--       rle is a string, a mask tensor (encoded here), or nil / "" for none.
--
-- The header is "ImageId,EncodedPixels", or "ImageId, EncodedPixels" as in
-- SIIM's own file, whose values also start with a space (" -1"): names and
-- values are trimmed. An image may have several rows (one per region); its
-- mask is their union. Row numbers in messages count the header as row 1.
local lpnx = require "lpnx"

local siim = {}

-- The image id of each entry read_csv made, for mask's messages (weak keys,
-- so the entries stay plain arrays and are collected as usual).
local names = setmetatable({}, {__mode = "k"})

local function trim(s)
  return (s:match("^%s*(.-)%s*$"))
end

-- An error message from C without its function prefix.
local function reason(msg, prefix)
  msg = tostring(msg)
  local at = msg:find(prefix, 1, true)
  return at and msg:sub(at + #prefix) or msg
end

function siim.read_csv(path)
  if type(path) ~= "string" then
    error(("lpnx.siim.read_csv: expected a path, got %s"):format(type(path)), 2)
  end
  local ok, header, rows = pcall(lpnx.csv.read, path, {header = true})
  if not ok then error("lpnx.siim.read_csv: " .. reason(header, "lpnx.csv.read: "), 2) end
  local column = {}
  for i, name in ipairs(header) do
    name = trim(name)
    column[name] = column[name] or i
  end
  for _, want in ipairs {"ImageId", "EncodedPixels"} do
    if not column[want] then
      error(("lpnx.siim.read_csv: %s: no %s column in the header (%s), expected ImageId,EncodedPixels")
            :format(path, want, table.concat(header, ",")), 2)
    end
  end
  local need = math.max(column.ImageId, column.EncodedPixels)
  local entries, ids = {}, {}
  for r, row in ipairs(rows) do
    if #row < need then
      error(("lpnx.siim.read_csv: %s: row %d: expected %d fields (ImageId, EncodedPixels), got %d")
            :format(path, r + 1, need, #row), 2)
    end
    local id, rle = trim(row[column.ImageId]), trim(row[column.EncodedPixels])
    if id == "" then error(("lpnx.siim.read_csv: %s: row %d: empty ImageId"):format(path, r + 1), 2) end
    local entry = entries[id]
    if not entry then
      entry = {}
      entries[id] = entry
      ids[#ids + 1] = id
      names[entry] = id
    end
    if rle ~= "-1" and rle ~= "" then entry[#entry + 1] = rle end
  end
  return entries, ids
end

function siim.is_positive(entry)
  if type(entry) == "string" then entry = {entry} end
  if type(entry) ~= "table" then
    error(("lpnx.siim.is_positive: expected an array of RLE strings, got %s"):format(type(entry)), 2)
  end
  for _, rle in ipairs(entry) do
    local s = trim(rle)
    if s ~= "" and s ~= "-1" then return true end
  end
  return false
end

function siim.mask(entry, h, w, image_id)
  if type(entry) == "string" then entry = {entry} end
  if type(entry) ~= "table" then
    error(("lpnx.siim.mask: expected an array of RLE strings, got %s"):format(type(entry)), 2)
  end
  local name = image_id or names[entry] or "(unnamed)"
  local m
  for i, rle in ipairs(entry) do
    if type(rle) ~= "string" then
      error(("lpnx.siim.mask: image %s: RLE %d is a %s, expected a string"):format(name, i, type(rle)), 2)
    end
    local ok, d = pcall(lpnx.rle.decode, rle, h, w)
    if not ok then
      error(("lpnx.siim.mask: image %s: RLE %d: %s"):format(name, i, reason(d, "lpnx.rle.decode: ")), 2)
    end
    m = m and m:maximum(d) or d
  end
  if not m then
    local ok, d = pcall(lpnx.rle.decode, "-1", h, w) -- checks h and w like decode does
    if not ok then error(("lpnx.siim.mask: image %s: %s"):format(name, tostring(d)), 2) end
    m = d
  end
  return m
end

function siim.write_submission(path, rows)
  if type(path) ~= "string" then
    error(("lpnx.siim.write_submission: expected a path, got %s"):format(type(path)), 2)
  end
  if type(rows) ~= "table" then
    error(("lpnx.siim.write_submission: expected an array of rows, got %s"):format(type(rows)), 2)
  end
  local out, seen = {}, {}
  for i, row in ipairs(rows) do
    if type(row) ~= "table" then
      error(("lpnx.siim.write_submission: row %d is a %s, expected {ImageId, EncodedPixels}"):format(i, type(row)), 2)
    end
    local id, rle = row[1], row[2]
    if row.ImageId ~= nil or row.EncodedPixels ~= nil then id, rle = row.ImageId, row.EncodedPixels end
    if type(id) ~= "string" or trim(id) == "" then
      error(("lpnx.siim.write_submission: row %d: expected a non-empty ImageId string, got %s")
            :format(i, type(id) == "string" and '""' or type(id)), 2)
    end
    id = trim(id)
    if seen[id] then
      error(("lpnx.siim.write_submission: image %s appears twice (rows %d and %d)"):format(id, seen[id], i), 2)
    end
    seen[id] = i
    if lpnx.is_tensor(rle) then
      rle = lpnx.rle.encode(rle)
    elseif rle == nil then
      rle = "-1"
    elseif type(rle) == "string" then
      rle = trim(rle)
      if rle == "" then rle = "-1" end
    else
      error(("lpnx.siim.write_submission: row %d (%s): EncodedPixels is a %s, expected a string or a mask")
            :format(i, id, type(rle)), 2)
    end
    out[i] = {id, rle}
  end
  lpnx.csv.write(path, {"ImageId", "EncodedPixels"}, out)
end

return siim
