-- lpnx.rle: the SIIM-ACR relative form and Kaggle's standard form.
-- Pixels are numbered column by column: index = x*H + y (0-based), so in a
-- 4x3 mask (H=4, W=3) the indices are
--      x=0 x=1 x=2
--  y=0   0   4   8
--  y=1   1   5   9
--  y=2   2   6  10
--  y=3   3   7  11
local lpnx = require "lpnx"

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function decode(s, h, w, opts)
  return lpnx.rle.decode(s, h, w, opts):totable()
end

local STANDARD = {format = "standard"}

describe("lpnx.rle.decode reads the SIIM relative form", function()
  it("a single pixel at index 0", function()
    -- "0 1": gap 0 -> start at index 0, one pixel
    assert.are.same({{1, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}, decode("0 1", 4, 3))
  end)

  it("a run touching the last pixel", function()
    -- "10 2": indices 10, 11 = (y=2,x=2), (y=3,x=2)
    assert.are.same({{0, 0, 0}, {0, 0, 0}, {0, 0, 1}, {0, 0, 1}}, decode("10 2", 4, 3))
    assert.are.equal("10 2", lpnx.rle.encode(lpnx.rle.decode("10 2", 4, 3)))
  end)

  it("a full mask and an empty one", function()
    -- "0 12": every index 0..11
    assert.are.same({{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}}, decode("0 12", 4, 3))
    local zeros = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}
    assert.are.same(zeros, decode("-1", 4, 3))
    assert.are.same(zeros, decode(" -1", 4, 3))
    assert.are.same(zeros, decode(" -1 \n", 4, 3))
    assert.are.same(zeros, decode("", 4, 3))
    assert.are.same(zeros, decode("-1", 4, 3, STANDARD))
  end)

  it("several runs in one column and across columns", function()
    -- "1 1 1 1 1 4": run 1 at index 1; it ends at 2, gap 1 -> run 2 at index 3;
    -- it ends at 4, gap 1 -> run 3 at indices 5, 6, 7 (column 1) and 8 (column 2)
    local want = {{0, 0, 1},
                  {1, 1, 0},
                  {0, 1, 0},
                  {1, 1, 0}}
    assert.are.same(want, decode("1 1 1 1 1 4", 4, 3))
    -- the same runs with 1-based absolute starts: 2, 4, 6
    assert.are.same(want, decode("2 1 4 1 6 4", 4, 3, STANDARD))
    assert.are.equal("1 1 1 1 1 4", lpnx.rle.encode(lpnx.rle.decode("1 1 1 1 1 4", 4, 3)))
    assert.are.equal("2 1 4 1 6 4", lpnx.rle.encode(lpnx.rle.decode("1 1 1 1 1 4", 4, 3), STANDARD))
  end)

  it("1xN and Nx1 masks", function()
    -- 1x5: index = x. "1 2 1 1": indices 1, 2; end 3, gap 1 -> index 4
    assert.are.same({{0, 1, 1, 0, 1}}, decode("1 2 1 1", 1, 5))
    -- 5x1: index = y. "0 1 2 2": index 0; end 1, gap 2 -> indices 3, 4
    assert.are.same({{1}, {0}, {0}, {1}, {1}}, decode("0 1 2 2", 5, 1))
    assert.are.equal("1 2 1 1", lpnx.rle.encode(lpnx.tensor{{0, 1, 1, 0, 1}}))
    assert.are.equal("0 1 2 2", lpnx.rle.encode(lpnx.tensor{{1}, {0}, {0}, {1}, {1}}))
  end)

  it("touching runs (gap 0) decode as one region and encode merged", function()
    -- 1x5: "0 2 0 3": indices 0, 1, then 2, 3, 4
    assert.are.same({{1, 1, 1, 1, 1}}, decode("0 2 0 3", 1, 5))
    assert.are.equal("0 5", lpnx.rle.encode(lpnx.rle.decode("0 2 0 3", 1, 5)))
  end)

  it("a string in the style of SIIM's train-rle.csv on a 1024x1024 image", function()
    local s = "387620 23 996 33 986 43"
    local m = lpnx.rle.decode(s, 1024, 1024)
    assert.are.equal(23 + 33 + 43, m:sum())
    -- index 387620 = 378*1024 + 548: column x=378, row y=548 (1-based 379, 549)
    assert.are.equal(1, m:get(549, 379))
    assert.are.equal(0, m:get(548, 379))
    assert.are.equal(1, m:get(549 + 22, 379))
    assert.are.equal(0, m:get(549 + 23, 379))
    -- run 2 starts at 387643 + 996 = 388639 = 379*1024 + 543
    assert.are.equal(1, m:get(544, 380))
    assert.are.equal(0, m:get(543, 380))
    -- run 3 starts at 388672 + 986 = 389658 = 380*1024 + 538
    assert.are.equal(1, m:get(539, 381))
    assert.are.equal(s, lpnx.rle.encode(m))
    assert.are.equal("387621 23 388640 33 389659 43", lpnx.rle.encode(m, STANDARD))
  end)
end)

describe("lpnx.rle.encode", function()
  it("writes -1 for an empty mask and a full run for a full one", function()
    assert.are.equal("-1", lpnx.rle.encode(lpnx.zeros(7, 5)))
    assert.are.equal("-1", lpnx.rle.encode(lpnx.zeros(7, 5), STANDARD))
    assert.are.equal("0 35", lpnx.rle.encode(lpnx.ones(7, 5)))
    assert.are.equal("1 35", lpnx.rle.encode(lpnx.ones(7, 5), STANDARD))
  end)

  it("takes values > 0.5 as foreground, (1,H,W) masks and strided views", function()
    -- column 0 of this 2x2 is (0.5, 0.51): index 1 only; column 1 is (0.9, NaN): index 2
    local m = lpnx.tensor{{0.5, 0.9}, {0.51, 0 / 0}}
    assert.are.equal("1 2", lpnx.rle.encode(m))
    assert.are.equal("1 2", lpnx.rle.encode(m:view(1, 2, 2)))
    -- (0, 1 / 0, 0) has index 2 (x=1, y=0); its transpose (0, 0 / 1, 0) has index 1
    local n = lpnx.tensor{{0, 1}, {0, 0}}
    assert.are.equal("2 1", lpnx.rle.encode(n))
    assert.is_false(n:t():is_contiguous())
    assert.are.equal("1 1", lpnx.rle.encode(n:t()))
  end)

  it("is the exact inverse of decode on random masks of odd sizes, in both forms", function()
    lpnx.manual_seed(5)
    for _, hw in ipairs {{7, 5}, {1, 9}, {9, 1}, {13, 11}, {31, 17}, {1, 1}} do
      for _, p in ipairs {0.05, 0.5, 0.95} do
        local mask = lpnx.rand(hw[1], hw[2]):lt(p)
        for _, opts in ipairs {{}, STANDARD} do
          local s = lpnx.rle.encode(mask, opts)
          local back = lpnx.rle.decode(s, hw[1], hw[2], opts)
          assert.are.same(mask:totable(), back:totable())
          assert.are.equal(s, lpnx.rle.encode(back, opts))
        end
      end
    end
  end)
end)

describe("lpnx.rle errors say what is wrong", function()
  local cases = {
    {"1 2 3", 4, 3, nil, "odd count of numbers (3): expected pairs of gap and length"},
    {"1 2 3", 4, 3, STANDARD, "odd count of numbers (3): expected pairs of start and length"},
    {"1 x", 4, 3, nil, "token 2 ('x') is not a whole number"},
    {"1.5 2", 4, 3, nil, "token 1 ('1.5') is not a whole number"},
    {"1 +2", 4, 3, nil, "token 2 ('+2') is not a whole number"},
    {"- 2", 4, 3, nil, "token 1 ('-') is not a whole number"},
    {"99999999999999999999 1", 4, 3, nil, "token 1 ('99999999999999999999') is too large"},
    {"1 0", 4, 3, nil, "run 1 has length 0, expected at least 1"},
    {"0 1 1 -2", 4, 3, nil, "run 2 has length -2, expected at least 1"},
    {"-3 2", 4, 3, nil, "run 1 has a negative gap (-3)"},
    {"0 1 -1 1", 4, 3, nil, "run 2 has a negative gap (-1)"},
    -- 64x64 = 4096 pixels: run 1 at 4000..4009, run 2 at 4080..4084, run 3 at 4090..4109
    {"4000 10 70 5 5 20", 64, 64, nil, "run 3 (start 4090, length 20) passes the last pixel 4096 of a 64x64 mask"},
    {"12 1", 4, 3, nil, "run 1 (start 12, length 1) passes the last pixel 12 of a 4x3 mask"},
    {"11 3", 4, 3, STANDARD, "run 1 (start 11, length 3) passes the last pixel 12 of a 4x3 mask"},
    {"0 1", 4, 3, STANDARD, "run 1 has start 0, expected at least 1 (standard starts count from 1)"},
    {"5 3 3 4", 4, 3, STANDARD, "run 2 (start 3, length 4) overlaps or comes before run 1 (start 5, length 3)"},
    {"1 4 3 2", 4, 3, STANDARD, "run 2 (start 3, length 2) overlaps or comes before run 1 (start 1, length 4)"},
  }
  for _, c in ipairs(cases) do
    it(("%q on %dx%d"):format(c[1], c[2], c[3]), function()
      assert.matches("lpnx.rle.decode: " .. c[5], message(lpnx.rle.decode, c[1], c[2], c[3], c[4]), 1, true)
    end)
  end

  it("a run ending exactly at the last pixel is fine in both forms", function()
    assert.are.equal(20, lpnx.rle.decode("4076 20", 64, 64):sum())
    assert.are.equal(20, lpnx.rle.decode("4077 20", 64, 64, STANDARD):sum())
    -- touching runs in the standard form: 1..4 then 5..6
    assert.are.equal(6, lpnx.rle.decode("1 4 5 2", 4, 3, STANDARD):sum())
  end)

  it("bad arguments name themselves", function()
    assert.matches("expected a height of at least 1 (at most 2147483647), got 0",
                   message(lpnx.rle.decode, "-1", 0, 3), 1, true)
    assert.matches("expected a width of at least 1 (at most 2147483647), got 2.5",
                   message(lpnx.rle.decode, "-1", 3, 2.5), 1, true)
    assert.matches('format must be "relative" or "standard", got "kaggle"',
                   message(lpnx.rle.decode, "-1", 3, 3, {format = "kaggle"}), 1, true)
    assert.matches("expected a mask (H,W) or (1,H,W), got (2,3,4)",
                   message(lpnx.rle.encode, lpnx.zeros(2, 3, 4)), 1, true)
    assert.matches("expected a mask of at least 1x1 pixels, got (0,4)",
                   message(lpnx.rle.encode, lpnx.zeros(0, 4)), 1, true)
  end)
end)
