"""schemathesis hooks for verdict: NDJSON bodies (POST /api/events/batch).

schemathesis serializes JSON and forms by itself; the batch endpoint takes
application/x-ndjson (text/plain is refused, as any web page could send it).
A generated string is sent as it is; anything else as one JSON document per
line, so both well-formed and odd batches reach the server.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return "\n".join(json.dumps(v, default=str) for v in value).encode()
    return json.dumps(value, default=str).encode()
