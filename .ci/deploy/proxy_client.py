#!/usr/bin/env python3
"""Client side of the PROXY protocol smoke test (image-smoke-proxy.sh): talks to hookgate on
127.0.0.1:LISTEN the way an AWS NLB with PROXY protocol v2 does.

    proxy_client.py PKI LISTEN ADMIN

Checks: a v2 PROXY header then mTLS gets the request through, and the app sees the header's
source address in X-Forwarded-For; a v2 LOCAL header then a close (the NLB's health check)
and a connection without any header are refused; /metrics counts them."""
import socket
import ssl
import struct
import sys
import time
import urllib.request

pki, listen, admin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CLIENT = "203.0.113.9"  # TEST-NET-3: only ever written into the header, never contacted


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def header(local=False):
    if local:
        return SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addrs = socket.inet_aton(CLIENT) + socket.inet_aton("10.0.0.5") + \
        struct.pack("!HH", 40000, listen)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


def request(prefix):
    ctx = ssl.create_default_context(cafile=f"{pki}/server/ca.crt")
    ctx.load_cert_chain(f"{pki}/client/client.crt", f"{pki}/client/client.key")
    raw = socket.create_connection(("127.0.0.1", listen), timeout=5)
    raw.sendall(prefix)
    with ctx.wrap_socket(raw, server_hostname="webhooks.example.com") as tls:
        tls.sendall(b"POST /webhook HTTP/1.1\r\nHost: webhooks.example.com\r\n"
                    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def metric(name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


reply = request(header())
if not reply.startswith("HTTP/1.1 200"):
    fail(f"a request behind a PROXY v2 header got: {reply[:200]}")
if f"x-forwarded-for: {CLIENT}" not in reply.lower():
    fail(f"the app did not get X-Forwarded-For: {CLIENT} from the PROXY header: {reply}")
print(f"ok: PROXY v2 + mTLS gets through; the app sees X-Forwarded-For: {CLIENT}")

before = metric('hookgate_tls_handshakes_total{result="protocol_error"}')
s = socket.create_connection(("127.0.0.1", listen), timeout=5)
s.sendall(header(local=True))
time.sleep(0.1)
s.close()
try:
    request(b"")
    fail("a connection without a PROXY header got an HTTP answer")
except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as e:
    print(f"ok: a connection without a PROXY header is refused ({type(e).__name__})")
time.sleep(0.3)
after = metric('hookgate_tls_handshakes_total{result="protocol_error"}')
if after - before < 2:
    fail(f"protocol_error went from {before} to {after}; want +2 (health check, no header)")
print("ok: an NLB-style health check (v2 LOCAL, then close) counts as protocol_error")
