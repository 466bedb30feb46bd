-- Loads a Prosody/Metronome config snippet in a sandbox and prints what it sets, one
-- "section<TAB>key<TAB>value" line each, the way the servers' config loaders see it:
-- `Component "host" "module"` opens a section; plain assignments set options in it.
-- Usage: lua5.4 lua_config_dump.lua FILE
local path = assert(arg[1], "usage: lua_config_dump.lua FILE")
local section = "global"
local out = {}

local function show(v)
  if type(v) == "table" then
    local parts = {}
    for _, x in ipairs(v) do parts[#parts + 1] = tostring(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end

local env = setmetatable({}, {
  __index = function(_, name)
    if name == "Component" then
      return function(host)
        section = "Component " .. host
        return function(module_name) out[#out + 1] = section .. "\t_module\t" .. module_name end
      end
    elseif name == "VirtualHost" or name == "Host" then
      return function(host) section = "VirtualHost " .. host end
    elseif name == "Include" then
      return function() end
    end
    return nil
  end,
  __newindex = function(_, key, value)
    out[#out + 1] = section .. "\t" .. key .. "\t" .. show(value)
  end,
})

local chunk = assert(loadfile(path, "t", env))
chunk()
for _, line in ipairs(out) do print(line) end
