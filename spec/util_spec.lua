-- lpnx.util: the argument checks and message pieces the Lua modules share.
local lpnx = require "lpnx"
local util = require "lpnx.util"

-- The message of the error f raises, without its position.
local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

describe("lpnx.util", function()
  it("writes shapes and values as messages show them", function()
    assert.are.equal("2x3x4", util.shape(lpnx.zeros(2, 3, 4)))
    assert.are.equal("(2,3,4)", util.shape_tuple(lpnx.zeros(2, 3, 4)))
    assert.are.equal("(5)", util.shape_tuple(lpnx.zeros(5)))
    assert.are.same({"2", "0.5", "inf", "-inf", '"wrap"', "table", "nil"},
      {util.show(2), util.show(0.5), util.show(math.huge), util.show(-math.huge), util.show("wrap"),
       util.show({}), util.show(nil)})
    assert.are.same({true, false, false, false, false},
      {util.is_finite(1e300), util.is_finite(0 / 0), util.is_finite(math.huge), util.is_finite("1"),
       util.is_finite(nil)})
  end)

  it("number_in and number_list take [lo, hi], infinity at an infinite bound, never NaN", function()
    assert.are.equal(0.5, util.number_in("f", "top", 0.5, 0, 1))
    assert.are.equal(math.huge, util.number_in("f", "min_area", math.huge, 0, math.huge))
    assert.are.equal("f: top must be a number in [0, 1], got 2", message(util.number_in, "f", "top", 2, 0, 1))
    assert.matches("^f: top must be a number in %[0, 1%], got %-?nan$",
      message(util.number_in, "f", "top", 0 / 0, 0, 1))
    assert.are.equal("f: area must be a number in [1, inf], got x",
      message(util.number_in, "f", "area", "x", 1, math.huge))
    local list = {0.2, 0.4}
    assert.are.equal(list, util.number_list("f", "tops", list, 0, 1))
    assert.are.equal("f: tops must be a non-empty list of numbers", message(util.number_list, "f", "tops", {}, 0, 1))
    assert.are.equal("f: tops must be a non-empty list of numbers", message(util.number_list, "f", "tops", 0.5, 0, 1))
    assert.are.equal("f: tops[2] must be a number in [0, 1], got 3",
      message(util.number_list, "f", "tops", {0.5, 3}, 0, 1))
  end)

  it("integer_at_least and positive_integer", function()
    assert.are.equal(3, util.integer_at_least("f", "batch", 3.0, 1))
    assert.are.equal("integer", math.type(util.integer_at_least("f", "batch", 3.0, 1)))
    assert.are.equal("f: batch must be an integer, got 1.5", message(util.integer_at_least, "f", "batch", 1.5, 1))
    assert.are.equal("f: batch must be at least 1, got 0", message(util.integer_at_least, "f", "batch", 0, 1))
    assert.matches("^f: batch must be an integer, got 1.15", message(util.integer_at_least, "f", "batch", 2 ^ 60, 1))
    assert.are.equal(7, util.positive_integer("f", "size", 7))
    assert.are.equal("f: size must be a positive integer, got 2.0", message(util.positive_integer, "f", "size", 2.0))
    assert.are.equal("f: size must be a positive integer, got 0", message(util.positive_integer, "f", "size", 0))
  end)

  it("option_number reads an option, its default when absent", function()
    local function unit(v) return v >= 0 and v <= 1 end
    assert.are.equal(0.5, util.option_number("hflip", {}, "p", 0.5, unit, "in [0, 1]"))
    assert.are.equal(0.25, util.option_number("hflip", {p = 0.25}, "p", 0.5, unit, "in [0, 1]"))
    assert.are.equal("hflip: p must be in [0, 1], got 2",
      message(util.option_number, "hflip", {p = 2}, "p", 0.5, unit, "in [0, 1]"))
    assert.are.equal("hflip: p must be in [0, 1], got inf",
      message(util.option_number, "hflip", {p = math.huge}, "p", 0.5, function() return true end, "in [0, 1]"))
    assert.are.equal("hflip: p must be a number, got string",
      message(util.option_number, "hflip", {p = "x"}, "p", 0.5, unit, "in [0, 1]"))
  end)

  it("raises at the level asked for", function()
    local function builder(opts)
      local x = util.number_in("b", "x", opts.x, 0, 1, 2)
      return x
    end
    local ok, err = pcall(function() builder{x = 5} end)
    assert.is_false(ok)
    assert.matches("util_spec.lua:%d+: b: x must be a number in %[0, 1%], got 5$", err)
  end)

  it("make_folder makes parents and says why it cannot", function()
    local root = os.tmpname()
    os.remove(root)
    util.make_folder(root .. "/a/b")
    assert.are.equal("dir", require("lpnx.fs").stat(root .. "/a/b"))
    local f = assert(io.open(root .. "/file", "w"))
    f:close()
    local function writer(path) util.make_folder(path) end
    local ok, err = pcall(function() writer(root .. "/file/x") end)
    assert.is_false(ok)
    assert.matches(("util_spec.lua:%%d+: cannot create folder %s/file/x: %s/file is in the way: Not a directory$")
      :format(root:gsub("%p", "%%%0"), root:gsub("%p", "%%%0")), err)
    require("lpnx.fs").remove_tree(root)
  end)
end)
