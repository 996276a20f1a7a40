std = "lua54"
max_line_length = 120
files["spec/"] = {std = "+busted"}
exclude_files = {"build/", "build-asan/"}
-- Orthanc's Lua scripting: the callbacks it calls and the functions it provides
files["examples/orthanc/"] = {globals = {"OnStoredInstance", "OnJobFailure", "OnJobSuccess"}, read_globals = {"DumpJson", "GetOrthancConfiguration", "ParseJson", "RestApiGet", "RestApiPost"},
                              unused_args = false}
