-- lpnx.fs: files and folders on LuaFileSystem, never through a shell.
local helpers = require "spec.support.helpers"
local fs = require "lpnx.fs"
local lfs = require "lfs"

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

describe("lpnx.fs", function()
  local root

  before_each(function() root = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(root) end)

  local function link(target, path)
    assert(lfs.link(target, path, true))
  end

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
    link(root .. "/b.png", root .. "/e/link.png")
    link(root .. "/other", root .. "/e/folder_link")
    link(root .. "/gone.png", root .. "/e/dangling.png")
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

  it("list gives the sorted names in a folder, hidden ones too, and names a folder it cannot read", function()
    fs.mkdir_p(root .. "/d/sub")
    touch(root .. "/d/b.dcm")
    touch(root .. "/d/.tmp-1")
    touch(root .. "/d/a b")
    assert.are.same({".tmp-1", "a b", "b.dcm", "sub"}, fs.list(root .. "/d"))
    assert.are.same({}, fs.list(root .. "/d/sub"))
    assert.are.equal(("lpnx.fs.list: cannot read %s/nope: No such file or directory"):format(root),
      message(fs.list, root .. "/nope"))
    assert.matches("expected a folder path to be a string, got nil", message(fs.list))
  end)

  it("takes names a shell would misread", function()
    local odd = root .. "/it's a \"folder\"; -rf $(x)"
    fs.mkdir_p(odd .. "/sub")
    touch(odd .. "/sub/a b.dcm")
    assert.are.same({odd .. "/sub/a b.dcm"}, fs.walk(odd, {exts = {"dcm"}}))
    assert.are.equal("dir", fs.stat(odd))
  end)

  it("remove_tree removes a folder and everything under it, links themselves and not their targets", function()
    local keep = root .. "/keep"
    fs.mkdir_p(keep .. "/inner")
    touch(keep .. "/inner/kept.txt", "still here")
    local tree = root .. "/it's a \"tree\"; -rf $(x)"
    fs.mkdir_p(tree .. "/a/b c/d")
    touch(tree .. "/a/b c/d/f.dcm")
    touch(tree .. "/a/top.png")
    link(keep, tree .. "/a/folder_link")
    link(keep .. "/inner/kept.txt", tree .. "/file_link")
    link(root .. "/gone", tree .. "/dangling")
    fs.remove_tree(tree)
    assert.is_nil(fs.stat(tree))
    assert.are.same({keep .. "/inner/kept.txt"}, fs.walk(keep))
    -- a link to a folder given with a trailing slash: the link goes, the folder stays
    link(keep, root .. "/link")
    fs.remove_tree(root .. "/link/")
    assert.is_nil(lfs.symlinkattributes(root .. "/link"))
    assert.are.same({keep .. "/inner/kept.txt"}, fs.walk(keep))
    -- a single file; nothing there
    fs.remove_tree(keep .. "/inner/kept.txt")
    assert.is_nil(fs.stat(keep .. "/inner/kept.txt"))
    fs.remove_tree(root .. "/never-made")
    fs.remove_tree(keep .. "/")
    assert.is_nil(fs.stat(keep))
    assert.are.equal("dir", fs.stat(root))
  end)

  it("remove_tree refuses /, . and .., and names what it cannot remove", function()
    for _, p in ipairs {"/", "//", ".", "..", root .. "/.", root .. "/..", "./"} do
      assert.are.equal("lpnx.fs.remove_tree: refusing to remove " .. p, message(fs.remove_tree, p))
    end
    assert.are.equal("dir", fs.stat(root))
    assert.matches("^lpnx.fs.remove_tree: cannot remove /proc/self/status: ",
      message(fs.remove_tree, "/proc/self/status"))
    assert.matches("lpnx.fs.remove_tree: expected a path, got an empty string", message(fs.remove_tree, ""))
  end)

  it("names a bad argument", function()
    assert.matches("lpnx.fs.stat: expected a path to be a string, got nil", message(fs.stat))
    assert.matches("lpnx.fs.walk: expected an options table, got string", message(fs.walk, root, "dcm"))
  end)
end)
