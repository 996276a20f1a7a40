-- lpnx.cli: the converters, help texts and parsing the example scripts share.
local argparse = require "argparse"
local cli = require "lpnx.cli"
local h = require "spec.support.helpers"

describe("lpnx.cli converters", function()
  it("read numbers and integers, and name the flag when they cannot", function()
    assert.are.same({2.5}, {cli.number("--lr")("2.5")})
    assert.are.same({nil, "--lr expects a number, got 'fast'"}, {cli.number("--lr")("fast")})
    assert.are.equal(math.type(cli.integer("--batch")("8")), "integer")
    assert.are.same({nil, "--batch expects an integer, got '2.5'"}, {cli.integer("--batch")("2.5")})
    assert.are.same({0.5, 0.7}, cli.numbers("--tops")("0.5, 0.7"))
    assert.are.same({nil, "--tops expects numbers separated by commas, got 'a,b'"}, {cli.numbers("--tops")("a,b")})
  end)

  it("hold values to a range", function()
    local p = cli.number("--top", {min = 0, max = 1})
    assert.are.equal(1, p("1"))
    assert.are.same({nil, "--top must be in [0, 1]"}, {p("1.5")})
    assert.are.same({nil, "--f must be in [0, 1)"}, {cli.number("--f", {min = 0, below = 1})("1")})
    assert.are.same({nil, "--area must be at least 0"}, {cli.number("--area", {min = 0})("-1")})
    assert.are.same({nil, "--batch must be an integer >= 1"}, {cli.integer("--batch", {min = 1})("0")})
    local size = cli.integer("--size", {min = 64, multiple_of = 32})
    assert.are.equal(96, size("96"))
    assert.are.same({nil, "--size must be a multiple of 32, at least 64"}, {size("80")})
    assert.are.same({nil, "--size must be a multiple of 32, at least 64"}, {size("32")})
    assert.are.same({nil, "--size must be a positive multiple of 32"},
                    {cli.integer("--size", {multiple_of = 32})("0")})
  end)

  it("take one of the names of a name table or of an array, and list them", function()
    local losses = {combo = {about = "BCE + Dice"}, bce = {}, dice = {}}
    assert.are.equal("dice", cli.choice("--loss", losses)("dice"))
    assert.are.same({nil, "--loss must be bce, combo or dice, got l2"}, {cli.choice("--loss", losses)("l2")})
    assert.are.same({nil, "--algo must be auto, winograd or direct, got fft"},
                    {cli.choice("--algo", {"auto", "winograd", "direct"})("fft")})
    assert.are.equal("bce, combo (BCE + Dice) or dice", cli.choices(losses))
    assert.are.equal("auto", cli.choices({"auto"}))
  end)

  it("take paths that are there, as files or folders", function()
    local dir = h.tmpdir()
    local file = dir .. "/a.csv"
    io.open(file, "w"):close()
    assert.are.equal(file, cli.file("--truth")(file))
    assert.are.same({nil, "--truth " .. dir .. "/b.csv: no such file"}, {cli.file("--truth")(dir .. "/b.csv")})
    assert.are.same({nil, "--model " .. dir .. " is a folder, expected a model file"},
                    {cli.file("--model", "a model file")(dir)})
    assert.are.same({nil, "--truth : no such file"}, {cli.file("--truth")("")})
    assert.are.equal(dir, cli.dir("--data")(dir))
    assert.are.same({nil, "--data " .. file .. " is not a folder"}, {cli.dir("--data")(file)})
    assert.are.equal(file, cli.path("--data")(file))
    assert.are.equal(dir, cli.path("--data")(dir))
    assert.are.same({nil, "--data /nonexistent: no such file or folder"}, {cli.path("--data")("/nonexistent")})
    h.rmdir(dir)
  end)
end)

describe("cli.parse", function()
  local function parser()
    local p = argparse("x.lua", "A script.")
    p:option("--batch", "Batch size.", "4"):convert(cli.integer("--batch", {min = 1}))
    p:option("--data", "Data folder."):convert(cli.dir("--data"))
    return p
  end
  local function answer(argv)
    local said
    local function fail(code, msg)
      said = {code, msg}
      error("exit")
    end
    local ok, args = pcall(cli.parse, parser(), fail, argv)
    return ok and args or said
  end

  it("gives the arguments, converted", function()
    assert.are.same({batch = 2}, answer({"--batch", "2"}))
    assert.are.same({batch = 4}, answer({}))
  end)

  it("answers a verdict as it is and argparse's own complaints with a pointer to --help", function()
    assert.are.same({2, "--batch must be an integer >= 1"}, answer({"--batch", "0"}))
    assert.are.same({2, "--data /nonexistent is not a folder"}, answer({"--data", "/nonexistent"}))
    assert.are.same({2, "--batch expects an integer, got 'x' (see --help)"}, answer({"--batch", "x"}))
    assert.are.same({2, "unknown option '--bogus' (see --help)"}, answer({"--bogus"}))
  end)
end)

describe("cli.failer", function()
  local function run(code)
    local p = io.popen(("lua5.4 -e %q 2>&1; echo \"exit=$?\""):format(code))
    local out = p:read("a")
    p:close()
    return out
  end

  it("writes one line without a Lua position and exits with the code", function()
    assert.are.equal("x.lua: boom\nexit=3\n", run('require("lpnx.cli").failer("x.lua")(3, "a/b.lua:12: boom")'))
    assert.are.equal("exit=2\n", run('require("lpnx.cli").failer("x.lua", {quiet = true})(2, "boom")'))
  end)
end)

describe("the example scripts", function()
  local function help(script)
    local p = io.popen(("lua5.4 examples/%s --help 2>&1; echo \"exit=$?\""):format(script))
    local out = p:read("a")
    p:close()
    return out
  end

  -- flag -> its description, from the Options part of a --help text
  local function described(help_text)
    local lines, found = {}, {}
    for line in help_text:match("\nOptions:\n(.*)$"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    for i, line in ipairs(lines) do
      local flag, rest = line:match("^   %-?%w?,? ?(%-%-[%w-]+)%s?<?[%w_]*>?(.*)$")
      if flag then
        local text = rest:match("^%s*(.-)%s*$")
        if text == "" and lines[i + 1] and lines[i + 1]:match("^     ") then -- on the next line
          text = lines[i + 1]:match("^%s*(.-)%s*$")
        end
        found[flag] = text
      end
    end
    return found
  end

  it("explain every flag they take with --help", function()
    for _, script in ipairs {"train.lua", "predict.lua", "evaluate.lua", "bench.lua", "make_synthetic.lua"} do
      local text = help(script)
      assert.matches("exit=0", text, 1, true)
      local usage = text:match("^Usage: (.-)\n\n")
      local about = described(text)
      local count = 0
      for flag in usage:gmatch("%[?(%-%-[%w-]+)") do
        count = count + 1
        assert.is_truthy(about[flag], script .. " " .. flag)
        assert.is_true(#about[flag] > 5, script .. " " .. flag .. ": " .. tostring(about[flag]))
      end
      assert.is_true(count >= 8, script)
    end
  end)

  it("list train.lua's losses, optimizers and schedules from their name tables", function()
    local train = require "lpnx.train"
    local about = described(help("train.lua"))
    for flag, names in pairs {["--loss"] = train.losses, ["--optimizer"] = train.optimizers,
                              ["--scheduler"] = train.schedulers} do
      for name in pairs(names) do assert.matches(name, about[flag], 1, true) end
    end
    assert.matches("combo (BCE + Dice)", about["--loss"], 1, true)
  end)
end)
