-- Helpers the command-line scripts share: argparse converters whose
-- errors name the flag, parsing that answers a bad flag with one line,
-- help text from the name tables, a progress callback, and a one-line exit.
--
--   cli.number(flag [, range])     a number; range {min =, max =, below =} bounds it
--   cli.integer(flag [, range])    an integer; range {min =, multiple_of =} too
--   cli.numbers(flag)              "0.5,0.6,0.7" -> {0.5, 0.6, 0.7}
--   cli.choice(flag, names)        one of names: an array (in its order) or a name table (its keys)
--   cli.file(flag [, what])        the path of a file; cli.dir(flag) of a folder; cli.path(flag) of either
--   cli.choices(names) -> text     "a, b (what b is) or c" for help texts, from the same tables
--   cli.parse(parser, fail [, argv]) -> args
--   cli.failer(program [, {quiet = bool}]) -> fail(code, msg)
--   cli.reporter(label) -> fn(i, n)
--   cli.postprocess_flags(parser, defaults)   --top, --min-area, --bottom, --threshold, --min-component
--   cli.postprocess_conflict(args) -> message | nil
local fs = require "lpnx.fs"
local progress = require "lpnx.progress"
local util = require "lpnx.util"

local cli = {}

-- The messages of converters that judged a well-formed value (out of
-- range, not one of the choices, no such file). They say all there is to
-- say, so cli.parse does not point at --help after them.
local verdicts = {}

local function verdict(msg)
  verdicts[msg] = true
  return nil, msg
end

local names_of, either = util.names_of, util.either

-- What a range asks of a value, for "FLAG must be ...".
local function range_text(range, integer)
  local lo, hi, below, step = range.min, range.max, range.below, range.multiple_of
  if step and (lo or step) == step then return ("a positive multiple of %d"):format(step) end
  if step then return ("a multiple of %d, at least %d"):format(step, lo) end
  if integer and lo and not hi then return ("an integer >= %d"):format(lo) end
  if lo and (hi or below) then return ("in [%g, %g%s"):format(lo, hi or below, hi and "]" or ")") end
  if lo then return ("at least %g"):format(lo) end
  if hi then return ("at most %g"):format(hi) end
  return ("below %g"):format(below)
end

-- Whether v falls outside range (a multiple_of without a min asks for a
-- positive multiple).
local function out_of(range, v)
  local lo = range.min or range.multiple_of
  return (lo and v < lo) or (range.max and v > range.max) or (range.below and v >= range.below)
      or (range.multiple_of and v % range.multiple_of ~= 0)
end

-- argparse converter: a number, or "FLAG expects a number, got 'x'";
-- outside range: "FLAG must be in [0, 1]".
function cli.number(flag, range)
  return function(s)
    local v = tonumber(s)
    if not v then return nil, ("%s expects a number, got '%s'"):format(flag, s) end
    if range and out_of(range, v) then return verdict(("%s must be %s"):format(flag, range_text(range))) end
    return v
  end
end

-- argparse converter: an integer; outside range: "FLAG must be an
-- integer >= 1".
function cli.integer(flag, range)
  return function(s)
    local v = math.tointeger(tonumber(s))
    if not v then return nil, ("%s expects an integer, got '%s'"):format(flag, s) end
    if range and out_of(range, v) then return verdict(("%s must be %s"):format(flag, range_text(range, true))) end
    return v
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

-- argparse converter: one of names (an array, or a name table such as
-- lpnx.train.losses), or "FLAG must be a, b or c, got x".
function cli.choice(flag, names)
  local list = names_of(names)
  local known = {}
  for _, name in ipairs(list) do known[name] = true end
  return function(s)
    if known[s] then return s end
    return verdict(("%s must be %s, got %s"):format(flag, either(list), s))
  end
end

-- "a, b (what b is) or c": the names of a name table for a help text,
-- with the about field of the entries that have one.
function cli.choices(names)
  local list = names_of(names)
  for i, name in ipairs(list) do
    local entry = names[name]
    local about = type(entry) == "table" and rawget(entry, "about")
    if about then list[i] = ("%s (%s)"):format(name, about) end
  end
  return either(list)
end

local function kind_of(path)
  if path == "" then return nil end
  return fs.stat(path)
end

-- argparse converter: the path of a file (what: how to name it when a
-- folder is given instead, "a file" by default).
function cli.file(flag, what)
  return function(s)
    local kind = kind_of(s)
    if kind == "file" then return s end
    if kind == "dir" then return verdict(("%s %s is a folder, expected %s"):format(flag, s, what or "a file")) end
    if kind then return verdict(("%s %s is not a file"):format(flag, s)) end
    return verdict(("%s %s: no such file"):format(flag, s))
  end
end

-- argparse converter: the path of a folder.
function cli.dir(flag)
  return function(s)
    if kind_of(s) == "dir" then return s end
    return verdict(("%s %s is not a folder"):format(flag, s))
  end
end

-- argparse converter: the path of a file or a folder.
function cli.path(flag)
  return function(s)
    local kind = kind_of(s)
    if kind == "file" or kind == "dir" then return s end
    return verdict(("%s %s: no such file or folder"):format(flag, s))
  end
end

-- The arguments (of argv, by default the command line's), or (through
-- fail) exit code 2 with one line: a converter's verdict as it is,
-- argparse's own complaints (an unknown option, a malformed value, a
-- missing one) followed by "(see --help)".
function cli.parse(parser, fail, argv)
  local ok, args = parser:pparse(argv)
  if not ok then fail(2, verdicts[args] and args or args .. " (see --help)") end
  return args
end

-- A progress callback fn(i, n) for predict.run / predict.search: an
-- lpnx.progress bar (redrawn on a terminal, plain lines elsewhere),
-- made at the first call, when n is known.
function cli.reporter(label)
  local bar
  return function(i, n)
    bar = bar or progress.new{total = n, label = label, unit = "img"}
    bar:update(i)
    if i == n then bar:finish() end
  end
end

-- The post-processing flags of the scripts that predict: the SIIM-ACR
-- triplet (--top, --min-area, --bottom, defaults from defaults, e.g.
-- lpnx.predict.defaults), or one --threshold; and --min-component.
function cli.postprocess_flags(parser, d)
  parser:option("--top", ("Triplet: the high threshold that decides whether an image is positive (default %g).")
                :format(d.top)):argname("<p>"):convert(cli.number("--top", {min = 0, max = 1}))
  parser:option("--min-area", ("Triplet: pixels above --top needed for a positive, for a 1024x1024 image "
                               .. "(default %d)."):format(d.min_area))
    :argname("<pixels>"):convert(cli.number("--min-area", {min = 0}))
  parser:option("--bottom", ("Triplet: the threshold of the mask of a positive image (default %g)."):format(d.bottom))
    :argname("<p>"):convert(cli.number("--bottom", {min = 0, max = 1}))
  parser:option("--threshold", "One plain threshold instead of the triplet."):argname("<p>")
    :convert(cli.number("--threshold", {min = 0, max = 1}))
  parser:option("--min-component", "Drop mask regions smaller than this many pixels at the image's size.", "0")
    :argname("<pixels>"):convert(cli.integer("--min-component", {min = 0}))
end

-- What is wrong with the parsed post-processing flags, or nil.
function cli.postprocess_conflict(args)
  if args.threshold ~= nil and (args.top or args.min_area or args.bottom) then
    return "give either --threshold or --top/--min-area/--bottom, not both"
  end
end

-- fail(code, msg): writes "PROGRAM: msg" (without a Lua file:line
-- prefix) to stderr and exits with code. quiet: exits without a word
-- (the processes of mpirun other than rank 0).
function cli.failer(program, opts)
  local quiet = opts and opts.quiet
  return function(code, msg)
    if not quiet then io.stderr:write(("%s: %s\n"):format(program, (tostring(msg):gsub("^[^:\n]*%.lua:%d+: ", "")))) end
    os.exit(code)
  end
end

return cli
