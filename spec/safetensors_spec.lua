local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

describe("lpnx.save / lpnx.load", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rmdir(dir) end)

  it("round-trips tensors, shapes and metadata exactly", function()
    lpnx.manual_seed(21)
    local a, b = lpnx.randn(3, 4, 5), lpnx.tensor{1.5, -2}
    local s = lpnx.tensor(7)
    local path = dir .. "/m.safetensors"
    lpnx.save(path, {["encoder.conv1.weight"] = a, bias = b, scalar = s, empty = lpnx.zeros(0, 3)},
              {encoder = "resnet34", size = 256, pretrained = true})
    local t, meta, names = lpnx.load(path)
    assert.are.same(a:totable(), t["encoder.conv1.weight"]:totable())
    assert.are.same({1.5, -2}, t.bias:totable())
    assert.are.equal(0, t.scalar:dim())
    assert.are.equal(7, t.scalar:item())
    assert.are.same({0, 3}, t.empty:size())
    assert.are.same({encoder = "resnet34", size = "256", pretrained = "true"}, meta)
    assert.are.same({"bias", "empty", "encoder.conv1.weight", "scalar"}, names)
  end)

  it("writes the safetensors layout: u64 length, space-padded JSON, F32 data", function()
    local path = dir .. "/x.safetensors"
    lpnx.save(path, {x = lpnx.tensor{{1, 2}, {3, 4}}})
    local bytes = read_bytes(path)
    local n = string.unpack("<I8", bytes)
    assert.are.equal(0, (8 + n) % 8)
    local header = bytes:sub(9, 8 + n)
    assert.matches('"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}', header, 1, true)
    assert.are.equal(8 + n + 16, #bytes)
    local v1, v2, v3, v4 = string.unpack("<ffff", bytes, 9 + n)
    assert.are.same({1, 2, 3, 4}, {v1, v2, v3, v4})
  end)

  it("writes the header compact: metadata first, tensors and metadata keys sorted, fields in a fixed order", function()
    local path = dir .. "/h.safetensors"
    lpnx.save(path, {w = lpnx.zeros(2, 1), b = lpnx.tensor(1)}, {size = 256, arch = 'u"net'})
    local bytes = read_bytes(path)
    local n = string.unpack("<I8", bytes)
    local json, pad = bytes:sub(9, 8 + n):match("^(.-)( *)$")
    assert.are.equal('{"__metadata__":{"arch":"u\\"net","size":"256"},'
                     .. '"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]},'
                     .. '"w":{"dtype":"F32","shape":[2,1],"data_offsets":[4,12]}}', json)
    assert.is_true(#pad < 8 and n % 8 == 0)
  end)

  it("saves non-contiguous views by value", function()
    local path = dir .. "/v.safetensors"
    local m = lpnx.arange(6):view(2, 3)
    lpnx.save(path, {mt = m:t(), col = m:narrow(2, 2, 1)})
    local t = lpnx.load(path)
    assert.are.same({{0, 3}, {1, 4}, {2, 5}}, t.mt:totable())
    assert.are.same({{1}, {4}}, t.col:totable())
  end)

  it("reads a file from another writer: F16, BF16, F64, I64, I32, U8, BOOL, unpadded header", function()
    local t, meta, names = lpnx.load(h.fixture("other_writer.safetensors"))
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, t.f32:totable())
    local f16 = t.f16:totable()
    assert.are.same({1, -2.5, 65504, 2 ^ -14, 2 ^ -24}, {table.unpack(f16, 1, 5)})
    assert.are.equal(math.huge, f16[6])
    local bf16 = t.bf16:totable()
    assert.are.same({1, -3, 0.15625}, {table.unpack(bf16, 1, 3)})
    assert.is_true(math.abs(bf16[4] - 1e30) / 1e30 < 0.01)
    h.assert_near(t.f64, {{0.5, -1.25}, {3, 1e-3}}, 1e-9)
    assert.are.equal(0, t["bn.num_batches_tracked"]:dim())
    assert.are.equal(7, t["bn.num_batches_tracked"]:item())
    assert.are.same({-1, 2}, t.i32:totable())
    assert.are.same({0, 255}, t.u8:totable())
    assert.are.same({1, 0}, t.bool:totable())
    assert.are.equal("pt", meta.format)
    assert.are.equal('a "quoted" \\ value \u{e9}', meta.quote)
    assert.are.equal(8, #names)
  end)

  it("reads a space-padded header", function()
    local t, meta = lpnx.load(h.fixture("padded.safetensors"))
    assert.are.same({0.25, 0.5, 0.75}, t.w:totable())
    assert.are.same({}, meta)
  end)

  it("overwrites atomically: a failed save leaves the old file intact", function()
    local path = dir .. "/keep.safetensors"
    lpnx.save(path, {w = lpnx.ones(4)})
    local before = read_bytes(path)
    local ok, err = pcall(lpnx.save, path, {w = lpnx.ones(2), bad = "not a tensor"})
    assert.is_false(ok)
    assert.matches("'bad' is a string, expected a tensor", err, 1, true)
    assert.are.equal(before, read_bytes(path))
    local ok2, err2 = pcall(lpnx.save, dir .. "/no/such/dir/x.safetensors", {w = lpnx.ones(2)})
    assert.is_false(ok2)
    assert.matches("no/such/dir/x.safetensors", err2, 1, true)
    -- no temp files left behind
    local left = io.popen("ls -A '" .. dir .. "'"):read("a")
    assert.are.equal("keep.safetensors\n", left)
  end)

  local bad = {
    {"truncated_length", "too short for the 8-byte header length"},
    {"header_past_end", "header length 999999 runs past the end of the file"},
    {"huge_header_length", "exceeds the limit"},
    {"bad_json", "malformed header JSON at byte"},
    {"offsets_past_end", "tensor 'x': data offsets [0, 16) past the end of the data (8 bytes)"},
    {"shape_mismatch", "tensor 'x': shape 2x3 needs 24 bytes, offsets give 20"},
    {"unknown_dtype", "tensor 'x': unknown dtype 'F8_E4M3'"},
    {"negative_shape", "is negative"},
    {"metadata_not_string", "must be a string"},
    {"duplicate_name", "duplicate tensor name 'x'"},
    {"not_an_object", "header is not a JSON object"},
  }
  for _, case in ipairs(bad) do
    it("rejects a malformed file (" .. case[1] .. ") with a message naming the file", function()
      local path = h.fixture("bad/" .. case[1] .. ".safetensors")
      local ok, err = pcall(lpnx.load, path)
      assert.is_false(ok)
      assert.matches(path, err, 1, true)
      assert.matches(case[2], err, 1, true)
    end)
  end

  it("names a repeated key by what it is: tensor, metadata or tensor field", function()
    local t = '{"dtype":"F32","shape":[],"data_offsets":[0,4]}'
    local cases = {
      {'{"x":' .. t .. ',"x":' .. t .. '}', "duplicate tensor name 'x'"},
      {'{"a\\"b":' .. t .. ',"a\\u0022b":{}}', "duplicate tensor name 'a\"b'"},
      {'{"__metadata__":{},"__metadata__":{}}', '"__metadata__" appears twice'},
      {'{"__metadata__":{"k":"1","k":"2"}}', '"__metadata__" has duplicate key \'k\''},
      {'{"x":{"dtype":"F32","shape":[],"dtype":"F32"}}', 'tensor \'x\': duplicate key "dtype"'},
      {'{"x":{"dtype" "F32"}}', "malformed header JSON at byte"},
      {'{} x', "malformed header JSON at byte"},
    }
    local path = dir .. "/dup.safetensors"
    for _, case in ipairs(cases) do
      write_bytes(path, string.pack("<I8", #case[1]) .. case[1] .. ("\0"):rep(4))
      local ok, err = pcall(lpnx.load, path)
      assert.is_false(ok, case[1])
      assert.matches(case[2], err, 1, true)
    end
  end)

  it("reads a header of metadata alone", function()
    local path = dir .. "/meta.safetensors"
    local header = '{"__metadata__":{"format":"pt"}}'
    write_bytes(path, string.pack("<I8", #header) .. header)
    local t, meta, names = lpnx.load(path)
    assert.are.same({}, t)
    assert.are.same({format = "pt"}, meta)
    assert.are.same({}, names)
  end)

  it("rejects every truncation of a valid file without crashing", function()
    local bytes = read_bytes(h.fixture("other_writer.safetensors"))
    local path = dir .. "/cut.safetensors"
    local failures = 0
    for n = 0, #bytes - 1, 3 do
      write_bytes(path, bytes:sub(1, n))
      local ok, err = pcall(lpnx.load, path)
      assert.is_false(ok)
      assert.matches("cut.safetensors", err, 1, true)
      failures = failures + 1
    end
    assert.is_true(failures > 20)
  end)

  it("a missing file is an error naming it", function()
    local ok, err = pcall(lpnx.load, dir .. "/absent.safetensors")
    assert.is_false(ok)
    assert.matches("absent.safetensors", err, 1, true)
  end)

  it("metadata must be strings or numbers", function()
    local ok, err = pcall(lpnx.save, dir .. "/m.safetensors", {w = lpnx.ones(1)}, {decoder = {1, 2}})
    assert.is_false(ok)
    assert.matches("metadata 'decoder' is a table, expected a string or number", err, 1, true)
  end)
end)
