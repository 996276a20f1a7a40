-- Inputs that once crashed or misbehaved a parser (spec/fixtures/regress/,
-- made by spec/fixtures/gen/make_regress_fixtures.py, and every crash the
-- fuzzers of lpnx/fuzz/ find): each must now load or raise a Lua error that
-- names the file (run under AddressSanitizer in CI).
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local function files(kind)
  return lpnx.sys.walk(h.fixture("regress/" .. kind))
end

local readers = {
  png = function(p) return lpnx.png.read(p) end,
  safetensors = function(p) return lpnx.load(p) end,
  dicom = function(p) return lpnx.dicom.read(p) end,
  csv = function(p) return lpnx.csv.read(p) end,
}

describe("regression inputs fail cleanly", function()
  for kind, read in pairs(readers) do
    it(kind .. " files raise errors naming the file", function()
      local list = files(kind)
      assert.is_true(#list > 0, "no regression inputs for " .. kind)
      for _, path in ipairs(list) do
        local ok, err = pcall(read, path)
        assert.is_false(ok, path .. " was accepted")
        assert.matches(path, err, 1, true)
      end
    end)
  end

  it("run-length strings raise errors saying what is wrong", function()
    for _, path in ipairs(files("rle")) do
      local s = io.open(path):read("a")
      local ok, err = pcall(lpnx.rle.decode, s, 64, 64)
      assert.is_false(ok, path .. " decoded")
      assert.is_truthy(err:find("lpnx.rle.decode", 1, true) or err:find("run", 1, true), err)
    end
  end)
end)
