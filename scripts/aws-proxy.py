#!/usr/bin/env python3
"""A recording, fault-injecting reverse proxy in front of the AWS stand-in (moto), for benchmarks
and manual checks: `aws-proxy.py LISTEN_PORT UPSTREAM_URL [--fail-every N] [--record FILE]`.

Every request's action (X-Amz-Target's last segment, or the query protocols' Action=) is appended to
FILE, one per line. With --fail-every N, every Nth request gets a protocol-correct ThrottlingException.
"""
import argparse
import http.client
import http.server
import threading
import urllib.parse

lock = threading.Lock()
count = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("upstream")
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--record", default=None)
    args = ap.parse_args()
    up = urllib.parse.urlparse(args.upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do(self):
            global count
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            target = self.headers.get("X-Amz-Target")
            if target:
                action = target.rsplit(".", 1)[-1]
            else:
                action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
                # REST services (EFS, ...): the method and path name the call.
                action = action or f"{self.command}:{urllib.parse.urlparse(self.path).path}"
            with lock:
                count += 1
                n = count
                if args.record:
                    with open(args.record, "a") as fh:
                        fh.write(action + "\n")
            if args.fail_every and n % args.fail_every == 0:
                if target:
                    payload, ctype = b'{"__type":"ThrottlingException","message":"Rate exceeded"}', "application/x-amz-json-1.1"
                else:
                    payload = b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>"
                    ctype = "text/xml"
                self.send_response(400)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-amzn-RequestId", "x")
                self.end_headers()
                self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(up.hostname, up.port)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
