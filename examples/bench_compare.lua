-- Prints lpnx's and PyTorch's bench lines side by side with their ratios.
-- usage: lua5.4 examples/bench_compare.lua LPNX_OUT TORCH_OUT TORCH_TIME
local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end
local lp, tr, tt = read(arg[1]), read(arg[2]), read(arg[3])
local function num(s, key) return tonumber(s:match(key .. "=([%d.]+)")) end
local l_train, l_infer = num(lp, "train_s_per_image"), num(lp, "infer_s_per_image")
local l_mem = num(lp, "peak_rss_mb")
local t_train, t_infer = num(tr, "per_image_train_s"), num(tr, "per_image_infer_s")
local t_mem = num(tt, "torch_peak_rss_mb")
if t_mem then t_mem = t_mem / 1024 end
if not (l_train and l_infer and t_train and t_infer) then
  io.stderr:write("bench_compare: could not read both bench lines\n")
  os.exit(1)
end
print(("%-22s %10s %10s %8s"):format("per image", "lpnx", "pytorch", "ratio"))
print(("%-22s %10.3f %10.3f %8.2f"):format("train step (s)", l_train, t_train, l_train / t_train))
print(("%-22s %10.3f %10.3f %8.2f"):format("inference (s)", l_infer, t_infer, l_infer / t_infer))
if l_mem and t_mem then
  print(("%-22s %10.0f %10.0f %8.2f"):format("peak memory (MB)", l_mem, t_mem, l_mem / t_mem))
end
