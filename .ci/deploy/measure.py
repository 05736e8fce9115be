#!/usr/bin/env python3
"""Measure hookgate's memory and CPU for the resource figures in deploy/README.md.

Not a CI check: run it by hand after a change that could move the figures.

    .ci/deploy/mint-test-pki.sh /tmp/pki
    unshare --net python3 .ci/deploy/measure.py BINARY /tmp/pki

`unshare --net` gives the run its own loopback, so the fixed ports (8443, 9090, 8080) cannot
clash with anything. It starts a small POST-answering upstream on 127.0.0.1:8080 and
`BINARY run` with a minimal config (the test certificates, every other key at its default),
then drives it with curl and reads the proxy's RSS and CPU time from /proc:

  idle       after start-up
  handshakes 2000 POSTs of a 1 KiB JSON body, each on a new mTLS connection, 16 at a time
  keepalive  20000 POSTs over 64 keep-alive connections
  held       1000 mTLS connections held open at once, each after one request
"""

import http.server
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def proc_stats(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
           if line.startswith(("VmRSS", "VmHWM"))}
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK  # utime + stime
    return kib["VmRSS"] / 1024, kib["VmHWM"] / 1024, cpu


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def curl_many(pki, n, parallel, close, body_file):
    url = "https://localhost:8443/webhook"
    cfg = tempfile.NamedTemporaryFile("w", suffix=".curlrc", delete=False)
    for _ in range(n):
        cfg.write(f'url = "{url}"\noutput = "/dev/null"\n')
    cfg.close()
    cmd = ["curl", "-sS", "--no-progress-meter", "--fail", "--parallel", "--parallel-max", str(parallel),
           "--cacert", f"{pki}/server/ca.crt", "--cert", f"{pki}/client/client.crt",
           "--key", f"{pki}/client/client.key", "-H", "Content-Type: application/json",
           "--data-binary", f"@{body_file}", "-K", cfg.name]
    if close:
        cmd += ["-H", "Connection: close"]
    start = time.time()
    subprocess.run(cmd, check=True)
    os.unlink(cfg.name)
    return time.time() - start


def main():
    binary, pki = sys.argv[1], sys.argv[2]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    work = pathlib.Path(tempfile.mkdtemp())
    (work / "config.yaml").write_text(
        "listen: \"0.0.0.0:8443\"\n"
        "upstream:\n  url: \"http://127.0.0.1:8080\"\n"
        f"tls:\n  cert: {pki}/server/tls.crt\n  key: {pki}/server/tls.key\n"
        f"  client_ca: [{pki}/client-ca/ca-chain.pem]\n"
        "log:\n  format: json\n  level: warn\n")
    body = work / "body.json"
    body.write_text(json.dumps({"data": {"resource": {"id": 1}, "pad": "x" * 960},
                                "event_type": "transfers#state-change"}))

    http.server.ThreadingHTTPServer.request_queue_size = 1024
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = subprocess.Popen([binary, "run", "--config", str(work / "config.yaml")])
    try:
        wait_port(8443)
        time.sleep(1)
        rows = []
        rss, hwm, cpu0 = proc_stats(proxy.pid)
        rows.append(("idle", rss, hwm, 0.0, 0, 0.0))

        for name, n, par, close in (("handshakes", 2000, 16, True),
                                    ("keepalive", 20000, 64, False)):
            _, _, c0 = proc_stats(proxy.pid)
            secs = curl_many(pki, n, par, close, body)
            rss, hwm, c1 = proc_stats(proxy.pid)
            rows.append((name, rss, hwm, c1 - c0, n, secs))

        ctx = ssl.create_default_context(cafile=f"{pki}/server/ca.crt")
        ctx.load_cert_chain(f"{pki}/client/client.crt", f"{pki}/client/client.key")
        held = []
        _, _, c0 = proc_stats(proxy.pid)
        start = time.time()
        for _ in range(1000):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", 8443)),
                                server_hostname="localhost")
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
            if b" 200 " not in s.recv(4096):
                raise SystemExit("held connection: no 200")
            held.append(s)
        time.sleep(1)
        rss, hwm, c1 = proc_stats(proxy.pid)
        rows.append(("held", rss, hwm, c1 - c0, 1000, time.time() - start))
        for s in held:
            s.close()

        print(f"{'phase':<11} {'RSS MiB':>8} {'peak MiB':>9} {'CPU s':>7} {'requests':>9} "
              f"{'wall s':>7} {'req/s':>7}")
        for name, rss, hwm, cpu, n, secs in rows:
            rate = f"{n / secs:7.0f}" if secs else f"{'-':>7}"
            print(f"{name:<11} {rss:8.1f} {hwm:9.1f} {cpu:7.2f} {n:9d} {secs:7.2f} {rate}")
    finally:
        proxy.terminate()
        proxy.wait()
        server.shutdown()


if __name__ == "__main__":
    main()
