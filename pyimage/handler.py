"""A FaaS function for faasnet's tests and demo.

It answers HTTP on $PORT (default 8080), on every address unless $HOST says
otherwise:
  GET /healthz  200 "ok": the platform's readiness check
  GET /         a JSON hello that reports the Python version
  GET /compute  imports numpy (first time only) and reports a small result

Only the standard library is imported at start, so that a container starts
before the image's scientific packages have been read: that is what lazy
fetching exploits.
"""

import json
import os
import platform
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    server_version = "faasnet-pyfn/1"

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, "ok\n", "text/plain")
        elif self.path == "/":
            self.reply_json(200, {
                "message": "hello from faasnet",
                "python": platform.python_version(),
                "uptime_seconds": round(time.time() - STARTED, 3),
            })
        elif self.path == "/compute":
            try:
                self.reply_json(200, compute())
            except Exception as e:  # report it, as a platform's function would
                self.reply_json(500, {"error": "%s: %s" % (type(e).__name__, e)})
        else:
            self.reply_json(404, {"error": "not found: " + self.path})

    def reply_json(self, status, obj):
        self.reply(status, json.dumps(obj) + "\n", "application/json")

    def reply(self, status, body, content_type):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def compute():
    t0 = time.time()
    import numpy  # the heavy import happens here, on first use

    imported = time.time() - t0
    m = numpy.arange(1, 17, dtype=float).reshape(4, 4) + numpy.eye(4)
    return {
        "numpy": numpy.__version__,
        "determinant": round(float(numpy.linalg.det(m)), 6),
        "import_seconds": round(imported, 3),
    }


def main():
    # As the container's pid 1, Python would ignore SIGTERM without this.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    print("listening on %s:%d" % (host, port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
