#!/usr/bin/env bash
# Mints the benchmark PKI into $1 with openssl, shaped like Wise's:
#   client chains: root CA -> intermediate CA -> client leaf (clientAuth), once in RSA-2048
#   (rsa-*) and once in ECDSA P-256 (ec-*); client-ca.pem holds both roots and both
#   intermediates (the "CA chain file" a receiver is given);
#   server: its own ECDSA P-256 root -> leaf for localhost / 127.0.0.1 (serverAuth).
# Files: client-ca.pem, {rsa,ec}-client.pem (leaf + intermediate), {rsa,ec}-client.key,
#        server-chain.pem, server.key, server.pem (chain + key, for haproxy), server-root.pem
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"

ext() { # name, content
  printf '%s\n' "$2" >"$1.ext"
}

key() { # file, kind
  case $2 in
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
  esac
}

ca_ext='basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash'
int_ext='basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'
client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:webhooks.bench.example
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'
server_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid'
ext ca "$ca_ext"
ext int "$int_ext"
ext client "$client_ext"
ext server "$server_ext"

selfsign() { # name, subject
  openssl req -new -x509 -key "$1.key" -subj "$2" -days 3650 -sha256 \
    -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n%s\n' "$ca_ext") \
    -out "$1.crt" 2>/dev/null
}

issue() { # name, subject, issuer, extfile
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 825 -sha256 -extfile "$4.ext" -out "$1.crt" 2>/dev/null
}

for kind in rsa ec; do
  key "$kind-root.key" "$kind"
  key "$kind-int.key" "$kind"
  key "$kind-client.key" "$kind"
  selfsign "$kind-root" "/C=GB/O=Bench Wise Platform/CN=Bench Wise Root CA ($kind)"
  issue "$kind-int" "/C=GB/O=Bench Wise Platform/CN=Bench Wise Issuing CA ($kind)" "$kind-root" int
  issue "$kind-client" "/C=GB/L=London/O=Bench Wise Payments Ltd/OU=Webhooks/CN=webhooks.bench.example" "$kind-int" client
  cat "$kind-client.crt" "$kind-int.crt" >"$kind-client.pem"
done
cat rsa-root.crt rsa-int.crt ec-root.crt ec-int.crt >client-ca.pem

key server-root.key ec
key server.key ec
selfsign server-root "/C=GB/O=Bench Server CA/CN=Bench Server Root"
issue server "/CN=localhost" server-root server
cp server-root.crt server-root.pem
cat server.crt >server-chain.pem
cat server-chain.pem server.key >server.pem
rm -f ./*.csr ./*.ext
