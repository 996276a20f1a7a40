-- Minimal classes: local Conv2d = class("nn.Conv2d", Module); Conv2d(...)
-- calls Conv2d.__init(self, ...). Methods are looked up through parents;
-- torch.type-style names come from the first argument.
local function class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = name
  cls.__tostring = parent and parent.__tostring or nil
  cls._parent = parent
  setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local obj = setmetatable({}, c)
      if c.__init then c.__init(obj, ...) end
      return obj
    end,
  })
  return cls
end

-- Whether obj is an instance of cls or of a class derived from it.
local function isinstance(obj, cls)
  local c = getmetatable(obj)
  while c do
    if c == cls then return true end
    c = rawget(c, "_parent")
  end
  return false
end

return setmetatable({isinstance = isinstance}, {__call = function(_, ...) return class(...) end})
