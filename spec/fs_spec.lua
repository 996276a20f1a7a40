-- lpnx.fs: files and folders on LuaFileSystem, never through a shell.
local helpers = require "spec.support.helpers"
local fs = require "lpnx.fs"

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("lpnx.fs", function()
  local root

  before_each(function() root = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(root) end)

  local function touch(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text or "")
    f:close()
  end

  it("mkdir_p makes every missing parent; stat tells file, dir or nothing", function()
    fs.mkdir_p(root .. "/a/b/c")
    fs.mkdir_p(root .. "/a/b/c") -- already there: fine
    fs.mkdir_p(root .. "/a//b/d/")
    assert.are.equal("dir", fs.stat(root .. "/a/b/c"))
    assert.are.equal("dir", fs.stat(root .. "/a/b/d"))
    touch(root .. "/a/f.txt", "12345")
    assert.are.same({"file", 5}, {fs.stat(root .. "/a/f.txt")})
    assert.is_nil(fs.stat(root .. "/missing"))
    assert.is_nil(fs.stat(root .. "/a/f.txt/below"))
    assert.are.equal("other", fs.stat("/dev/null"))
    assert.are.equal(("lpnx.fs.mkdir_p: %s/a/f.txt is in the way: Not a directory"):format(root),
      message(fs.mkdir_p, root .. "/a/f.txt/g/h"))
    assert.matches("expected a folder path, got an empty string", message(fs.mkdir_p, ""))
  end)

  it("walk lists files sorted, filters extensions case-insensitively, follows links to files only", function()
    fs.mkdir_p(root .. "/d/sub")
    fs.mkdir_p(root .. "/e")
    fs.mkdir_p(root .. "/other")
    touch(root .. "/b.png")
    touch(root .. "/a.DCM")
    touch(root .. "/d/sub/z.dcm")
    touch(root .. "/d.txt")
    touch(root .. "/d/y.Png")
    touch(root .. "/noext")
    touch(root .. "/other/hidden.dcm")
    assert(os.execute(("ln -s '%s/b.png' '%s/e/link.png'"):format(root, root)))
    assert(os.execute(("ln -s '%s/other' '%s/e/folder_link'"):format(root, root)))
    assert(os.execute(("ln -s '%s/gone.png' '%s/e/dangling.png'"):format(root, root)))
    local function rel(list)
      local out = {}
      for i, p in ipairs(list) do out[i] = p:sub(#root + 2) end
      return out
    end
    -- byte order of whole paths: "d.txt" < "d/..." since '.' < '/'
    assert.are.same({"a.DCM", "b.png", "d.txt", "d/sub/z.dcm", "d/y.Png", "e/link.png", "noext", "other/hidden.dcm"},
      rel(fs.walk(root)))
    assert.are.same({"a.DCM", "b.png", "d/sub/z.dcm", "d/y.Png", "e/link.png", "other/hidden.dcm"},
      rel(fs.walk(root, {exts = {"dcm", ".PNG"}})))
    assert.are.same({"d/sub/z.dcm", "d/y.Png"}, rel(fs.walk(root .. "/d/", {exts = {"dcm", "png"}})))
    assert.are.same({}, fs.walk(root .. "/e", {exts = {"dcm"}}))
    local list = fs.walk(root)
    local sorted = {table.unpack(list)}
    table.sort(sorted)
    assert.are.same(sorted, list)
  end)

  it("walk names a folder it cannot open", function()
    assert.are.equal(("lpnx.fs.walk: cannot open folder %s/nope: No such file or directory"):format(root),
      message(fs.walk, root .. "/nope"))
    touch(root .. "/file")
    assert.are.equal(("lpnx.fs.walk: cannot open folder %s/file: Not a directory"):format(root),
      message(fs.walk, root .. "/file"))
    assert.matches("expected exts%[2%] to be a string, got number", message(fs.walk, root, {exts = {"a", 3}}))
  end)

  it("takes names a shell would misread", function()
    local odd = root .. "/it's a \"folder\"; -rf $(x)"
    fs.mkdir_p(odd .. "/sub")
    touch(odd .. "/sub/a b.dcm")
    assert.are.same({odd .. "/sub/a b.dcm"}, fs.walk(odd, {exts = {"dcm"}}))
    assert.are.equal("dir", fs.stat(odd))
  end)

  it("names a bad argument", function()
    assert.matches("lpnx.fs.stat: expected a path to be a string, got nil", message(fs.stat))
    assert.matches("lpnx.fs.walk: expected an options table, got string", message(fs.walk, root, "dcm"))
  end)
end)
