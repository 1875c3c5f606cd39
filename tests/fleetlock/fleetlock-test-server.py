#!/usr/bin/env python3
"""The tests' FleetLock server: a small implementation of the FleetLock
protocol (as published with Zincati, docs/development/fleetlock/protocol.md),
written for the didymos tests because no packaged server runs here (the
known ones, airlock and FLUO's, need etcd or Kubernetes). Not for production.

  POST /v1/pre-reboot    take a reboot slot in the client's group
  POST /v1/steady-state  give it back

Both need the header `fleet-lock-protocol: true` and a JSON body
{"client_params": {"id": ID, "group": GROUP}}. 200 means done (also when the
client already holds, or does not hold, the slot); anything else is an
error with a JSON body {"kind": ..., "value": ...}. Each group has --slots
slots. Every request is logged to --log as one line
"<endpoint> <group> <id> <status>".

  fleetlock-test-server.py --port PORT --slots N --log FILE
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
HOLDERS = {}  # group -> list of ids


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, kind=None, value=None, endpoint="?", group="-", ident="-"):
        body = b"" if kind is None else json.dumps({"kind": kind, "value": value}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with open(self.server.log, "a") as log:
            log.write(f"{endpoint} {group} {ident} {status}\n")

    def do_POST(self):
        endpoint = self.path.rstrip("/").rsplit("/", 1)[-1]
        if self.path not in ("/v1/pre-reboot", "/v1/steady-state"):
            return self.reply(404, "not_found", self.path, endpoint)
        if self.headers.get("fleet-lock-protocol") != "true":
            return self.reply(400, "missing_header", "fleet-lock-protocol: true is required", endpoint)
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4096:
            return self.reply(413, "too_large", "body too large", endpoint)
        try:
            params = json.loads(self.rfile.read(length))["client_params"]
            ident, group = str(params["id"]), str(params["group"])
        except (ValueError, KeyError, TypeError):
            return self.reply(400, "bad_request", "expected client_params with id and group", endpoint)
        with LOCK:
            holders = HOLDERS.setdefault(group, [])
            if endpoint == "pre-reboot":
                if ident in holders:
                    status = 200
                elif len(holders) < self.server.slots:
                    holders.append(ident)
                    status = 200
                else:
                    return self.reply(409, "failed_lock",
                                      f"group {group} is full: held by {', '.join(holders)}",
                                      endpoint, group, ident)
            else:
                if ident in holders:
                    holders.remove(ident)
                status = 200
        self.reply(status, endpoint=endpoint, group=group, ident=ident)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.slots = a.slots
    server.log = a.log
    server.serve_forever()


if __name__ == "__main__":
    main()
