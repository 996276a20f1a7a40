-- make demo: the end-to-end job (synthetic SIIM-ACR data, training,
-- prediction, scoring). The pipeline is not built yet.
local lpnx = require "lpnx"
print(("lpnx %s: the training and prediction pipeline is not yet available; "
       .. "`make test` exercises what is built so far."):format(lpnx.version))
