-- Helpers the command-line scripts share: argparse converters whose
-- errors name the flag, a progress callback, and a one-line exit.
local lpnx = require "lpnx"

local cli = {}

-- argparse converter: a number, or "FLAG expects a number, got 'x'".
function cli.number(flag)
  return function(s)
    local v = tonumber(s)
    if v then return v end
    return nil, ("%s expects a number, got '%s'"):format(flag, s)
  end
end

-- argparse converter: an integer.
function cli.integer(flag)
  return function(s)
    local v = math.tointeger(tonumber(s))
    if v then return v end
    return nil, ("%s expects an integer, got '%s'"):format(flag, s)
  end
end

-- argparse converter: "0.5,0.6,0.7" -> {0.5, 0.6, 0.7}.
function cli.numbers(flag)
  return function(s)
    local list = {}
    for item in s:gmatch("[^,%s]+") do
      local v = tonumber(item)
      if not v then return nil, ("%s expects numbers separated by commas, got '%s'"):format(flag, s) end
      list[#list + 1] = v
    end
    if #list == 0 then return nil, ("%s expects numbers separated by commas, got '%s'"):format(flag, s) end
    return list
  end
end

-- A progress callback fn(i, n) for predict.run / predict.search: an
-- lpnx.progress bar (redrawn on a terminal, plain lines elsewhere),
-- made at the first call, when n is known.
function cli.reporter(label)
  local bar
  return function(i, n)
    bar = bar or lpnx.progress.new{total = n, label = label, unit = "img"}
    bar:update(i)
    if i == n then bar:finish() end
  end
end

-- fail(code, msg): writes "PROGRAM: msg" (without a Lua file:line
-- prefix) to stderr and exits with code.
function cli.failer(program)
  return function(code, msg)
    io.stderr:write(("%s: %s\n"):format(program, (tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", ""))))
    os.exit(code)
  end
end

return cli
