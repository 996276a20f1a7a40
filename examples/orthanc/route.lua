-- Orthanc routing script: every chest radiograph Orthanc stores is sent to
-- the lpnx node; what the node sends back stays in Orthanc.
--
-- Load it with "LuaScripts": ["route.lua"] in Orthanc's configuration,
-- beside a DicomModalities entry named "lpnx" for the node (see
-- orthanc.json). Orthanc calls OnStoredInstance once per stored instance.

-- The node's AE title: instances it sends (its results) are never routed
-- back to it.
local NODE_AET = "LPNX"
-- The DicomModalities entry of the node.
local NODE = "lpnx"

-- Image classes the node reads: Computed Radiography, Digital X-Ray (for
-- presentation and for processing), Secondary Capture.
local ROUTED = {
  ["1.2.840.10008.5.1.4.1.1.1"] = true,      -- CR Image Storage
  ["1.2.840.10008.5.1.4.1.1.1.1"] = true,    -- Digital X-Ray Image Storage - For Presentation
  ["1.2.840.10008.5.1.4.1.1.1.1.1"] = true,  -- Digital X-Ray Image Storage - For Processing
  ["1.2.840.10008.5.1.4.1.1.7"] = true,      -- Secondary Capture Image Storage
}

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin ~= nil and origin["RequestOrigin"] == "DicomProtocol" and origin["RemoteAet"] == NODE_AET then
    return -- a result of the node
  end
  local class = tags["SOPClassUID"]
  if not ROUTED[class] then return end
  if class == "1.2.840.10008.5.1.4.1.1.7" and tags["Modality"] ~= "CR" and tags["Modality"] ~= "DX"
     and tags["Modality"] ~= "OT" then
    return -- a secondary capture of something else than a radiograph
  end
  local ok, err = pcall(SendToModality, instanceId, NODE)
  if not ok then
    print("lpnx route: sending " .. instanceId .. " to " .. NODE .. " failed: " .. tostring(err))
  end
end
