-- The DICOM node (examples/serve.lua) beside a real PACS: a private Orthanc
-- routes the X-rays a modality (storescu) sends it to the node, and holds
-- the results the node sends back. Faults: kill -9 at any moment, the PACS
-- down, bad data on the wire, unknown senders, images that are no chest.
local lpnx = require "lpnx"
local h = require "spec.support.helpers"
local pacs = require "spec.support.pacs"
local serve = require "lpnx.serve"

local q, sh, wait_until, events = pacs.q, pacs.sh, pacs.wait_until, pacs.events
local sys_sleep = lpnx.sys.sleep

local function tiny_unet()
  return lpnx.models.unet{encoder = "resnet18", encoder_width = 4, decoder_channels = {8, 8, 8, 4, 4}}
end

describe("the DICOM node beside Orthanc", function()
  local dir, model, images, threshold, expected, positives

  setup(function()
    dir = h.tmpdir()
    lpnx.synth.write{out = dir .. "/data", count = 8, size = 256, seed = 11, positive = 0.5, test_fraction = 0}
    images = lpnx.data.list_images(dir .. "/data/dicom-images-train")
    lpnx.manual_seed(5)
    model = dir .. "/model.safetensors"
    lpnx.models.save(model, tiny_unet(), {input_size = 64})
    -- a threshold between the images' highest probabilities: some are found positive, some not
    local s = lpnx.predict.run{model = model, inputs = images, out = dir .. "/probe", threshold = 0.5,
                               write_masks = false, write_overlays = false, batch = 1}
    local maxima = {}
    for i, r in ipairs(s.results) do maxima[i] = r.max_probability end
    table.sort(maxima)
    threshold = (maxima[4] + maxima[5]) / 2
    -- what predict.lua gives for the same files
    local out, code = sh(("lua5.4 %s/examples/predict.lua --model %s --data %s --out %s --threshold %.9g --batch 1 "
                          .. "--no-overlays --quiet"):format(pacs.ROOT, q(model), q(dir .. "/data/dicom-images-train"),
                                                              q(dir .. "/reference"), threshold))
    assert(code == 0, out)
    expected, positives = {}, 0
    for _, path in ipairs(images) do
      local _, meta = lpnx.dicom.read(path)
      local mask = lpnx.png.read(("%s/reference/masks/%s.png"):format(dir, lpnx.data.image_id(path)))
      expected[meta.sop_instance_uid] = mask
      if mask:max() > 0 then positives = positives + 1 end
    end
    assert(positives > 0 and positives < #images, "the threshold should split the images")
  end)
  teardown(function() h.rmdir(dir) end)

  -- A fresh Orthanc and node under root; returns them and a stop function.
  local function start(root, args)
    assert(os.execute("mkdir -p " .. q(root)))
    local node = {port = pacs.free_port(), spool = root .. "/spool", log = root .. "/node.log", model = model}
    local o = pacs.orthanc{dir = root .. "/orthanc", node_port = node.port}
    node.destination = ("ORTHANC@127.0.0.1:%d"):format(o.dicom)
    node.args = {"--threshold", ("%.9g"):format(threshold)}
    for _, a in ipairs(args or {}) do node.args[#node.args + 1] = a end
    local ok, pid = pcall(pacs.node, node)
    if not ok then
      o:stop()
      error(pid)
    end
    node.pid = pid
    return o, node
  end

  -- A failure's message with the end of the node's log, for a reader of CI output.
  local function failure(err, log)
    local lines = {}
    for line in pacs.read(log):gmatch("[^\n]+") do lines[#lines + 1] = line end
    return tostring(err) .. "\n--- the node's log, last lines ---\n"
           .. table.concat(lines, "\n", math.max(1, #lines - 40), #lines)
  end

  local function stop_all(o, node)
    if node and node.pid then pacs.stop(node.pid) end
    if o then o:stop() end
  end

  -- Waits until the node has nothing left to do and Orthanc holds n
  -- instances of modality; returns Orthanc's instances of it.
  local function settled(o, node, counts)
    wait_until(function()
      for modality, n in pairs(counts) do
        if o:count(modality) < n then return false end
      end
      local st = serve.status(node.spool)
      return st.queue == 0 and st.backlog == 0
    end, 120, 0.25)
    local st = serve.status(node.spool)
    assert.are.same({0, 0}, {st.queue, st.backlog})
    for modality, n in pairs(counts) do
      assert.are.equal(n, o:count(modality), modality .. " instances at Orthanc")
    end
  end

  -- Each SEG at Orthanc refers to one source and decodes to predict.lua's mask of it.
  local function check_segs(o, root)
    local segs = o:find({Modality = "SEG"})
    local seen = {}
    for _, inst in ipairs(segs) do
      local path = o:download(inst.ID, ("%s/%s.dcm"):format(root, inst.ID))
      local mask, info = lpnx.dicom.read_seg(path)
      local source = info.references[1].sop_instance_uid
      assert.is_nil(seen[source], "two SEGs of one source")
      seen[source] = true
      local want = assert(expected[source], "a SEG of an unknown source")
      assert.are.equal(1, mask:size(1))
      assert.is_true(mask[1]:equal(want[1]), "the SEG's mask differs from predict.lua's")
    end
    return seen
  end

  it("routes every X-ray through the node and back: a SEG per positive, an SR per image, "
     .. "an overlay per positive, nothing routed back", function()
    local root = dir .. "/roundtrip"
    local o, node = start(root, {"--sr", "--overlay", "--workers", "2", "--threads", "1"})
    local ok, err = pcall(function()
      local out, code = pacs.storescu(o.dicom, images)
      assert.are.equal(0, code, out)
      settled(o, node, {SEG = positives, SR = #images, OT = positives, CR = #images})
      local seen = check_segs(o, root)
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.are.equal(positives, n)
      -- the SR says what was found, and refers to its image
      local srs = o:find({Modality = "SR"})
      local found = 0
      for _, inst in ipairs(srs) do
        local text = sh(pacs.PLAIN .. "dsrdump " .. q(o:download(inst.ID, root .. "/sr.dcm")))
        assert.matches("Pneumothorax", text, 1, true)
        if text:match("Present") then found = found + 1 end
      end
      assert.are.equal(positives, found)
      -- no loop: the node received the X-rays and nothing else (a retried
      -- routing job may bring one twice), and predicted each
      local sources = {}
      for sop in pairs(expected) do sources[sop] = true end
      local predicted = {}
      for _, line in ipairs(events(node.log, "received")) do
        assert.is_true(sources[line:match(" sop=(%S+)")] ~= nil, "the node received what is no X-ray: " .. line)
      end
      for _, line in ipairs(events(node.log, "processed")) do predicted[line:match(" sop=(%S+)")] = true end
      for sop in pairs(sources) do assert.is_true(predicted[sop], sop .. " was not predicted") end
      assert.are.equal(0, #events(node.log, "skipped"))
      -- the workers share by arrival number: worker k takes the seqs equal to k - 1 modulo 2
      local by = {0, 0}
      for _, line in ipairs(events(node.log, "processed")) do
        local seq, k = tonumber(line:match(" seq=(%d+)")), tonumber(line:match(" by=worker(%d)$"))
        assert.are.equal(k - 1, seq % 2, line)
        by[k] = by[k] + 1
      end
      assert.is_true(by[1] > 0 and by[2] > 0)
      -- sent again by the PACS: processed again, the same objects at the PACS
      local all = o:find({Modality = "CR"})
      local ids = {}
      for i, inst in ipairs(all) do ids[i] = '"' .. inst.ID .. '"' end
      local first = #events(node.log, "sent")
      assert(o:post("/modalities/lpnx/store", "[" .. table.concat(ids, ",") .. "]"))
      wait_until(function() return #events(node.log, "sent") >= first + #images end, 120)
      settled(o, node, {SEG = positives, SR = #images, OT = positives, CR = #images})
      -- the status file (merged once a second) counts what the log says
      local function counted()
        local c = serve.status(node.spool).counts or {}
        return c.processed == #events(node.log, "processed") and c.sent == #events(node.log, "sent")
               and c.received == #events(node.log, "received")
      end
      wait_until(counted, 30)
      assert.is_true(counted(), "status.json: " .. pacs.read(node.spool .. "/status.json"))
      assert.is_true(#events(node.log, "sent") >= 2 * #images)
      assert.are.equal(0, #events(node.log, "restart"))
    end)
    stop_all(o, node)
    assert(ok, failure(err, node and node.log or (root .. "/node.log")))
    assert.matches("stopped", pacs.read(node.log))
  end)

  it("killed with -9 while receiving, predicting and sending, then started again: every result exactly once",
     function()
    local root = dir .. "/kills"
    local o, node = start(root, {"--sr"})
    local ok, err = pcall(function()
      -- while receiving: a large instance sent straight to the node, killed mid-transfer
      -- (a CT: had it arrived whole after all, it would be skipped, not predicted)
      local big = root .. "/big.dcm"
      lpnx.dicom.write(big, lpnx.full({1, 4000, 4000}, 0.5), {modality = "CT"}, {jpeg = false})
      local send = (pacs.PLAIN .. "storescu -aet ORTHANC -aec LPNX 127.0.0.1 %d %s"):format(node.port, q(big))
      local sender = pacs.spawn(send, root .. "/big.out")
      local incoming = node.spool .. "/incoming"
      local caught = wait_until(function()
        for _, name in ipairs(lpnx.fs.list(incoming)) do
          if name:sub(1, 1) == "." then return true end
        end
      end, 30, 0.002)
      pacs.kill9(node.pid)
      pacs.stop(sender)
      assert.is_true(caught, "the transfer was not seen under way")
      node.pid = pacs.node(node)
      for _, name in ipairs(lpnx.fs.list(incoming)) do -- the half-written instance is gone
        assert.are_not.equal(".", name:sub(1, 1), name)
      end
      -- the X-rays arrive at the PACS while the node is down: the routing
      -- script's jobs fail and are resubmitted until it is back
      pacs.kill9(node.pid)
      local out, code = pacs.storescu(o.dicom, images)
      assert.are.equal(0, code, out)
      assert(wait_until(function() return pacs.read(o.log):match("connecting to AET \"LPNX\"") end, 30))
      sys_sleep(1)
      node.pid = pacs.node(node)
      -- and kills while they are predicted and sent
      for _, stage in ipairs {"processed", "sent"} do
        local before = #events(node.log, stage)
        wait_until(function() return #events(node.log, stage) > before end, 60, 0.01)
        pacs.kill9(node.pid)
        node.pid = pacs.node(node)
      end
      settled(o, node, {SEG = positives, SR = #images, CR = #images})
      check_segs(o, root)
    end)
    stop_all(o, node)
    assert(ok, failure(err, node and node.log or (root .. "/node.log")))
  end)

  it("keeps results while the PACS is down and delivers the backlog when it is up, across a restart", function()
    local root = dir .. "/down"
    local o, node = start(root, {})
    local ok, err = pcall(function()
      o:stop()
      -- the modality sends straight to the node meanwhile
      local out, code = pacs.storescu(node.port, images, {aet = "ORTHANC", called = "LPNX"})
      assert.are.equal(0, code, out)
      wait_until(function() return #events(node.log, "send_failed") >= 2 end, 60)
      assert.are.equal(0, #events(node.log, "sent"))
      assert.is_true(#events(node.log, "retry") >= 1)
      pacs.stop(node.pid)
      node.pid = pacs.node(node)
      assert.is_true(serve.status(node.spool).backlog >= 1, "no result waits in the spool")
      o.pid = pacs.spawn(pacs.PLAIN .. "Orthanc " .. q(o.dir .. "/orthanc.json"), o.log)
      wait_until(function() return o:get("/system") end, 30)
      settled(o, node, {SEG = positives})
      check_segs(o, root)
    end)
    stop_all(o, node)
    assert(ok, failure(err, node and node.log or (root .. "/node.log")))
  end)

  it("answers bad input with a failure or a skip and keeps serving", function()
    local root = dir .. "/bad"
    local o, node = start(root, {"--allow", "ORTHANC", "--allow", "MODALITY@127.0.0.1", "--empty-seg"})
    local ok, err = pcall(function()
      -- an unknown calling AE title is rejected at association time
      local _, refused = pacs.storescu(node.port, {images[1]}, {aet = "INTRUDER", called = "LPNX"})
      assert.are_not.equal(0, refused)
      -- (the receiver logs the refusal as the association ends: wait for the line)
      wait_until(function() return #events(node.log, "rejected") >= 1 end, 30)
      assert.matches("INTRUDER", events(node.log, "rejected")[1] or "", 1, true)
      -- garbage bytes on the port
      sh((pacs.PLAIN .. "bash -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" > /dev/tcp/127.0.0.1/%d'"):format(node.port))
      -- a CT and a lateral view: accepted, skipped with the reason
      local ct, lateral = root .. "/ct.dcm", root .. "/lateral.dcm"
      lpnx.dicom.write(ct, lpnx.full({1, 64, 64}, 0.3), {modality = "CT", body_part_examined = "CHEST"})
      lpnx.dicom.write(lateral, lpnx.full({1, 64, 64}, 0.3), {modality = "CR", body_part_examined = "CHEST",
                                                              view_position = "LL"})
      -- pixel data shorter than its rows and columns say
      local short = root .. "/short.dcm"
      lpnx.dicom.write(short, lpnx.full({1, 64, 64}, 0.3), {modality = "CR", body_part_examined = "CHEST"},
                       {jpeg = false})
      local _, modified = sh((pacs.PLAIN .. "dcmodify -nb -m Rows=640 %s"):format(q(short)))
      assert.are.equal(0, modified)
      local out, code = pacs.storescu(node.port, {ct, lateral, short}, {aet = "MODALITY", called = "LPNX"})
      assert.are.equal(0, code, out)
      wait_until(function() return #events(node.log, "skipped") >= 3 end, 60)
      local skipped = table.concat(events(node.log, "skipped"), "\n")
      assert.matches("Modality CT", skipped, 1, true)
      assert.matches("lateral", skipped, 1, true)
      assert.matches("cannot be read", skipped, 1, true)
      -- and the node still serves: the X-rays through the PACS
      out, code = pacs.storescu(o.dicom, images)
      assert.are.equal(0, code, out)
      settled(o, node, {SEG = #images}) -- --empty-seg: a SEG for every image, empty where nothing was found
      check_segs(o, root)
      assert.are.equal(0, serve.status(node.spool).failed_instances)
    end)
    stop_all(o, node)
    assert(ok, failure(err, node and node.log or (root .. "/node.log")))
  end)

  it("parks the results a PACS refuses again and again, and an image whose results cannot be written", function()
    local root = dir .. "/refused"
    local mnt = root .. "/small"
    assert(os.execute("mkdir -p " .. q(mnt)))
    local out, code = sh(pacs.PLAIN .. "mount -t tmpfs -o size=256k tmpfs " .. q(mnt))
    assert.are.equal(0, code, out)
    local dest, pid
    local ok, err = pcall(function()
      -- a PACS whose disk is full: every C-STORE is answered 0xA700
      assert(os.execute("mkdir " .. q(mnt .. "/spool")))
      sh(pacs.PLAIN .. "dd if=/dev/zero of=" .. q(mnt .. "/filler") .. " bs=4k")
      dest = lpnx.net.listen{aet = "PACS", port = 0, host = "127.0.0.1", spool = mnt .. "/spool"}
      local port = pacs.free_port()
      local spool, log = root .. "/spool", root .. "/node.log"
      local script = root .. "/node.lua"
      local f = assert(io.open(script, "w"))
      f:write(([[
        local serve = require "lpnx.serve"
        os.exit(serve.run{model = %q, spool = %q, destination = "PACS@127.0.0.1:%d", port = %d,
                          host = "127.0.0.1", threshold = 0, log = %q, backoff = {0.05, 0.1}, refusals = 2})
      ]]):format(model, spool, dest:port(), port, log))
      f:close()
      pid = pacs.spawn("lua5.4 " .. q(script), root .. "/node.out")
      assert(wait_until(function() return #events(log, "started") > 0 end, 60), pacs.read(root .. "/node.out"))
      out, code = pacs.storescu(port, {images[1], images[2]}, {aet = "MODALITY", called = "LPNX"})
      assert.are.equal(0, code, out)
      assert(wait_until(function() return #events(log, "failed") >= 2 end, 60), pacs.read(log))
      local failed = table.concat(events(log, "failed"), "\n")
      assert.matches("the destination refused its results 2 times", failed, 1, true)
      assert.matches("0xA700", table.concat(events(log, "send_failed"), "\n"), 1, true)
      local st = serve.status(spool)
      assert.are.same({0, 0, 2}, {st.queue, st.backlog, st.failed_instances})
      assert.are.equal(4, #lpnx.fs.list(spool .. "/failed")) -- each instance and its results
      -- results that cannot be written (here work/ is a file): tried again after 2 s and 4 s, then parked
      lpnx.fs.remove_tree(spool .. "/work")
      assert(io.open(spool .. "/work", "w")):close()
      out, code = pacs.storescu(port, {images[3]}, {aet = "MODALITY", called = "LPNX"})
      assert.are.equal(0, code, out)
      assert(wait_until(function() return #events(log, "failed") >= 3 end, 60), pacs.read(log))
      local errors = events(log, "error")
      assert.are.equal(2, #errors)
      assert.matches("attempt=1 retry_in_seconds=2", errors[1], 1, true)
      assert.matches("attempt=2 retry_in_seconds=4", errors[2], 1, true)
      assert.matches("attempts=3", events(log, "failed")[3], 1, true)
      assert.are.equal(3, serve.status(spool).failed_instances)
      assert.are.same({0, 0}, {serve.status(spool).queue, serve.status(spool).backlog})
    end)
    if pid then pacs.stop(pid) end
    if dest then dest:close() end
    sh(pacs.PLAIN .. "umount " .. q(mnt))
    assert(ok, failure(err, root .. "/node.log"))
  end)

  it("serve.lua: stops on SIGTERM with status 0, and refuses bad flags with status 2", function()
    local root = dir .. "/cli"
    local base = ("lua5.4 %s/examples/serve.lua --model %s --spool %s --host 127.0.0.1"):format(
      pacs.ROOT, q(model), q(root .. "/spool"))
    local out, code = sh(("timeout --preserve-status -s TERM 5 %s --port %d --destination PACS@127.0.0.1:9")
                         :format(base, pacs.free_port()))
    assert.are.equal(0, code, out)
    assert.matches("stopped by=node", out, 1, true)
    out, code = sh(base .. " --destination nonsense")
    assert.are.equal(2, code, out)
    assert.matches("--destination", out, 1, true)
    assert.matches("expected AET@HOST:PORT", out, 1, true)
    out, code = sh(base .. " --destination PACS@127.0.0.1:9 --port 0")
    assert.are.equal(2, code, out)
    out, code = sh(("lua5.4 %s/examples/serve.lua --help"):format(pacs.ROOT))
    assert.are.equal(0, code, out)
    for _, flag in ipairs {"--model", "--aet", "--port", "--spool", "--destination", "--allow", "--tta", "--top",
                           "--min-area", "--bottom", "--threshold", "--sr", "--overlay", "--empty-seg", "--workers",
                           "--log", "--status"} do
      assert.matches(flag, out, 1, true)
    end
    out, code = sh(("lua5.4 %s/examples/serve.lua --status --spool %s"):format(pacs.ROOT, q(root .. "/spool")))
    assert.are.equal(0, code, out)
    assert.matches('"queue":0', out, 1, true)
  end)
end)
