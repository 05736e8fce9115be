#!/usr/bin/env bash
# Mint a throwaway PKI shaped like Wise's with openssl, for the deploy checks and the
# measurements in deploy/README.md. Nothing minted here is trusted by anything.
#
#   mint-test-pki.sh DIR
#
# DIR/server/tls.crt, tls.key      server chain (leaf + its CA) and key: what cert-manager's
#                                  Secret holds (keys tls.crt, tls.key)
# DIR/server/ca.crt                the server CA, for a client's --cacert
# DIR/client-ca/ca-chain.pem       Wise-shaped client CA chain: intermediate + root
# DIR/client/client.crt, .key      a client leaf (clientAuth) under that intermediate
# DIR/stranger/client.crt, .key    a client leaf from an unrelated CA (must be refused)
set -euo pipefail
out=${1:?usage: mint-test-pki.sh DIR}
mkdir -p "$out"/{work,server,client-ca,client,stranger}
w=$out/work
cd "$w"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

cat >ext.cnf <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:webhooks.example.com, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

selfsigned() { # name subject
  key "$1.key"
  openssl req -new -x509 -key "$1.key" -subj "$2" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$1.crt" 2>/dev/null
}
signed() { # name subject issuer extsection
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 30 \
    -sha256 -extfile ext.cnf -extensions "$4" -out "$1.crt" 2>/dev/null
}

selfsigned client-root "/C=GB/O=Test Wise-shaped Root/CN=test client root"
signed client-int "/C=GB/O=Test Wise-shaped Root/CN=test client intermediate" client-root ca
signed client "/C=GB/O=Test Sender/CN=test-webhook-sender" client-int client
selfsigned server-ca "/O=Test Server CA/CN=test server ca"
signed server "/CN=webhooks.example.com" server-ca server
selfsigned stranger-ca "/O=Stranger/CN=stranger ca"
signed stranger "/O=Stranger/CN=stranger" stranger-ca client

cat server.crt server-ca.crt >"$out/server/tls.crt"
cp server.key "$out/server/tls.key"
cp server-ca.crt "$out/server/ca.crt"
cat client-int.crt client-root.crt >"$out/client-ca/ca-chain.pem"
cp client.crt "$out/client/client.crt"
cp client.key "$out/client/client.key"
cp stranger.crt "$out/stranger/client.crt"
cp stranger.key "$out/stranger/client.key"
chmod -R a+rX "$out"
