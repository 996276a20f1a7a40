-- Optimizers, learning-rate schedulers and gradient clipping, with
-- PyTorch's (1.13) update rules and schedules.
--
--   local opt = optim.Adam(params, grads, {lr = 1e-3})   -- params, grads = model:parameters()
--   local sched = optim.CosineAnnealingLR(opt, {T_max = epochs})
--   for each batch: opt:zero_grad(); forward/backward; optim.clip_grad_norm(grads, 1); opt:step()
--   for each epoch: sched:step()
--   optim.by_name["adamw"] is optim.AdamW: the optimizers by name
--
-- Each optimizer updates every parameter in place with one fused C loop
-- (lpnx.kernels.sgd_step / adam_step). opt.lr is a plain field that the
-- schedulers (or the caller) change between steps.
--
-- Checkpoints: opt:state_dict([prefix]) -> tensors, meta, where tensors
-- holds the state buffers as "state.<i>.<name>" (i is the 1-based index
-- into params; names momentum_buffer, exp_avg, exp_avg_sq) and meta holds
-- strings (type, n_params, step, lr, hyperparameters). Both go straight to
-- lpnx.save; opt:load_state_dict(tensors, meta [, prefix]) takes what
-- lpnx.load returns. The tensors are the live buffers, not copies.
local lpnx = require "lpnx"
local class = require "lpnx.class"
local util = require "lpnx.util"

local K = lpnx.kernels
local optim = {}

---------------------------------------------------------------------------
-- Helpers

local shape, same_shape = util.shape, util.same_shape
local check_options, check_number = util.check_options, util.check_number

-- Shortest decimal text that reads back as the same double ("inf", "nan" too).
local function number_text(v)
  local s = ("%.15g"):format(v)
  if tonumber(s) ~= v then s = ("%.17g"):format(v) end
  return s
end

-- A number from a number or from text as number_text writes it; nil otherwise.
local function parse_number(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" then return nil end
  local n = tonumber(v)
  if n then return n end
  local s = v:lower()
  if s == "inf" or s == "+inf" then return math.huge end
  if s == "-inf" then return -math.huge end
  if s == "nan" or s == "-nan" then return 0 / 0 end
  return nil
end

-- Constructors raise at level 4: the caller of Class(...) (the class
-- helper's __call sits between).
local CTOR = 4

local function check_integer(name, what, v, lo, level)
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v) and v == v
                                        and math.abs(v) < 2 ^ 53) then
    error(("%s: %s must be an integer >= %d, got %s"):format(name, what, lo, tostring(v)), level or CTOR)
  end
  v = math.tointeger(v)
  if v < lo then error(("%s: %s must be an integer >= %d, got %d"):format(name, what, lo, v), level or CTOR) end
  return v
end

---------------------------------------------------------------------------
-- Optimizer: what SGD and Adam share (parameter checks, zero_grad,
-- checkpoints). Subclasses set: type (the name in checkpoints),
-- state_names (buffers per parameter), hyper (hyperparameter names and
-- kinds: "number", "boolean" or "pair"), and validate(name, fields, level)
-- which checks the hyperparameter fields (level as error() counts it from
-- validate itself).
local Optimizer = class("optim.Optimizer")
optim.Optimizer = Optimizer

function Optimizer:__init(params, grads)
  local name = self.type
  if type(params) ~= "table" or type(grads) ~= "table" then
    error(("%s: expected params and grads as arrays of tensors (m:parameters()), got %s and %s")
      :format(name, type(params), type(grads)), 4)
  end
  if #params ~= #grads then
    error(("%s: expected as many grads as params, got %d params and %d grads"):format(name, #params, #grads), 4)
  end
  for i, p in ipairs(params) do
    local g = grads[i]
    if not lpnx.is_tensor(p) then error(("%s: param %d is a %s, not a tensor"):format(name, i, type(p)), 4) end
    if not lpnx.is_tensor(g) then error(("%s: grad %d is a %s, not a tensor"):format(name, i, type(g)), 4) end
    if not same_shape(p, g) then
      error(("%s: grad %d has shape %s, expected %s (the shape of param %d)"):format(name, i, shape(g), shape(p), i), 4)
    end
    if not p:is_contiguous() then
      error(("%s: param %d is not contiguous (updates are in place)"):format(name, i), 4)
    end
  end
  self.params, self.grads = params, grads
  self.state = {}      -- state[i] = {buffer name = tensor}, made on the first step
  self.step_count = 0  -- steps taken
end

function Optimizer:zero_grad()
  for _, g in ipairs(self.grads) do g:zero_() end
end

function Optimizer:state_dict(prefix)
  prefix = prefix or ""
  local tensors, meta = {}, {}
  for i = 1, #self.params do
    local st = self.state[i]
    if st then
      for _, key in ipairs(self.state_names) do
        if st[key] then tensors[("%sstate.%d.%s"):format(prefix, i, key)] = st[key] end
      end
    end
  end
  meta[prefix .. "type"] = self.type
  meta[prefix .. "n_params"] = tostring(#self.params)
  meta[prefix .. "step"] = tostring(self.step_count)
  meta[prefix .. "lr"] = number_text(self.lr)
  if self.initial_lr then meta[prefix .. "initial_lr"] = number_text(self.initial_lr) end
  for _, h in ipairs(self.hyper) do
    local v = self[h[1]]
    if h[2] == "pair" then
      meta[prefix .. h[1]] = number_text(v[1]) .. "," .. number_text(v[2])
    elseif h[2] == "boolean" then
      meta[prefix .. h[1]] = tostring(v)
    else
      meta[prefix .. h[1]] = number_text(v)
    end
  end
  return tensors, meta
end

-- Whether step() needs every parameter's state buffers after a first step.
function Optimizer.needs_state(_fields)
  return true
end

-- Restores what state_dict saved: hyperparameters, lr, step count and the
-- buffers (copied). Everything is checked before anything changes.
function Optimizer:load_state_dict(tensors, meta, prefix)
  local name = self.type .. ".load_state_dict"
  prefix = prefix or ""
  if type(tensors) ~= "table" or type(meta) ~= "table" then
    error(("%s: expected tensors and meta tables (as lpnx.load returns), got %s and %s")
      :format(name, type(tensors), type(meta)), 2)
  end
  local function get(key) return meta[prefix .. key] end
  if get("type") ~= self.type then
    error(("%s: expected the state of a %s optimizer, got %s"):format(name, self.type,
      get("type") and ("one of a %s optimizer"):format(tostring(get("type"))) or "no '" .. prefix .. "type' entry"), 2)
  end
  local function number(key)
    local v = parse_number(get(key))
    if v == nil then
      error(("%s: meta '%s%s' is missing or not a number: %s"):format(name, prefix, key, tostring(get(key))), 3)
    end
    return v
  end
  local n = check_integer(name, "n_params", number("n_params"), 0, 3)
  if n ~= #self.params then
    error(("%s: expected the state of %d parameters, got %d"):format(name, #self.params, n), 2)
  end
  local fields = {step_count = check_integer(name, "step", number("step"), 0, 3)}
  fields.lr = check_number(name, "lr", number("lr"), 0, nil, nil, 3)
  if get("initial_lr") ~= nil then fields.initial_lr = number("initial_lr") end
  for _, h in ipairs(self.hyper) do
    local key, kind = h[1], h[2]
    local text = get(key)
    if kind == "pair" then
      local a, b = tostring(text):match("^%s*([^,]+),([^,]+)%s*$")
      a, b = parse_number(a), parse_number(b)
      if not (a and b) then
        error(("%s: meta '%s%s' is missing or not two numbers: %s"):format(name, prefix, key, tostring(text)), 2)
      end
      fields[key] = {a, b}
    elseif kind == "boolean" then
      if text ~= "true" and text ~= "false" then
        error(("%s: meta '%s%s' is missing or not true/false: %s"):format(name, prefix, key, tostring(text)), 2)
      end
      fields[key] = text == "true"
    else
      fields[key] = number(key)
    end
  end
  self.validate(name, fields, 3)
  -- Buffers: only known names of parameters 1..n, each of its parameter's shape.
  local known = {}
  for _, key in ipairs(self.state_names) do known[key] = true end
  local state = {}
  for k, t in pairs(tensors) do
    if type(k) == "string" and k:sub(1, #prefix) == prefix then
      local rest = k:sub(#prefix + 1)
      if rest:match("^state%.") then
        local i, key = rest:match("^state%.(%d+)%.([%w_]+)$")
        i = tonumber(i)
        if not (i and known[key] and i >= 1 and i <= n) then
          error(("%s: unexpected state tensor '%s' (%d parameters; buffers %s)")
            :format(name, k, n, table.concat(self.state_names, ", ")), 2)
        end
        if not lpnx.is_tensor(t) then error(("%s: '%s' is a %s, not a tensor"):format(name, k, type(t)), 2) end
        if not same_shape(t, self.params[i]) then
          error(("%s: '%s' has shape %s, expected %s (the shape of param %d)")
            :format(name, k, shape(t), shape(self.params[i]), i), 2)
        end
        state[i] = state[i] or {}
        state[i][key] = t
      end
    end
  end
  if fields.step_count > 0 and self.needs_state(fields) then
    for i = 1, n do
      for _, key in ipairs(self.state_names) do
        if not (state[i] and state[i][key]) then
          error(("%s: missing state tensor '%sstate.%d.%s' after %d steps")
            :format(name, prefix, i, key, fields.step_count), 2)
        end
      end
    end
  end
  for _, st in pairs(state) do
    for key, t in pairs(st) do st[key] = t:clone() end
  end
  for k, v in pairs(fields) do self[k] = v end
  self.state = state
end

---------------------------------------------------------------------------
-- SGD(params, grads, {lr=, momentum=0, dampening=0, weight_decay=0, nesterov=false})
local SGD = class("optim.SGD", Optimizer)
optim.SGD = SGD
SGD.type = "SGD"
SGD.state_names = {"momentum_buffer"}
SGD.hyper = {{"momentum", "number"}, {"dampening", "number"}, {"weight_decay", "number"},
             {"nesterov", "boolean"}}

function SGD.validate(name, f, level)
  check_number(name, "lr", f.lr, 0, nil, nil, level + 1)
  check_number(name, "momentum", f.momentum, 0, nil, nil, level + 1)
  check_number(name, "dampening", f.dampening, -math.huge, nil, nil, level + 1)
  check_number(name, "weight_decay", f.weight_decay, 0, nil, nil, level + 1)
  if type(f.nesterov) ~= "boolean" then
    error(("%s: nesterov must be a boolean, got %s"):format(name, type(f.nesterov)), level)
  end
  if f.nesterov and (f.momentum <= 0 or f.dampening ~= 0) then
    error(("%s: nesterov momentum requires a momentum and zero dampening"):format(name), level)
  end
end

function SGD.needs_state(f)
  return f.momentum ~= 0
end

function SGD:__init(params, grads, opts)
  opts = check_options(opts, {"lr", "momentum", "dampening", "weight_decay", "nesterov"}, "SGD")
  if opts.lr == nil then error("SGD: lr is required", CTOR - 1) end
  local f = {lr = opts.lr, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
             weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false}
  SGD.validate("SGD", f, CTOR)
  Optimizer.__init(self, params, grads)
  for k, v in pairs(f) do self[k] = v end
end

function SGD:step()
  local use_momentum = self.momentum ~= 0
  for i, p in ipairs(self.params) do
    local buf, first = nil, false
    if use_momentum then
      local st = self.state[i]
      if not (st and st.momentum_buffer) then
        st = {momentum_buffer = lpnx.zeros(p:size())}
        self.state[i] = st
        first = true
      end
      buf = st.momentum_buffer
    end
    K.sgd_step(p, self.grads[i], buf, self.lr, self.momentum, self.dampening, self.weight_decay,
               self.nesterov, first)
  end
  self.step_count = self.step_count + 1
end

---------------------------------------------------------------------------
-- Adam(params, grads, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0})
-- AdamW: the same with decoupled weight decay, weight_decay=1e-2 by default.
local Adam = class("optim.Adam", Optimizer)
optim.Adam = Adam
Adam.type = "Adam"
Adam.decoupled = false
Adam.default_weight_decay = 0
Adam.state_names = {"exp_avg", "exp_avg_sq"}
Adam.hyper = {{"betas", "pair"}, {"eps", "number"}, {"weight_decay", "number"}}

function Adam.validate(name, f, level)
  check_number(name, "lr", f.lr, 0, nil, nil, level + 1)
  if type(f.betas) ~= "table" then
    error(("%s: betas must be a pair {beta1, beta2}, got %s"):format(name, type(f.betas)), level)
  end
  check_number(name, "betas[1]", f.betas[1], 0, 1, true, level + 1)
  check_number(name, "betas[2]", f.betas[2], 0, 1, true, level + 1)
  check_number(name, "eps", f.eps, 0, nil, nil, level + 1)
  check_number(name, "weight_decay", f.weight_decay, 0, nil, nil, level + 1)
end

function Adam:__init(params, grads, opts)
  local name = self.type
  opts = check_options(opts, {"lr", "betas", "eps", "weight_decay"}, name)
  local betas = opts.betas or {0.9, 0.999}
  local f = {lr = opts.lr == nil and 1e-3 or opts.lr, eps = opts.eps == nil and 1e-8 or opts.eps,
             weight_decay = opts.weight_decay == nil and self.default_weight_decay or opts.weight_decay,
             betas = type(betas) == "table" and {betas[1], betas[2]} or betas}
  Adam.validate(name, f, CTOR)
  Optimizer.__init(self, params, grads)
  for k, v in pairs(f) do self[k] = v end
end

function Adam:step()
  local step = self.step_count + 1
  for i, p in ipairs(self.params) do
    local st = self.state[i]
    if not st then
      st = {exp_avg = lpnx.zeros(p:size()), exp_avg_sq = lpnx.zeros(p:size())}
      self.state[i] = st
    end
    K.adam_step(p, self.grads[i], st.exp_avg, st.exp_avg_sq, step, self.lr, self.betas[1], self.betas[2],
                self.eps, self.weight_decay, self.decoupled)
  end
  self.step_count = step
end

local AdamW = class("optim.AdamW", Adam)
optim.AdamW = AdamW
AdamW.type = "AdamW"
AdamW.decoupled = true
AdamW.default_weight_decay = 1e-2

-- The optimizers by name (what lpnx.train's optimizer option and
-- train.lua's --optimizer take): name -> class, called as
-- Class(params, grads, {lr =, ...}).
optim.by_name = {sgd = SGD, adam = Adam, adamw = AdamW}

---------------------------------------------------------------------------
-- Learning-rate schedulers. Each holds its optimizer and sets opt.lr;
-- :get_lr() is the rate it last set (get_last_lr() the same in a table, as
-- PyTorch returns it); state_dict() / load_state_dict() use plain tables of
-- numbers and strings (numbers may come back as text, "inf" included).

local function check_optimizer(name, opt)
  if type(opt) ~= "table" or type(opt.lr) ~= "number" then
    error(("%s: expected an optimizer (a table with a number field lr), got %s"):format(name, type(opt)), CTOR)
  end
end

-- Shared by the schedulers: the fields listed in self.fields (name, kind)
-- go into state_dict and come back from load_state_dict.
local Scheduler = class("optim.Scheduler")
optim.Scheduler = Scheduler

function Scheduler:get_lr() return self.last_lr end
function Scheduler:get_last_lr() return {self.last_lr} end

function Scheduler:state_dict()
  local sd = {type = self.type}
  for _, f in ipairs(self.fields) do sd[f[1]] = self[f[1]] end
  return sd
end

function Scheduler:load_state_dict(sd)
  local name = self.type .. ".load_state_dict"
  if type(sd) ~= "table" then error(("%s: expected a table, got %s"):format(name, type(sd)), 2) end
  if sd.type ~= self.type then
    error(("%s: expected the state of a %s, got %s"):format(name, self.type, tostring(sd.type)), 2)
  end
  local values = {}
  for _, f in ipairs(self.fields) do
    local key, kind = f[1], f[2]
    local v = sd[key]
    if kind == "string" then
      if type(v) ~= "string" then error(("%s: '%s' must be a string, got %s"):format(name, key, type(v)), 2) end
    else
      v = parse_number(v)
      if v == nil then error(("%s: '%s' must be a number, got %s"):format(name, key, tostring(sd[key])), 2) end
      if kind == "integer" then v = check_integer(name, key, v, -1, 3) end
    end
    values[key] = v
  end
  for k, v in pairs(values) do self[k] = v end
end

local function attach(self, opt)
  self.optimizer = opt
  if opt.initial_lr == nil then opt.initial_lr = opt.lr end
  self.base_lr = opt.initial_lr
  self.last_epoch = -1
end

-- StepLR(opt, {step_size, gamma=0.1}): lr *= gamma every step_size steps.
local StepLR = class("optim.StepLR", Scheduler)
optim.StepLR = StepLR
StepLR.type = "StepLR"
StepLR.fields = {{"step_size", "integer"}, {"gamma", "number"}, {"base_lr", "number"},
                 {"last_epoch", "integer"}, {"last_lr", "number"}}

function StepLR:__init(opt, opts)
  check_optimizer("StepLR", opt)
  opts = check_options(opts, {"step_size", "gamma"}, "StepLR")
  self.step_size = check_integer("StepLR", "step_size", opts.step_size, 1)
  self.gamma = check_number("StepLR", "gamma", opts.gamma == nil and 0.1 or opts.gamma, 0)
  attach(self, opt)
  self:step()
end

-- PyTorch's chainable form: the current lr is multiplied at each boundary.
function StepLR:step()
  self.last_epoch = self.last_epoch + 1
  local e = self.last_epoch
  if e ~= 0 and e % self.step_size == 0 then self.optimizer.lr = self.optimizer.lr * self.gamma end
  self.last_lr = self.optimizer.lr
end

-- CosineAnnealingLR(opt, {T_max, eta_min=0}), closed form:
-- lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2.
local CosineAnnealingLR = class("optim.CosineAnnealingLR", Scheduler)
optim.CosineAnnealingLR = CosineAnnealingLR
CosineAnnealingLR.type = "CosineAnnealingLR"
CosineAnnealingLR.fields = {{"T_max", "integer"}, {"eta_min", "number"}, {"base_lr", "number"},
                            {"last_epoch", "integer"}, {"last_lr", "number"}}

function CosineAnnealingLR:__init(opt, opts)
  check_optimizer("CosineAnnealingLR", opt)
  opts = check_options(opts, {"T_max", "eta_min"}, "CosineAnnealingLR")
  self.T_max = check_integer("CosineAnnealingLR", "T_max", opts.T_max, 1)
  self.eta_min = check_number("CosineAnnealingLR", "eta_min", opts.eta_min or 0, 0)
  attach(self, opt)
  self:step()
end

function CosineAnnealingLR:step()
  self.last_epoch = self.last_epoch + 1
  local lr = self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
  self.optimizer.lr = lr
  self.last_lr = lr
end

-- ReduceLROnPlateau(opt, {mode="min", factor=0.1, patience=10, threshold=1e-4,
-- threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8}): :step(metric)
-- once per epoch; after more than patience epochs without improvement the
-- lr is multiplied by factor (not below min_lr; changes smaller than eps
-- are skipped), then cooldown epochs pass before counting again.
local ReduceLROnPlateau = class("optim.ReduceLROnPlateau", Scheduler)
optim.ReduceLROnPlateau = ReduceLROnPlateau
ReduceLROnPlateau.type = "ReduceLROnPlateau"
ReduceLROnPlateau.fields = {{"mode", "string"}, {"factor", "number"}, {"patience", "integer"},
                            {"threshold", "number"}, {"threshold_mode", "string"}, {"cooldown", "integer"},
                            {"min_lr", "number"}, {"eps", "number"}, {"best", "number"},
                            {"num_bad_epochs", "integer"}, {"cooldown_counter", "integer"},
                            {"last_epoch", "integer"}, {"last_lr", "number"}}

function ReduceLROnPlateau:__init(opt, opts)
  local name = "ReduceLROnPlateau"
  check_optimizer(name, opt)
  opts = check_options(opts, {"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr",
                              "eps"}, name)
  self.mode = opts.mode or "min"
  if self.mode ~= "min" and self.mode ~= "max" then
    error(("%s: mode must be \"min\" or \"max\", got %s"):format(name, tostring(self.mode)), CTOR - 1)
  end
  self.threshold_mode = opts.threshold_mode or "rel"
  if self.threshold_mode ~= "rel" and self.threshold_mode ~= "abs" then
    error(("%s: threshold_mode must be \"rel\" or \"abs\", got %s"):format(name, tostring(self.threshold_mode)),
          CTOR - 1)
  end
  self.factor = check_number(name, "factor", opts.factor == nil and 0.1 or opts.factor, 0, 1, true)
  self.patience = check_integer(name, "patience", opts.patience == nil and 10 or opts.patience, 0)
  self.threshold = check_number(name, "threshold", opts.threshold == nil and 1e-4 or opts.threshold, 0)
  self.cooldown = check_integer(name, "cooldown", opts.cooldown or 0, 0)
  self.min_lr = check_number(name, "min_lr", opts.min_lr or 0, 0)
  self.eps = check_number(name, "eps", opts.eps == nil and 1e-8 or opts.eps, 0)
  self.optimizer = opt
  self.best = self.mode == "min" and math.huge or -math.huge
  self.num_bad_epochs = 0
  self.cooldown_counter = 0
  self.last_epoch = 0
  self.last_lr = opt.lr
end

-- PyTorch's test: better than best by more than threshold (relative: a
-- fraction of best; absolute: a difference).
function ReduceLROnPlateau:is_better(a)
  local best, th = self.best, self.threshold
  if self.mode == "min" then
    if self.threshold_mode == "rel" then return a < best * (1 - th) end
    return a < best - th
  end
  if self.threshold_mode == "rel" then return a > best * (1 + th) end
  return a > best + th
end

function ReduceLROnPlateau:step(metric)
  if type(metric) ~= "number" then
    error(("ReduceLROnPlateau: step expects the monitored metric as a number, got %s"):format(type(metric)), 2)
  end
  self.last_epoch = self.last_epoch + 1
  if self:is_better(metric) then
    self.best = metric
    self.num_bad_epochs = 0
  else
    self.num_bad_epochs = self.num_bad_epochs + 1
  end
  if self.cooldown_counter > 0 then
    self.cooldown_counter = self.cooldown_counter - 1
    self.num_bad_epochs = 0
  end
  if self.num_bad_epochs > self.patience then
    local old = self.optimizer.lr
    local new = math.max(old * self.factor, self.min_lr)
    if old - new > self.eps then self.optimizer.lr = new end
    self.cooldown_counter = self.cooldown
    self.num_bad_epochs = 0
  end
  self.last_lr = self.optimizer.lr
end

---------------------------------------------------------------------------
-- clip_grad_norm(grads, max_norm) -> total_norm: the L2 norm over every
-- gradient together; when it exceeds max_norm (PyTorch's test:
-- max_norm / (total + 1e-6) < 1) every gradient is scaled by that ratio.
-- A non-finite norm is returned as it is and nothing is scaled.
function optim.clip_grad_norm(grads, max_norm)
  if type(grads) ~= "table" then
    error(("clip_grad_norm: expected an array of tensors, got %s"):format(type(grads)), 2)
  end
  check_number("clip_grad_norm", "max_norm", max_norm, 0, nil, nil, 3)
  local sum = 0
  for i, g in ipairs(grads) do
    if not lpnx.is_tensor(g) then error(("clip_grad_norm: grad %d is a %s, not a tensor"):format(i, type(g)), 2) end
    sum = sum + K.sum_squares(g)
  end
  local total = math.sqrt(sum)
  if total ~= total or total == math.huge then return total end
  local coef = max_norm / (total + 1e-6)
  if coef < 1 then
    for _, g in ipairs(grads) do g:mul_(coef) end
  end
  return total
end

return optim
