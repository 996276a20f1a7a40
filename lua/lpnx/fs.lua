-- lpnx.fs: files and folders, on LuaFileSystem (Debian's lua-filesystem).
-- Paths are passed to the system as they are, never through a shell, so a
-- quote, a space or a leading dash in a name is just a character.
--
--   fs.stat(path)                 -> "file" | "dir" | "other", size; nil when nothing is there
--   fs.mkdir_p(path)              makes the folder and every missing parent
--   fs.walk(dir [, {exts = {..}}]) -> sorted paths of the files under dir
--   fs.list(dir)                  -> sorted names of what is in dir ("." and ".." left out)
--   fs.remove_tree(path)          removes a file, or a folder and everything under it
local lfs = require "lfs"

local fs = {}

local function check_path(fn, path, what)
  if type(path) ~= "string" then
    error(("lpnx.fs.%s: expected %s to be a string, got %s"):format(fn, what, type(path)), 3)
  end
  if path == "" then error(("lpnx.fs.%s: expected %s, got an empty string"):format(fn, what), 3) end
end

local KIND = {file = "file", directory = "dir"}

-- stat(path) -> "file" | "dir" | "other", size in bytes; nil when nothing is
-- there. Symbolic links are followed.
function fs.stat(path)
  check_path("stat", path, "a path")
  local attr = lfs.attributes(path)
  if not attr then return nil end
  return KIND[attr.mode] or "other", attr.size
end

-- mkdir_p(path): makes the folder and every missing parent. An existing
-- folder is fine; anything else in the way is an error naming it.
function fs.mkdir_p(path)
  check_path("mkdir_p", path, "a folder path")
  local prefix = path:sub(1, 1) == "/" and "/" or ""
  for part in path:gmatch("[^/]+") do
    prefix = prefix .. part
    local mode = lfs.attributes(prefix, "mode")
    if mode == nil then
      local ok, err = lfs.mkdir(prefix)
      if not ok and lfs.attributes(prefix, "mode") ~= "directory" then -- not made meanwhile by another process
        error(("lpnx.fs.mkdir_p: %s cannot be created: %s"):format(prefix, tostring(err)), 2)
      end
    elseif mode ~= "directory" then
      error(("lpnx.fs.mkdir_p: %s is in the way: Not a directory"):format(prefix), 2)
    end
    prefix = prefix .. "/"
  end
end

local function ext_set(fn, opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then error(("lpnx.fs.%s: expected an options table, got %s"):format(fn, type(opts)), 3) end
  if opts.exts == nil then return nil end
  if type(opts.exts) ~= "table" then error(("lpnx.fs.%s: expected exts to be an array of extensions"):format(fn), 3) end
  local set = {}
  for i, e in ipairs(opts.exts) do
    if type(e) ~= "string" then
      error(("lpnx.fs.%s: expected exts[%d] to be a string, got %s"):format(fn, i, type(e)), 3)
    end
    set[e:gsub("^%.", ""):lower()] = true
  end
  return set
end

-- The lower-cased extension of a file name, nil when it has none (a dot
-- that opens the name does not start one).
local function extension(name)
  local ext = name:match("^.+%.([^.]+)$")
  return ext and ext:lower()
end

-- walk(dir [, {exts = {"dcm", "png"}}]) -> array of the paths of the files
-- under dir at any depth, sorted by byte order. Links to files are listed,
-- links to folders are not followed, dangling links are skipped; exts (with
-- or without the dot) match case-insensitively.
function fs.walk(dir, opts)
  check_path("walk", dir, "a folder path")
  local exts = ext_set("walk", opts)
  local files, pending = {}, {#dir > 1 and dir:gsub("/$", "") or dir}
  while #pending > 0 do
    local folder = table.remove(pending)
    local ok, iter, state = pcall(lfs.dir, folder)
    if not ok then
      local reason = tostring(iter):match(".*: (.-)$") or tostring(iter)
      error(("lpnx.fs.walk: cannot open folder %s: %s"):format(folder, reason), 2)
    end
    for name in iter, state do
      if name ~= "." and name ~= ".." then
        local full = (folder == "/" and "" or folder) .. "/" .. name
        local mode = lfs.symlinkattributes(full, "mode")
        if mode == "directory" then
          pending[#pending + 1] = full
        elseif (mode == "file" or (mode == "link" and lfs.attributes(full, "mode") == "file"))
            and (not exts or exts[extension(name) or false]) then
          files[#files + 1] = full
        end
      end
    end
  end
  table.sort(files)
  return files
end

-- list(dir) -> the sorted names of the entries of dir, without "." and
-- "..". A missing folder, or one that cannot be read, is an error naming it.
function fs.list(dir)
  check_path("list", dir, "a folder path")
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then
    error(("lpnx.fs.list: cannot read %s: %s"):format(dir, tostring(iter):match(".*: (.-)$") or tostring(iter)), 2)
  end
  local names = {}
  for name in iter, state do
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- Removes what is at path: a file or link itself, or a folder after
-- everything in it (links inside are removed, never followed). Returns
-- true, or nil and "path: reason" for the first thing that cannot go.
local function remove(path)
  local mode = lfs.symlinkattributes(path, "mode")
  if mode == nil then return true end
  if mode == "directory" then
    local ok, iter, state = pcall(lfs.dir, path)
    if not ok then return nil, ("%s: %s"):format(path, tostring(iter):match(".*: (.-)$") or tostring(iter)) end
    local names = {}
    for name in iter, state do
      if name ~= "." and name ~= ".." then names[#names + 1] = name end
    end
    for _, name in ipairs(names) do
      local done, err = remove((path == "/" and "" or path) .. "/" .. name)
      if not done then return nil, err end
    end
    local removed, err = lfs.rmdir(path)
    if not removed then return nil, ("%s: %s"):format(path, tostring(err)) end
  else
    local removed, err = os.remove(path)
    if not removed then return nil, tostring(err) end -- os.remove's message starts with the path
  end
  return true
end

-- remove_tree(path): removes the file, link or folder (with everything
-- under it) at path, as `rm -rf` does but without a shell; nothing there
-- is fine. A trailing slash does not make it follow a link to a folder.
-- "/" and paths ending in "." or ".." are refused.
function fs.remove_tree(path)
  check_path("remove_tree", path, "a path")
  local target = path:match("^(.-)/*$")
  if target == "" or target:match("^%.%.?$") or target:match("/%.%.?$") then
    error(("lpnx.fs.remove_tree: refusing to remove %s"):format(path), 2)
  end
  local done, err = remove(target)
  if not done then error(("lpnx.fs.remove_tree: cannot remove %s"):format(err), 2) end
end

return fs
