-- lpnx.data: SIIM-ACR data sets (DICOM + run-length CSV, or PNG image and
-- mask folders), the sampler and the batch loader.
--
--   local ds = lpnx.data.siim{root = "data", csv = "data/train-rle.csv", size = 256}
--   local train_ids, val_ids = lpnx.data.split(ds.ids, {val_fraction = 0.1})
--   local loader = lpnx.data.loader(ds:subset(train_ids), {batch = 8, shuffle = true,
--                                   transform = aug, positive_fraction = 0.8, workers = 1})
--   for batch in loader:epoch(1) do ... batch.images (N,3,H,W), batch.masks (N,1,H,W) end
local lpnx = require "lpnx"
local fs = require "lpnx.fs"
local siim = require "lpnx.siim"

local data = {}

---------------------------------------------------------------------------
-- files

-- is_dir(path): true when path is a folder (or a link to one).
local function is_dir(path)
  return path ~= "" and fs.stat(path) == "dir"
end
data.is_dir = is_dir


-- The image id of a file: its name without folder and extension (SIIM-ACR
-- names each DICOM by its SOP instance UID).
function data.image_id(path)
  local name = path:match("([^/]+)$")
  return (name:gsub("%.[^.]+$", ""))
end

-- list_images(dir | file | {files}) -> paths: under a folder, the files
-- with an extension data.readers reads.
function data.list_images(what)
  if type(what) == "table" then return what end
  if type(what) ~= "string" then error("list_images: expected a folder, a file or a list of files", 2) end
  if is_dir(what) then return fs.walk(what, {exts = data.image_exts()}) end
  local f = io.open(what, "rb")
  if not f then error(("%s: no such file or folder"):format(what), 2) end
  f:close()
  return {what}
end

-- Image readers by file extension (lower case): each reader(path [, opts])
-- -> image (1,H,W) in [0,1], meta (opts: what read_image was given). A new format is one entry here (and its
-- reader); list_images, read_image and the command lines' help take the
-- extensions from this table.
data.readers = {}

-- PNG, read as gray (RGB averaged, alpha dropped).
function data.readers.png(path)
  local img, info = lpnx.png.read(path)
  local c = img:size(1)
  if c >= 3 then img = img:narrow(1, 1, 3):mean(1, true)
  elseif c == 2 then img = img:narrow(1, 1, 1) end
  return img:contiguous(), {rows = info.height, columns = info.width, format = "png"}
end

-- DICOM: a monochrome image through the presentation chain a viewer
-- applies (lpnx.dicom.present with its default window: the file's first
-- VOI LUT or window, else the stored range up to 8 bits, an 8-bit SIIM
-- image giving x / 255, else an "auto" window; opts.window chooses another,
-- as lpnx.dicom.present's); a colour image averaged over its channels and
-- scaled by its 8-bit range.
function data.readers.dcm(path, opts)
  local img, meta = lpnx.dicom.read(path, {stored = true})
  if img:size(1) == 3 then
    local hi = 2 ^ (meta.bits_stored or 8) - 1
    img = (img:mean(1, true) / hi):clamp_(0, 1)
  else
    img = lpnx.dicom.present(img, meta, opts and opts.window ~= nil and {window = opts.window} or nil)
  end
  meta.format = "dicom"
  return img, meta
end
data.readers.dicom = data.readers.dcm

-- The extensions data.readers reads, sorted.
function data.image_exts()
  local exts = {}
  for ext in pairs(data.readers) do exts[#exts + 1] = ext end
  table.sort(exts)
  return exts
end

-- read_image(path [, {window = n | "auto" | {center, width}}]) -> image
-- (1,H,W) in [0,1], meta, by the reader of the file's extension; a file
-- whose extension has no reader is read as DICOM (DICOM files often have
-- none). window goes to lpnx.dicom.present (DICOM only).
function data.read_image(path, opts)
  local reader = data.readers[(path:match("%.([^./]+)$") or ""):lower()] or data.readers.dcm
  return reader(path, opts)
end

-- prepare(images, meta) -> network input: (N,1,H,W) or (1,H,W) images in
-- [0,1] repeated to the model's channels and normalised with its mean/std.
function data.prepare(images, meta)
  meta = meta or {}
  local x = images
  if x:dim() == 3 then x = x:unsqueeze(1) end
  local channels = meta.in_channels and tonumber(meta.in_channels) or 3
  if x:size(2) == 1 and channels > 1 then
    local copies = {}
    for k = 1, channels do copies[k] = x end
    x = lpnx.cat(copies, 2)
  end
  local mean = meta.mean or {0.485, 0.456, 0.406}
  local std = meta.std or {0.229, 0.224, 0.225}
  local c = x:size(2)
  if c ~= channels then
    error(("data.prepare: the model takes %d input channels, the images have %d"):format(channels, c), 2)
  end
  if #mean < c or #std < c then
    error(("data.prepare: the model takes %d input channels, but its mean and std give %d and %d values")
          :format(c, #mean, #std), 2)
  end
  local m = lpnx.tensor(mean):narrow(1, 1, c):view(1, c, 1, 1)
  local s = lpnx.tensor(std):narrow(1, 1, c):view(1, c, 1, 1)
  return (x - m) / s
end

---------------------------------------------------------------------------
-- splits

-- A stable hash of an id in [0, 1): the split of an image never depends on
-- which other images are listed or in what order.
local function id_hash(id, seed)
  local h = 2166136261 ~ (seed or 0)
  for i = 1, #id do
    h = ((h ~ id:byte(i)) * 16777619) & 0xffffffff
  end
  h = (h ~ (h >> 15)) * 0x2c1b3c6d & 0xffffffff
  h = (h ~ (h >> 12)) * 0x297a2d39 & 0xffffffff
  return (h ~ (h >> 15)) / 2 ^ 32
end

-- split(ids, {val_fraction = 0.1, seed = 0}) -> train_ids, val_ids
function data.split(ids, opts)
  opts = opts or {}
  local frac = opts.val_fraction or 0.1
  local train, val = {}, {}
  for _, id in ipairs(ids) do
    if id_hash(id, opts.seed) < frac then val[#val + 1] = id else train[#train + 1] = id end
  end
  return train, val
end

---------------------------------------------------------------------------
-- the SIIM-ACR data set

local Dataset = {}
Dataset.__index = Dataset

-- siim{root = DIR, csv = FILE (optional: no masks without it), size = 256,
--      ids = {...} (optional subset), cache = true}
-- DICOM files anywhere under root, matched to the CSV by file name = image
-- id; or root/images/*.png with root/masks/*.png of the same names.
function data.siim(opts)
  if type(opts) ~= "table" or type(opts.root) ~= "string" then
    error("lpnx.data.siim: expected {root = DIR, csv = FILE, size = 256}", 2)
  end
  if not is_dir(opts.root) then error(("lpnx.data.siim: %s is not a folder"):format(opts.root), 2) end
  local self = setmetatable({root = opts.root, size = opts.size, cache = opts.cache ~= false and {} or nil},
                            Dataset)
  local by_id, mask_by_id = {}, {}
  if is_dir(opts.root .. "/images") and is_dir(opts.root .. "/masks") then
    for _, p in ipairs(fs.walk(opts.root .. "/images", {exts = {"png"}})) do by_id[data.image_id(p)] = p end
    for _, p in ipairs(fs.walk(opts.root .. "/masks", {exts = {"png"}})) do mask_by_id[data.image_id(p)] = p end
    self.format = "png"
  else
    for _, p in ipairs(fs.walk(opts.root, {exts = {"dcm", "dicom"}})) do by_id[data.image_id(p)] = p end
    self.format = "dicom"
  end
  local ids
  if opts.csv then
    local entries, csv_ids = siim.read_csv(opts.csv)
    self.entries = entries
    ids = {}
    local missing = {}
    for _, id in ipairs(csv_ids) do
      if by_id[id] then ids[#ids + 1] = id else missing[#missing + 1] = id end
    end
    self.missing = missing
    if #ids == 0 then
      error(("lpnx.data.siim: none of the %d images of %s is under %s"):format(#csv_ids, opts.csv, opts.root), 2)
    end
  else
    ids = {}
    for id in pairs(by_id) do ids[#ids + 1] = id end
    table.sort(ids)
    if #ids == 0 then error(("lpnx.data.siim: no DICOM or PNG images under %s"):format(opts.root), 2) end
  end
  if opts.ids then
    local keep = {}
    for _, id in ipairs(opts.ids) do keep[id] = true end
    local sub = {}
    for _, id in ipairs(ids) do if keep[id] then sub[#sub + 1] = id end end
    ids = sub
  end
  self.ids, self.paths, self.mask_paths = ids, {}, {}
  for i, id in ipairs(ids) do
    self.paths[i] = by_id[id]
    self.mask_paths[i] = mask_by_id[id]
  end
  self.has_masks = opts.csv ~= nil or self.format == "png" and next(mask_by_id) ~= nil
  return self
end

function Dataset:__len() return #self.ids end
function Dataset:count() return #self.ids end

-- A data set over some of this one's ids (sharing its cache, which is keyed by id).
function Dataset:subset(ids)
  local keep = {}
  for _, id in ipairs(ids) do keep[id] = true end
  local sub = setmetatable({}, Dataset)
  for k, v in pairs(self) do sub[k] = v end
  sub.ids, sub.paths, sub.mask_paths = {}, {}, {}
  for i, id in ipairs(self.ids) do
    if keep[id] then
      sub.ids[#sub.ids + 1] = id
      sub.paths[#sub.paths + 1] = self.paths[i]
      sub.mask_paths[#sub.paths] = self.mask_paths[i]
    end
  end
  return sub
end

function Dataset:is_positive(i)
  if self.entries then return #self.entries[self.ids[i]] > 0 end
  if self.mask_paths[i] then
    local m = lpnx.png.read(self.mask_paths[i])
    return m:max() > 0.5
  end
  return false
end

-- Indices of the positive and negative images.
function Dataset:positives()
  if not self._pos then
    local pos, neg = {}, {}
    for i = 1, #self.ids do
      if self:is_positive(i) then pos[#pos + 1] = i else neg[#neg + 1] = i end
    end
    self._pos, self._neg = pos, neg
  end
  return self._pos, self._neg
end

-- load(i) -> image (1,H,W) in [0,1] at the original size, mask (1,H,W) or
-- nil, info {id, path, height, width}
function Dataset:load(i)
  local id, path = self.ids[i], self.paths[i]
  if not id then error(("data set index %s out of range 1..%d"):format(tostring(i), #self.ids), 2) end
  local img, meta = data.read_image(path)
  local h, w = img:size(2), img:size(3)
  local mask
  if self.entries then
    mask = siim.mask(self.entries[id], h, w, id):view(1, h, w)
  elseif self.mask_paths[i] then
    local m = lpnx.png.read(self.mask_paths[i])
    mask = m:narrow(1, 1, 1):gt(0.5)
  end
  return img, mask, {id = id, path = path, height = h, width = w, meta = meta}
end

-- get(i) -> sample {image = (1,S,S), mask = (1,S,S) 0/1 or nil, id, index,
-- height, width}: resized to the data set's size (area for the image, a
-- bilinear resize thresholded at 0.5 for the mask). Cached when asked.
function Dataset:get(i)
  local cached = self.cache and self.cache[self.ids[i]] -- by id: subsets share the cache
  if cached then
    return {image = cached.image, mask = cached.mask, id = cached.id, index = i,
            height = cached.height, width = cached.width}
  end
  local img, mask, info = self:load(i)
  local s = self.size
  if s and (img:size(2) ~= s or img:size(3) ~= s) then
    img = lpnx.image.resize(img, s, s, "area")
    if mask then mask = lpnx.image.resize(mask, s, s, "bilinear"):gt(0.5) end
  end
  local sample = {image = img, mask = mask, id = info.id, index = i, height = info.height, width = info.width}
  if self.cache then self.cache[info.id] = sample end
  return {image = img, mask = mask, id = info.id, index = i, height = info.height, width = info.width}
end

data.Dataset = Dataset

-- loader(ds, opts): see lpnx/data/loader.lua. That module requires this
-- one, so it is required here on first use rather than at the top.
function data.loader(ds, opts)
  return require("lpnx.data.loader").new(ds, opts)
end

return data
