#!/usr/bin/env bash
# The image's final stage, run for real: hookgate serving mTLS from an empty root
# filesystem as UID 65532, in front of a stand-in app. Called by .ci/deploy-checks inside
# `unshare --net`, so it has a loopback of its own and the fixed ports cannot clash.
#
#   image-smoke.sh ROOT PKI UPSTREAM_PORT LISTEN_PORT ADMIN_PORT DRAIN_S GRACE_S -- COMMAND...
#
# COMMAND is the image's ENTRYPOINT plus the Deployment's args; DF_PATH and DF_USER come
# from the Dockerfile (deploycheck.py dockerfile).
set -euo pipefail
root=$1 pki=$2 up_port=$3 listen=$4 admin=$5 drain=$6 grace=$7
shift 7
[[ $1 == -- ]] && shift
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)

ip link set lo up
python3 "$here/echo_upstream.py" 127.0.0.1 "$up_port" &
up_pid=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$up_port/" && break
  sleep 0.1
done
env -i PATH="$DF_PATH" "$(command -v chroot)" --userspec="$DF_USER" "$root" "$@" 2>"$log" &
hg_pid=$!
cleanup() {
  kill "$up_pid" 2>/dev/null || true
  kill -KILL "$hg_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
die() { echo "FAIL: $*"; echo "--- hookgate's log:"; cat "$log"; exit 1; }

status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
admin_url=http://127.0.0.1:$admin
for _ in $(seq 100); do
  [[ $(status "$admin_url/readyz") == 200 ]] && break
  kill -0 "$hg_pid" 2>/dev/null || die "hookgate exited before it was ready"
  sleep 0.1
done
[[ $(status "$admin_url/readyz") == 200 ]] || die "/readyz never answered 200"
[[ $(status "$admin_url/healthz") == 200 ]] || die "/healthz is not 200"
echo "ok: /healthz and /readyz answer 200 on the admin port $admin"

tls=(--resolve "webhooks.example.com:$listen:127.0.0.1" --cacert "$pki/server/ca.crt")
url=https://webhooks.example.com:$listen/webhook
body=$(curl -sS --fail --max-time 5 "${tls[@]}" --cert "$pki/client/client.crt" \
  --key "$pki/client/client.key" -H 'Content-Type: application/json' \
  -H 'X-Client-Cert-Verified: forged' --data '{"event_type":"test"}' "$url") ||
  die "a request with Wise-shaped client certificate failed"
grep -q '^POST /webhook' <<<"$body" || die "the app did not get the POST: $body"
grep -qi '^X-Client-Cert-Verified: SUCCESS' <<<"$body" || die "no X-Client-Cert-Verified: SUCCESS: $body"
grep -qi 'forged' <<<"$body" && die "a client-sent X-Client-Cert-Verified reached the app: $body"
grep -qi '^X-Client-Cert-Subject: CN=test-webhook-sender,O=Test Sender,C=GB' <<<"$body" ||
  die "wrong X-Client-Cert-Subject: $body"
echo "ok: a client with a certificate under the CA Secret's chain gets through, with verified headers"

code=$(status "${tls[@]}" "$url")
[[ $code == 000 ]] || die "a client without a certificate got HTTP $code"
code=$(status "${tls[@]}" --cert "$pki/stranger/client.crt" --key "$pki/stranger/client.key" "$url")
[[ $code == 000 ]] || die "a client with a foreign certificate got HTTP $code"
echo "ok: clients without a certificate, or with one from another CA, get no HTTP response"

metrics=$(curl -sS --fail --max-time 5 "$admin_url/metrics") || die "/metrics failed"
grep -q '^hookgate_tls_handshakes_total{result="ok"} [1-9]' <<<"$metrics" ||
  die "/metrics has no successful handshake"
echo "ok: /metrics counts the handshakes"

start=$SECONDS
kill -TERM "$hg_pid"
sleep 1
code=$(status "$admin_url/readyz")
[[ $code == 503 ]] || die "/readyz is $code during the drain, not 503"
echo "ok: after SIGTERM /readyz answers 503 (draining)"
rc=0
wait "$hg_pid" || rc=$?
elapsed=$((SECONDS - start))
[[ $rc == 0 ]] || die "hookgate exited $rc after SIGTERM"
((elapsed <= drain + grace + 5)) || die "shutdown took ${elapsed}s (drain ${drain}s + grace ${grace}s)"
echo "ok: hookgate exited 0, ${elapsed}s after SIGTERM (drain_delay ${drain}s)"
