-- The layers of a ResNet U-Net. Each keeps what its backward needs from
-- the last forward (Torch7's self.output), and calls the C kernels of
-- lpnx.kernels; the arithmetic lives there.
--
-- Buffers (Torch7's rule): a module's output and grad_input are tensors it
-- owns and writes over on its next forward (output) or backward
-- (grad_input) while the input keeps its shape; a new shape gets new
-- buffers. So a training step allocates nothing once the first step has
-- made them. Whoever needs an output beyond the next forward of the same
-- module must clone it (y = m:forward(x):clone()). In-place layers
-- (ReLU(true)) write over their input and, in backward, over gy.
local lpnx = require "lpnx"
local class = require "lpnx.class"
local Module = require "lpnx.nn.module"

local K = lpnx.kernels
local nn = {}

-- t when it is a tensor of exactly the sizes of x (a tensor), else nil:
-- given nil, a kernel makes a new buffer, which the module then keeps.
local function same_size(t, x)
  if t == nil or not lpnx.is_tensor(x) then return nil end
  local d = x:dim()
  if t:dim() ~= d then return nil end
  for i = 1, d do
    if t:size(i) ~= x:size(i) then return nil end
  end
  return t
end

-- t when it is an (n, c, h, w) tensor, else nil.
local function fits(t, n, c, h, w)
  if t ~= nil and t:dim() == 4 and t:size(1) == n and t:size(2) == c and t:size(3) == h and t:size(4) == w then
    return t
  end
  return nil
end

-- n, c, h, w of x when it is an (N,C,H,W) tensor, else nil.
local function nchw(x)
  if lpnx.is_tensor(x) and x:dim() == 4 then return x:size(1), x:size(2), x:size(3), x:size(4) end
  return nil
end

nn.same_size, nn.fits = same_size, fits

-- The column buffer of the convolutions: one tensor shared by every
-- Conv2d (convolutions run one at a time), grown to the largest size
-- asked for. nil when a convolution needs none.
local workspace
local function column_workspace(floats)
  if not floats or floats == 0 then return nil end
  if not workspace or workspace:numel() < floats then workspace = lpnx.empty(floats) end
  return workspace
end

local function pair(v, what)
  if type(v) == "table" then
    if #v ~= 2 then error(("%s: expected a number or {h, w}, got a table of %d"):format(what, #v), 3) end
    return v[1], v[2]
  end
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
    error(("%s: expected an integer or {h, w}, got %s"):format(what, tostring(v)), 3)
  end
  return v, v
end

---------------------------------------------------------------------------
-- Conv2d(cin, cout, k, {stride=1, padding=0, dilation=1, bias=true})
-- Weights start as PyTorch's default (kaiming uniform, a = sqrt(5)).
nn.Conv2d = class("nn.Conv2d", Module)

function nn.Conv2d:__init(cin, cout, k, opts)
  Module.__init(self)
  opts = opts or {}
  assert(math.type(cin) == "integer" and cin > 0, "Conv2d: cin must be a positive integer")
  assert(math.type(cout) == "integer" and cout > 0, "Conv2d: cout must be a positive integer")
  self.cin, self.cout = cin, cout
  self.kh, self.kw = pair(k, "Conv2d kernel size")
  self.sh, self.sw = pair(opts.stride or 1, "Conv2d stride")
  self.ph, self.pw = pair(opts.padding or 0, "Conv2d padding")
  self.dh, self.dw = pair(opts.dilation or 1, "Conv2d dilation")
  local bound = 1 / math.sqrt(cin * self.kh * self.kw)
  self:register_parameter("weight", lpnx.empty(cout, cin, self.kh, self.kw):uniform_(-bound, bound))
  if opts.bias ~= false then
    self:register_parameter("bias", lpnx.empty(cout):uniform_(-bound, bound))
  end
  -- false for a first layer: backward then skips the input gradient.
  self.need_input_grad = true
  -- processes sharing each batch, interleaved (a power of two; the kernels
  -- then group the images as the whole batch would be: lpnx.dist.share_batch)
  self.batch_parts = 1
end

-- PyTorch's output size along one dim (<= 0 when the input is too small).
local function conv_size(size, k, stride, pad, dil)
  return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
end

function nn.Conv2d:forward(x)
  local out, ws
  local n, c, h, w = nchw(x)
  local ho = n and conv_size(h, self.kh, self.sh, self.ph, self.dh)
  local wo = n and conv_size(w, self.kw, self.sw, self.pw, self.dw)
  -- the algorithms of this forward and of the backward that may follow
  local algo = lpnx.conv_algorithm_for(self.training and "train" or "eval")
  self.backward_algo = lpnx.conv_algorithm_for("backward")
  if n and c == self.cin and ho >= 1 and wo >= 1 then -- else the kernel says what is wrong
    out = fits(self.output, n, self.cout, ho, wo)
    local forward_floats = K.conv2d_workspace_size(x, self.weight, self.sh, self.sw, self.ph, self.pw,
                                                   self.dh, self.dw, algo, self.batch_parts)
    local backward_floats = K.conv2d_workspace_size(x, self.weight, self.sh, self.sw, self.ph, self.pw,
                                                    self.dh, self.dw, self.backward_algo, self.batch_parts)
    self.workspace_floats = math.max(forward_floats, backward_floats)
    ws = column_workspace(self.workspace_floats)
  end
  self.output = K.conv2d_forward(x, self.weight, self.bias, self.sh, self.sw, self.ph, self.pw,
                                 self.dh, self.dw, ws, out, algo, self.batch_parts)
  return self.output
end

function nn.Conv2d:backward(x, gy)
  local gx = self.need_input_grad and same_size(self.grad_input, x) or nil
  self.grad_input = K.conv2d_backward(x, self.weight, gy, self.sh, self.sw, self.ph, self.pw,
                                      self.dh, self.dw, self.grad_weight, self.grad_bias,
                                      self.need_input_grad, column_workspace(self.workspace_floats), gx,
                                      self.backward_algo, self.batch_parts)
  return self.grad_input
end

function nn.Conv2d:extra_repr()
  local s = ("%d, %d, kernel=%dx%d"):format(self.cin, self.cout, self.kh, self.kw)
  if self.sh ~= 1 or self.sw ~= 1 then s = s .. (", stride=%dx%d"):format(self.sh, self.sw) end
  if self.ph ~= 0 or self.pw ~= 0 then s = s .. (", padding=%dx%d"):format(self.ph, self.pw) end
  if self.dh ~= 1 or self.dw ~= 1 then s = s .. (", dilation=%dx%d"):format(self.dh, self.dw) end
  if not self.bias then s = s .. ", bias=false" end
  return s
end

---------------------------------------------------------------------------
-- BatchNorm2d(c, {eps=1e-5, momentum=0.1}): PyTorch's semantics. Train
-- mode normalises with batch statistics and updates the running ones
-- (unbiased variance); eval mode uses the running statistics.
--
-- sync (nil, or a function that sums a list of numbers over several
-- processes, as lpnx.dist.sync_batchnorm sets) makes train mode use the
-- statistics of the batch spread over all of them, forward and backward
-- (synchronised batch normalisation); gweight and gbias get this
-- process's part (1/processes of the whole batch's), to be summed with
-- the other gradients.
nn.BatchNorm2d = class("nn.BatchNorm2d", Module)

function nn.BatchNorm2d:__init(c, opts)
  Module.__init(self)
  opts = opts or {}
  self.c = c
  self.eps = opts.eps or 1e-5
  self.momentum = opts.momentum or 0.1
  self:register_parameter("weight", lpnx.ones(c))
  self:register_parameter("bias", lpnx.zeros(c))
  self:register_buffer("running_mean", lpnx.zeros(c))
  self:register_buffer("running_var", lpnx.ones(c))
  self:register_buffer("num_batches_tracked", lpnx.tensor(0))
  self.save_mean = lpnx.zeros(c)   -- batch mean of the last train forward
  self.save_invstd = lpnx.zeros(c) -- 1/sqrt(batch var + eps) of the same
  -- true where the caller is done with gy once backward returns: backward
  -- then writes the input gradient over gy instead of a buffer of its own.
  self.inplace_backward = false
end

-- Train-mode forward with the statistics summed over the processes.
local function synced_forward(self, x, out)
  local sum, n = K.batchnorm_sum(x)
  sum[#sum + 1] = n
  sum[#sum + 1] = 1 -- counts the processes
  sum = self.sync(sum)
  local processes = table.remove(sum)
  local count = table.remove(sum)
  local mean = {}
  for c = 1, #sum do mean[c] = sum[c] / count end
  local ss = self.sync(K.batchnorm_sqdev(x, mean))
  self.sync_count, self.sync_processes = count, processes
  return K.batchnorm_train_apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum,
                                 self.eps, self.save_mean, self.save_invstd, mean, ss, count, out)
end

-- The parameter gradients come from the summed statistics too, each
-- process adding 1/processes of them (exact for a power of two).
local function synced_backward(self, x, gy, gx)
  local sum_gy, dot = K.batchnorm_backward_reduce(x, gy, self.save_mean)
  local c = #sum_gy
  local both = self.sync(table.move(dot, 1, c, c + 1, sum_gy))
  sum_gy, dot = table.move(both, 1, c, 1, {}), table.move(both, c + 1, 2 * c, 1, {})
  return K.batchnorm_backward_input(x, gy, self.weight, self.save_mean, self.save_invstd, self.grad_weight,
                                    self.grad_bias, sum_gy, dot, self.sync_count, 1 / self.sync_processes, gx)
end

function nn.BatchNorm2d:forward(x)
  local out = same_size(self.output, x)
  if self.training then
    if self.sync then
      self.output = synced_forward(self, x, out)
    else
      self.output = K.batchnorm_train(x, self.weight, self.bias, self.running_mean, self.running_var,
                                      self.momentum, self.eps, self.save_mean, self.save_invstd, out)
    end
    self.num_batches_tracked:add_(1)
    self.forward_trained = true
    self.forward_synced = self.sync ~= nil
  else
    self.output = K.batchnorm_eval(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, out)
    self.forward_trained = false
  end
  return self.output
end

function nn.BatchNorm2d:backward(x, gy)
  local gx
  if self.inplace_backward then
    gx = lpnx.is_tensor(gy) and gy:is_contiguous() and same_size(gy, x) or nil
  else
    gx = same_size(self.grad_input, x)
  end
  if self.forward_trained and self.forward_synced then
    self.grad_input = synced_backward(self, x, gy, gx)
  elseif self.forward_trained then
    self.grad_input = K.batchnorm_backward(x, gy, self.weight, self.save_mean, self.save_invstd,
                                           self.grad_weight, self.grad_bias, gx)
  else
    self.grad_input = K.batchnorm_backward_eval(x, gy, self.weight, self.running_mean, self.running_var,
                                                self.eps, self.grad_weight, self.grad_bias, gx)
  end
  return self.grad_input
end

function nn.BatchNorm2d:extra_repr()
  return tostring(self.c)
end

---------------------------------------------------------------------------
-- ReLU([inplace]): with inplace true (Torch7's nn.ReLU(true), PyTorch's
-- inplace=True), forward rectifies x itself and backward writes the input
-- gradient over gy; use it where nothing else needs x or gy afterwards.
nn.ReLU = class("nn.ReLU", Module)

function nn.ReLU:__init(inplace)
  Module.__init(self)
  self.inplace = inplace == true
end

function nn.ReLU:forward(x)
  if self.inplace then
    self.output = x:relu_()
  else
    local out = same_size(self.output, x)
    self.output = out and out:copy_(x):relu_() or x:relu()
  end
  return self.output
end

function nn.ReLU:backward(_, gy)
  local gx
  if self.inplace then
    gx = lpnx.is_tensor(gy) and gy:is_contiguous() and gy or nil
  else
    gx = same_size(self.grad_input, gy)
  end
  self.grad_input = K.relu_backward(self.output, gy, gx)
  return self.grad_input
end

function nn.ReLU:extra_repr()
  return self.inplace and "inplace" or ""
end

nn.Sigmoid = class("nn.Sigmoid", Module)

function nn.Sigmoid:forward(x)
  local out = same_size(self.output, x)
  self.output = out and out:copy_(x):sigmoid_() or x:sigmoid()
  return self.output
end

function nn.Sigmoid:backward(_, gy)
  self.grad_input = K.sigmoid_backward(self.output, gy, same_size(self.grad_input, gy))
  return self.grad_input
end

nn.Identity = class("nn.Identity", Module)
function nn.Identity:forward(x) self.output = x; return x end
function nn.Identity:backward(_, gy) self.grad_input = gy; return gy end

---------------------------------------------------------------------------
-- MaxPool2d(k, stride=k, padding=0); keeps the argmax for backward.
nn.MaxPool2d = class("nn.MaxPool2d", Module)

function nn.MaxPool2d:__init(k, stride, padding)
  Module.__init(self)
  self.kh, self.kw = pair(k, "MaxPool2d kernel size")
  self.sh, self.sw = pair(stride or k, "MaxPool2d stride")
  self.ph, self.pw = pair(padding or 0, "MaxPool2d padding")
end

function nn.MaxPool2d:forward(x)
  local out, indices
  local n, c, h, w = nchw(x)
  if n then
    local ho, wo = (h + 2 * self.ph - self.kh) // self.sh + 1, (w + 2 * self.pw - self.kw) // self.sw + 1
    out, indices = fits(self.output, n, c, ho, wo), fits(self.indices, n, c, ho, wo)
    if not (out and indices) then out, indices = nil, nil end
  end
  self.output, self.indices = K.maxpool2d_forward(x, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw,
                                                  out, indices)
  return self.output
end

function nn.MaxPool2d:backward(x, gy)
  self.grad_input = K.maxpool2d_backward(gy, self.indices, x:size(3), x:size(4), same_size(self.grad_input, x))
  return self.grad_input
end

function nn.MaxPool2d:extra_repr()
  return ("kernel=%dx%d, stride=%dx%d, padding=%dx%d"):format(self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
end

---------------------------------------------------------------------------
-- Upsample{scale=2 | size={h, w}, mode="nearest"|"bilinear"}
-- (bilinear with align_corners=false, as PyTorch's default).
nn.Upsample = class("nn.Upsample", Module)

function nn.Upsample:__init(opts)
  Module.__init(self)
  opts = opts or {}
  self.mode = opts.mode or "nearest"
  if self.mode ~= "nearest" and self.mode ~= "bilinear" then
    error(("Upsample: mode must be 'nearest' or 'bilinear', got '%s'"):format(tostring(self.mode)), 2)
  end
  if opts.size then
    self.oh, self.ow = pair(opts.size, "Upsample size")
  else
    self.scale = opts.scale or 2
  end
end

function nn.Upsample:output_size(x)
  if self.oh then return self.oh, self.ow end
  return math.floor(x:size(3) * self.scale), math.floor(x:size(4) * self.scale)
end

function nn.Upsample:forward(x)
  local oh, ow = self:output_size(x)
  local out = fits(self.output, x:size(1), x:size(2), oh, ow)
  if self.mode == "nearest" then
    self.output = K.upsample_nearest(x, oh, ow, out)
  else
    self.output = K.upsample_bilinear(x, oh, ow, out)
  end
  return self.output
end

function nn.Upsample:backward(x, gy)
  local gx = same_size(self.grad_input, x)
  if self.mode == "nearest" then
    self.grad_input = K.upsample_nearest_backward(gy, x:size(3), x:size(4), gx)
  else
    self.grad_input = K.upsample_bilinear_backward(gy, x:size(3), x:size(4), gx)
  end
  return self.grad_input
end

---------------------------------------------------------------------------
-- Sequential(m1, m2, ...): children named "0", "1", ... as in PyTorch.
nn.Sequential = class("nn.Sequential", Module)

function nn.Sequential:__init(...)
  Module.__init(self)
  for i, m in ipairs({...}) do self:add(m, i) end
end

function nn.Sequential:add(m, position)
  self:add_module(tostring((position or #self._children + 1) - 1), m)
  return self
end

function nn.Sequential:__len()
  return #self._children
end

function nn.Sequential:get(i)
  return self._children[i].module
end

function nn.Sequential:forward(x)
  self.inputs = self.inputs or {}
  for i, c in ipairs(self._children) do
    self.inputs[i] = x
    x = c.module:forward(x)
  end
  self.output = x
  return x
end

function nn.Sequential:backward(_, gy)
  for i = #self._children, 1, -1 do
    gy = self._children[i].module:backward(self.inputs[i], gy)
  end
  self.grad_input = gy
  return gy
end

-- ModuleList: holds children by index ("0", "1", ...) without a forward.
nn.ModuleList = class("nn.ModuleList", Module)

function nn.ModuleList:__init(list)
  Module.__init(self)
  for i, m in ipairs(list or {}) do self:add_module(tostring(i - 1), m) end
end

function nn.ModuleList:get(i)
  return self._children[i].module
end

function nn.ModuleList:__len()
  return #self._children
end

return nn
