std = "lua54"
max_line_length = 120
files["spec/"] = {std = "+busted"}
exclude_files = {"build/", "build-asan/"}
-- Orthanc's Lua scripting: the callbacks it calls and the functions it provides
files["examples/orthanc/"] = {globals = {"OnStoredInstance"}, read_globals = {"SendToModality"},
                              unused_args = false}
