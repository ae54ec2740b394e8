-- POST /api/conversions for random users of exp-001 (most were assigned by the predictions run).
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local body = '{"experiment_id":"exp-001","user_id":"u' .. math.random(1, 200000) ..
    '","conversion_type":"purchase","amount":' .. math.random(5, 200) .. '}'
  return wrk.format("POST", "/api/conversions", {["Content-Type"] = "application/json"}, body)
end
