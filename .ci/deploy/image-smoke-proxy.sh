#!/usr/bin/env bash
# hookgate from the empty root filesystem with the aws-nlb rendering's config
# (proxy_protocol: v2), driven as an AWS NLB drives it (proxy_client.py). Called by
# .ci/deploy-checks inside `unshare --net`.
#
#   image-smoke-proxy.sh ROOT PKI UPSTREAM_PORT LISTEN_PORT ADMIN_PORT -- COMMAND...
set -euo pipefail
root=$1 pki=$2 up_port=$3 listen=$4 admin=$5
shift 5
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
trap 'kill "$up_pid" 2>/dev/null || true; kill -KILL "$hg_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz") == 200 ]] && break
  sleep 0.1
done
python3 "$here/proxy_client.py" "$pki" "$listen" "$admin" || {
  echo "--- hookgate's log:"
  cat "$log"
  exit 1
}
