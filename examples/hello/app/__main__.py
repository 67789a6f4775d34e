"""`python3 -m app`: serve on $PORT (default 8080) until stopped."""

import os

from app import make_server

server = make_server(port=int(os.environ.get("PORT", "8080")))
print(f"hello listening on :{server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
finally:
    server.server_close()
