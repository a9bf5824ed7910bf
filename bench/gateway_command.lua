-- wrk script: POST /mqtt/publish with the seed's command.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"command": "DISCHARGE 50kW"}'
