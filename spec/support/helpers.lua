-- Small assertions shared by the specs.
local lpnx = require "lpnx"
local fs = require "lpnx.fs"
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

-- Asserts a is within `ulps` units in the last place (float32, 2^-23
-- of |b|) of the exactly rounded b, element by element. Values within
-- 2^-40 of b's largest magnitude of zero count as zero: there an exact
-- sum and a float one can both stop at different underflows of nothing.
function M.assert_ulps(a, b, ulps, what)
  assert.are.same(b:size(), a:size())
  if a:numel() == 0 then return end
  local allowed = b:abs() * (ulps * 2 ^ -23) + b:abs():max() * 2 ^ -40
  local excess = ((a - b):abs() - allowed):max()
  if excess > 0 then
    local worst = ((a - b):abs() / (b:abs() * 2 ^ -23 + 1e-38)):max()
    error(("%s: %g ulps off the exactly rounded value, allowed %g"):format(what or "values", worst, ulps), 2)
  end
end

-- A fresh temporary folder, removed by the caller with M.rmdir.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  fs.mkdir_p(p)
  return p
end

-- Removes a folder made by M.tmpdir and everything in it, as far as it
-- can: a spec's clean-up never fails the spec.
function M.rmdir(p)
  pcall(fs.remove_tree, p)
end

-- s quoted for sh.
function M.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Output (stdout and stderr) and exit code of a shell command run without
-- the sanitizer runtime that make ASAN=1 test preloads (for other
-- programs: DCMTK's and dicom3tools' command-line tools, say).
function M.run_plain(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS " .. cmd .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

-- Whether program is on the PATH.
function M.have(program)
  return os.execute("command -v " .. program .. " >/dev/null 2>&1") == true
end

-- The sorted names in a folder, hidden ones too.
function M.files_in(dir)
  return fs.list(dir)
end

-- Output (stdout and stderr) and exit code of examples/SCRIPT run with
-- args (each quoted).
function M.run_example(script, args)
  local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or "."
  local parts = {"lua5.4", M.quote(root .. "/examples/" .. script)}
  for _, a in ipairs(args or {}) do parts[#parts + 1] = M.quote(a) end
  local p = assert(io.popen(table.concat(parts, " ") .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

-- The non-empty lines of text.
function M.lines(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = line end
  return list
end

-- The whole content of a file.
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

-- Path of a committed fixture.
function M.fixture(name)
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/support/[^/]*$") or "spec"
  return dir .. "/fixtures/" .. name
end

return M
