-- Orthanc routing script: every chest radiograph Orthanc stores is sent to
-- the lpnx node; what the node sends back stays in Orthanc.
--
-- Load it with "LuaScripts": ["route.lua"] in Orthanc's configuration,
-- beside a DicomModalities entry named "lpnx" for the node (see
-- orthanc.json). Orthanc calls OnStoredInstance once per stored instance.
--
-- Each instance goes to the node as an asynchronous store job. A node that
-- is down or restarting fails the job; OnJobFailure has it resubmitted
-- RETRY_SECONDS later, up to RETRIES times (an hour), so nothing routed
-- while the node was away is lost. The wait must not block Orthanc's Lua
-- engine (storing would stall behind it), so the resubmission is a
-- background curl to Orthanc's own REST API on this host: with
-- "AuthenticationEnabled", put a user's credentials into RESUBMIT below.
-- Jobs that still fail are listed by GET /jobs.

-- The node's AE title: instances it sends (its results) are never routed
-- back to it.
local NODE_AET = "LPNX"
-- The DicomModalities entry of the node.
local NODE = "lpnx"
local RETRY_SECONDS = 5
local RETRIES = 720

-- Image classes the node reads: Computed Radiography, Digital X-Ray (for
-- presentation and for processing), Secondary Capture.
local ROUTED = {
  ["1.2.840.10008.5.1.4.1.1.1"] = true,      -- CR Image Storage
  ["1.2.840.10008.5.1.4.1.1.1.1"] = true,    -- Digital X-Ray Image Storage - For Presentation
  ["1.2.840.10008.5.1.4.1.1.1.1.1"] = true,  -- Digital X-Ray Image Storage - For Processing
  ["1.2.840.10008.5.1.4.1.1.7"] = true,      -- Secondary Capture Image Storage
}
local RADIOGRAPH = {CR = true, DX = true, OT = true}

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin ~= nil and origin["RequestOrigin"] == "DicomProtocol" and origin["RemoteAet"] == NODE_AET then
    return -- a result of the node
  end
  local class = tags["SOPClassUID"]
  if not ROUTED[class] then return end
  if class == "1.2.840.10008.5.1.4.1.1.7" and not RADIOGRAPH[tags["Modality"]] then
    return -- a secondary capture of something else than a radiograph
  end
  RestApiPost("/modalities/" .. NODE .. "/store",
              DumpJson({Resources = {instanceId}, Asynchronous = true}, true))
end

local attempts = {}
local HTTP_PORT = GetOrthancConfiguration()["HttpPort"] or 8042
local RESUBMIT = "(sleep %d; curl -sf -X POST http://127.0.0.1:%d/jobs/%s/resubmit > /dev/null 2>&1) &"

function OnJobFailure(jobId)
  local job = ParseJson(RestApiGet("/jobs/" .. jobId))
  if job["Type"] ~= "DicomModalityStore" or job["Content"]["RemoteAet"] ~= NODE_AET then return end
  local n = (attempts[jobId] or 0) + 1
  if n > RETRIES then
    print("lpnx route: giving up on job " .. jobId .. " after " .. RETRIES .. " attempts")
    attempts[jobId] = nil
    return
  end
  attempts[jobId] = n
  os.execute(RESUBMIT:format(RETRY_SECONDS, HTTP_PORT, jobId:gsub("[^%w-]", "")))
end

function OnJobSuccess(jobId)
  attempts[jobId] = nil
end
