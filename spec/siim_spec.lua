-- lpnx.csv (RFC 4180 reader and writer) and lpnx.siim (train-rle.csv and
-- submissions on top of it).
local lpnx = require "lpnx"
local helpers = require "spec.support.helpers"

local function message(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

local function write_text(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function read_text(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local NOHEADER = {header = false}

describe("lpnx.csv.parse", function()
  it("splits a header and rows", function()
    local header, rows = lpnx.csv.parse("a,b\n1,2\n3,\n")
    assert.are.same({"a", "b"}, header)
    assert.are.same({{"1", "2"}, {"3", ""}}, rows)
  end)

  it("reads quoted fields with doubled quotes, commas and line breaks", function()
    local h, rows = lpnx.csv.parse('"a,b","c""d","e\nf","",g\n"""",x\n', NOHEADER)
    assert.is_nil(h)
    assert.are.same({{"a,b", 'c"d', "e\nf", "", "g"}, {'"', "x"}}, rows)
  end)

  it("accepts CRLF and LF, keeps CRLF inside quotes, and skips a UTF-8 byte order mark", function()
    local h1, r1 = lpnx.csv.parse("a,b\r\n1,2\r\n")
    local h2, r2 = lpnx.csv.parse("a,b\n1,2")
    assert.are.same({{"a", "b"}, {{"1", "2"}}}, {h1, r1})
    assert.are.same({{"a", "b"}, {{"1", "2"}}}, {h2, r2})
    local _, r3 = lpnx.csv.parse('"x\r\ny",z\r\n', NOHEADER)
    assert.are.same({{"x\r\ny", "z"}}, r3)
    local h4 = lpnx.csv.parse("\239\187\191ImageId,EncodedPixels\n")
    assert.are.same({"ImageId", "EncodedPixels"}, h4)
  end)

  it("tolerates trailing empty lines; an empty line inside is a row of one empty field", function()
    local _, rows = lpnx.csv.parse("a\n1\n\r\n\n", {header = true})
    assert.are.same({{"1"}}, rows)
    _, rows = lpnx.csv.parse("a\n\n1\n")
    assert.are.same({{""}, {"1"}}, rows)
    _, rows = lpnx.csv.parse("a\n1\n2", {header = true})
    assert.are.same({{"1"}, {"2"}}, rows)
  end)

  it("reads many empty lines in linear time", function()
    local _, rows = lpnx.csv.parse(string.rep("\n", 200000) .. "x" .. string.rep("\r\n", 200000), NOHEADER)
    assert.are.equal(200001, #rows)
    assert.are.same({""}, rows[1])
    assert.are.same({"x"}, rows[200001])
  end)

  it("keeps rows of different lengths, spaces and NUL bytes as data", function()
    local _, rows = lpnx.csv.parse("a,b\n1\n x , y ,z\na\0b\n")
    assert.are.same({{"1"}, {" x ", " y ", "z"}, {"a\0b"}}, rows)
  end)

  it("an empty input has no rows, and no header when one is wanted is an error", function()
    local h, rows = lpnx.csv.parse("", NOHEADER)
    assert.is_nil(h)
    assert.are.same({}, rows)
    local _, rows2 = lpnx.csv.parse("\239\187\191\n\n", NOHEADER)
    assert.are.same({}, rows2)
    assert.matches("lpnx.csv.parse: 1:1: no header row (the file is empty)", message(lpnx.csv.parse, ""), 1, true)
  end)

  -- line:column of each defect, counted by hand (columns are bytes from 1)
  local malformed = {
    -- line 2 is 1,"x"y: the stray y is byte 6
    {'a,b\n1,"x"y\n',
     "2:6: unexpected 'y' after the closing quote of a field (a quote inside a quoted field must be doubled)"},
    -- line 2 is x"y,2: the quote is byte 2
    {'a,b\nx"y,2\n', "2:2: quote inside an unquoted field (quote the whole field and double the quote)"},
    -- the opening quote of the field that never closes is line 2, byte 3
    {'a,b\n1,"abc\n2,3\n', "2:3: quoted field is never closed (its opening quote is here)"},
    -- a quoted line break moves the count: the stray byte is on line 3, byte 3
    {'a\n"x\ny"z\n', "3:3: unexpected 'z' after the closing quote"},
    {"a\rb\n", "1:2: carriage return not followed by a line feed"},
    {'"a"\r', "1:4: carriage return not followed by a line feed"},
    {'"a"\1\n', "1:4: unexpected byte 0x01 after the closing quote"},
    -- after a byte order mark, columns count from the first visible byte
    {'\239\187\191a"', "1:2: quote inside an unquoted field"},
  }
  for _, case in ipairs(malformed) do
    it(("reports %s"):format(case[2]:match("^[%d:]+ [^(]*")), function()
      assert.matches("lpnx.csv.parse: " .. case[2], message(lpnx.csv.parse, case[1]), 1, true)
    end)
  end
end)

describe("lpnx.csv.read and write", function()
  local tmp
  before_each(function() tmp = helpers.tmpdir() end)
  after_each(function() helpers.rmdir(tmp) end)

  it("reads a file like parse does, and names it in errors", function()
    write_text(tmp .. "/a.csv", 'id,v\r\n1,"x, y"\r\n')
    local header, rows = lpnx.csv.read(tmp .. "/a.csv")
    assert.are.same({"id", "v"}, header)
    assert.are.same({{"1", "x, y"}}, rows)
    write_text(tmp .. "/bad.csv", 'id,v\n1,2\n3,"4"5\n')
    assert.matches("lpnx.csv.read: " .. tmp .. "/bad.csv:3:6: unexpected '5' after the closing quote",
                   message(lpnx.csv.read, tmp .. "/bad.csv"), 1, true)
    write_text(tmp .. "/empty.csv", "")
    assert.matches("lpnx.csv.read: " .. tmp .. "/empty.csv:1:1: no header row (the file is empty)",
                   message(lpnx.csv.read, tmp .. "/empty.csv"), 1, true)
    local h, r = lpnx.csv.read(tmp .. "/empty.csv", NOHEADER)
    assert.is_nil(h)
    assert.are.same({}, r)
    assert.matches("lpnx.csv.read: " .. tmp .. "/none.csv: cannot open (No such file or directory)",
                   message(lpnx.csv.read, tmp .. "/none.csv"), 1, true)
  end)

  it("writes with RFC 4180 quoting and reads back the same values", function()
    local header = {"name", "value, with comma"}
    local rows = {{"plain", 'say "hi"'}, {"two\nlines", "cr\r\nlf"}, {"", 3}, {" spaced ", 0.5}}
    local path = tmp .. "/w.csv"
    lpnx.csv.write(path, header, rows)
    assert.are.equal('name,"value, with comma"\nplain,"say ""hi"""\n"two\nlines","cr\r\nlf"\n,3\n spaced ,0.5\n',
                     read_text(path))
    local h, r = lpnx.csv.read(path)
    assert.are.same(header, h)
    assert.are.same({{"plain", 'say "hi"'}, {"two\nlines", "cr\r\nlf"}, {"", "3"}, {" spaced ", "0.5"}}, r)
  end)

  it("quotes a row's only field when it is empty, so it survives as a row", function()
    local path = tmp .. "/one.csv"
    lpnx.csv.write(path, nil, {{"a"}, {""}, {""}})
    assert.are.equal('a\n""\n""\n', read_text(path))
    local _, r = lpnx.csv.read(path, NOHEADER)
    assert.are.same({{"a"}, {""}, {""}}, r)
  end)

  it("refuses ragged rows, odd values and unwritable paths, leaving no file", function()
    local path = tmp .. "/x.csv"
    assert.matches("row 2 has 1 fields, expected 2 like the header",
                   message(lpnx.csv.write, path, {"a", "b"}, {{"1", "2"}, {"3"}}), 1, true)
    assert.matches("row 2 has 3 fields, expected 2 like the first row",
                   message(lpnx.csv.write, path, nil, {{"1", "2"}, {"3", "4", "5"}}), 1, true)
    assert.matches("row 1, field 2 is a boolean, expected a string or number",
                   message(lpnx.csv.write, path, nil, {{"1", true}}), 1, true)
    assert.matches("row 1 is a string, expected a table of fields",
                   message(lpnx.csv.write, path, nil, {"1,2"}), 1, true)
    assert.matches("the header has no fields", message(lpnx.csv.write, path, {}, {}), 1, true)
    assert.is_nil(io.open(path))
    assert.matches("lpnx.csv.write: " .. tmp .. "/no/x.csv: cannot create a temporary file next to it",
                   message(lpnx.csv.write, tmp .. "/no/x.csv", {"a"}, {}), 1, true)
  end)
end)

describe("lpnx.siim", function()
  local sample = helpers.fixture("siim/train-rle-sample.csv")
  local ID = {
    empty = "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090",
    one = "1.2.276.0.7230010.3.1.4.8323329.12515.1517875239.501137",
    two = "1.2.276.0.7230010.3.1.4.8323329.4904.1517875185.355709",
    empty2 = "1.2.276.0.7230010.3.1.4.8323329.32579.1517875161.299312",
    full = "1.2.276.0.7230010.3.1.4.8323329.1314.1517875167.222290",
  }

  it("reads train-rle.csv in SIIM's style: ' EncodedPixels', ' -1' and '-1', several rows per image", function()
    local entries, ids = lpnx.siim.read_csv(sample)
    assert.are.same({ID.empty, ID.one, ID.two, ID.empty2, ID.full}, ids)
    assert.are.same({}, entries[ID.empty])
    assert.are.same({}, entries[ID.empty2])
    assert.are.same({"10 4 12 3"}, entries[ID.one])
    assert.are.same({"40 5", "42 6"}, entries[ID.two])
    assert.is_false(lpnx.siim.is_positive(entries[ID.empty]))
    assert.is_true(lpnx.siim.is_positive(entries[ID.two]))
    assert.is_false(lpnx.siim.is_positive({" -1"}))
    assert.is_true(lpnx.siim.is_positive("0 1"))
  end)

  it("makes each image's mask, the union of its rows", function()
    local entries = lpnx.siim.read_csv(sample)
    -- 8x8, index = x*8 + y. "10 4 12 3": indices 10..13 (x=1, y=2..5), then 26..28 (x=3, y=2..4)
    local m = lpnx.siim.mask(entries[ID.one], 8, 8)
    assert.are.equal(7, m:sum())
    assert.are.same({0, 0, 1, 1, 1, 1, 0, 0}, m:select(2, 2):totable())
    assert.are.same({0, 0, 1, 1, 1, 0, 0, 0}, m:select(2, 4):totable())
    -- "40 5" (x=5, y=0..4) OR "42 6" (x=5, y=2..7): all of column 5, each pixel 1 not 2
    local u = lpnx.siim.mask(entries[ID.two], 8, 8)
    assert.are.equal(8, u:sum())
    assert.are.same({1, 1, 1, 1, 1, 1, 1, 1}, u:select(2, 6):totable())
    assert.are.equal(0, lpnx.siim.mask(entries[ID.empty], 8, 8):sum())
    assert.are.same({8, 8}, lpnx.siim.mask(entries[ID.empty], 8, 8):size())
    assert.are.equal(64, lpnx.siim.mask(entries[ID.full], 8, 8):sum())
  end)

  it("mask errors name the image and the RLE", function()
    local entries = lpnx.siim.read_csv(sample)
    assert.matches("lpnx.siim.mask: image " .. ID.full
                   .. ": RLE 1: run 1 (start 0, length 64) passes the last pixel 16 of a 4x4 mask",
                   message(lpnx.siim.mask, entries[ID.full], 4, 4), 1, true)
    assert.matches("lpnx.siim.mask: image abc: RLE 2: odd count of numbers (1)",
                   message(lpnx.siim.mask, {"0 1", "5"}, 4, 4, "abc"), 1, true)
  end)

  it("names the file and row of a missing column or an empty ImageId", function()
    local missing = helpers.fixture("siim/missing_column.csv")
    assert.matches("lpnx.siim.read_csv: " .. missing .. ": row 3: expected 2 fields (ImageId, EncodedPixels), got 1",
                   message(lpnx.siim.read_csv, missing), 1, true)
    local no_column = helpers.fixture("siim/no_rle_column.csv")
    assert.matches("lpnx.siim.read_csv: " .. no_column .. ": no EncodedPixels column in the header (ImageId)",
                   message(lpnx.siim.read_csv, no_column), 1, true)
    local tmp = helpers.tmpdir()
    write_text(tmp .. "/e.csv", "ImageId,EncodedPixels\n1.2.3,-1\n  ,0 1\n")
    assert.matches("lpnx.siim.read_csv: " .. tmp .. "/e.csv: row 3: empty ImageId",
                   message(lpnx.siim.read_csv, tmp .. "/e.csv"), 1, true)
    write_text(tmp .. "/q.csv", 'ImageId,EncodedPixels\n1.2.3,"-1\n')
    assert.matches("lpnx.siim.read_csv: " .. tmp .. "/q.csv:2:7: quoted field is never closed",
                   message(lpnx.siim.read_csv, tmp .. "/q.csv"), 1, true)
    helpers.rmdir(tmp)
  end)

  it("write_submission writes one row per image, -1 for empty, and reads back", function()
    local tmp = helpers.tmpdir()
    local path = tmp .. "/submission.csv"
    local mask = lpnx.zeros(4, 3)
    mask:set(1, 2, 1) -- index 1
    mask:set(1, 3, 1) -- index 2
    lpnx.siim.write_submission(path, {
      {"img.a", "10 4 12 3"},
      {"img.b", "-1"},
      {ImageId = "img.c", EncodedPixels = ""},
      {ImageId = "img.d"},
      {"img.e", mask},
      {"img.f", lpnx.zeros(4, 3)},
    })
    assert.are.equal("ImageId,EncodedPixels\nimg.a,10 4 12 3\nimg.b,-1\nimg.c,-1\nimg.d,-1\nimg.e,1 2\nimg.f,-1\n",
                     read_text(path))
    local entries, ids = lpnx.siim.read_csv(path)
    assert.are.same({"img.a", "img.b", "img.c", "img.d", "img.e", "img.f"}, ids)
    assert.are.same({"10 4 12 3"}, entries["img.a"])
    assert.are.same({}, entries["img.b"])
    assert.are.same(mask:totable(), lpnx.siim.mask(entries["img.e"], 4, 3):totable())
    assert.matches("image img.a appears twice (rows 1 and 2)",
                   message(lpnx.siim.write_submission, path, {{"img.a", "-1"}, {"img.a", "0 1"}}), 1, true)
    assert.matches("row 1: expected a non-empty ImageId string, got nil",
                   message(lpnx.siim.write_submission, path, {{nil, "-1"}}), 1, true)
    -- the failed calls left the earlier file as it was
    assert.are.equal(6, select(2, read_text(path):gsub("\n", "")) - 1)
    helpers.rmdir(tmp)
  end)
end)
