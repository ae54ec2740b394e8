-- POST /api/predictions for random users of exp-001 (a fresh user ~half the time).
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local body = '{"experiment_id":"exp-001","user_id":"u' .. math.random(1, 200000) ..
    '","input":{"context":"homepage"}}'
  return wrk.format("POST", "/api/predictions", {["Content-Type"] = "application/json"}, body)
end
