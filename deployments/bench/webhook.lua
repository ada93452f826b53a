-- wrk script: POST a Dataverse RemoteExecutionContext to the webhook with a
-- fresh OperationId on every request, so duplicate detection keeps each one
-- (no request is a re-send). Run from the repository root:
--
--   wrk -t1 -c32 -d10s -s deployments/bench/webhook.lua \
--       'http://127.0.0.1:8080/webhooks/dataverse?code=YOUR-WEBHOOK-KEY'
--
-- BODY (env) names another payload; SEED (env, default the clock) makes
-- consecutive runs use different ids.
local path = os.getenv("BODY") or "api/examples/dataverse-update-contact.json"
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()
local op = assert(body:match('"OperationId"%s*:%s*"([%x%-]+)"'), "payload has no OperationId")
local pattern = op:gsub("%-", "%%-")
local seed = tonumber(os.getenv("SEED") or os.time()) % 4294967296
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local id = string.format("%08x-0000-4000-8000-%012x", seed, counter)
  return wrk.format(nil, nil, nil, (body:gsub(pattern, id)))
end
