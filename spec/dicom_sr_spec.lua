-- The result objects a DICOM node sends back for one chest X-ray:
-- lpnx.dicom.derive_uid (the same UIDs for a result made twice),
-- lpnx.dicom.write_sr (a Comprehensive SR in the form of TID 1500,
-- checked with DCMTK's dsrdump and dicom3tools' dciodvfy). Specs tagged
-- #dciodvfy and #dcmtk run the external programs (installed by make deps)
-- and are pending when they are missing.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Output (stdout and stderr) and exit code of a shell command run without
-- the sanitizer runtime that make ASAN=1 test preloads.
local function run(cmd)
  local p = assert(io.popen("env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS " .. cmd .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local function have(program)
  return os.execute("command -v " .. program .. " >/dev/null 2>&1") == true
end

local function files_in(dir)
  local list = {}
  for name in io.popen("ls -A " .. quote(dir)):lines() do list[#list + 1] = name end
  table.sort(list)
  return list
end

-- The UID derive_uid must give, computed another way: sha256sum of the
-- length-prefixed strings, the UUID's version and variant bits set on the
-- first 16 bytes, bc for the decimal.
local function expected_uid(...)
  local joined = {}
  for _, s in ipairs {...} do joined[#joined + 1] = #s .. ":" .. s end
  local hex = run("printf '%s' " .. quote(table.concat(joined)) .. " | sha256sum"):sub(1, 32):upper()
  local b6, b8 = tonumber(hex:sub(13, 14), 16), tonumber(hex:sub(17, 18), 16)
  hex = hex:sub(1, 12) .. ("%02X"):format((b6 & 0x0F) | 0x80) .. hex:sub(15, 16)
        .. ("%02X"):format((b8 & 0x3F) | 0x80) .. hex:sub(19)
  local decimal = run("echo 'ibase=16; " .. hex .. "' | BC_LINE_LENGTH=0 bc"):gsub("%s", "")
  return "2.25." .. decimal
end

describe("lpnx.dicom.derive_uid", function()
  it("gives fixed UIDs for fixed strings: a UUID from SHA-256 of the length-prefixed strings, in decimal", function()
    -- checked once against Python's hashlib and int.from_bytes
    assert.are.equal("2.25.89139764471349515755813040146450297003", lpnx.dicom.derive_uid("ab", "c"))
    assert.are.equal("2.25.110412357735506804059868378596849497474", lpnx.dicom.derive_uid("a", "bc"))
  end)

  it("agrees with sha256sum and bc", function()
    if not have("bc") or not have("sha256sum") then return pending("bc or sha256sum is not installed") end
    local cases = {{"ab", "c"}, {"a", "bc"}, {"1.2.826.0.1.3680043.8.498.1", "sr"}, {""}, {"é", "x y", "\\"}}
    for _, args in ipairs(cases) do
      assert.are.equal(expected_uid(table.unpack(args)), lpnx.dicom.derive_uid(table.unpack(args)))
    end
  end)

  it("is a valid UID: 2.25., no leading zero, at most 64 characters, different for different strings", function()
    local seen = {}
    for i = 1, 200 do
      local uid = lpnx.dicom.derive_uid("source-" .. i, "seg")
      assert.matches("^2%.25%.[1-9]%d*$", uid)
      assert.is_true(#uid <= 64)
      assert.is_nil(seen[uid])
      seen[uid] = true
    end
    assert.are.equal(lpnx.dicom.derive_uid("x", "sr"), lpnx.dicom.derive_uid("x", "sr"))
    assert.are_not.equal(lpnx.dicom.derive_uid("x", "sr"), lpnx.dicom.derive_uid("x", "seg"))
    assert.are_not.equal(lpnx.dicom.derive_uid("x"), lpnx.dicom.derive_uid("x", ""))
    assert.are_not.equal(lpnx.dicom.derive_uid("a\0b"), lpnx.dicom.derive_uid("a\0c"))
  end)

  it("wants one or more strings and names the argument that is not one", function()
    assert.has_error(function() lpnx.dicom.derive_uid() end,
                     "bad argument #1 to 'derive_uid' (expected one or more strings, got none)")
    assert.has_error(function() lpnx.dicom.derive_uid("a", 1) end,
                     "bad argument #2 to 'derive_uid' (expected a string, got number)")
    assert.has_error(function() lpnx.dicom.derive_uid("a", "b", nil) end,
                     "bad argument #3 to 'derive_uid' (expected a string, got nil)")
  end)
end)
