# Config writers shared by bench/run and bench/profile. They read: $work, $pki, $P_UP, $nofile
# (open-file limit) and $idle_large (largest idle-connection count).
# shellcheck shell=bash

hookgate_yaml() { # file, port, admin port, log level
  cat >"$1" <<EOF
listen: "127.0.0.1:$2"
upstream:
  url: "http://127.0.0.1:$P_UP"
tls:
  cert: $pki/server-chain.pem
  key: $pki/server.key
  client_ca: [$pki/client-ca.pem]
  session_resumption: false
limits:
  max_connections: 20000
admin:
  listen: "127.0.0.1:$3"
shutdown:
  drain_delay: 0s
  grace_period: 1s
log:
  level: $4
  format: json
EOF
}

# nginx with the same mTLS policy and the identity headers it can express. nginx 1.22 has no
# SHA-256 fingerprint variable (only SHA-1, $ssl_client_fingerprint) and no SAN variable.
nginx_conf() { # file, port, name, [access log: on]
  local access="access_log off;"
  [ "${4:-}" = on ] && access="log_format bench '\$remote_addr \$ssl_client_s_dn [\$time_iso8601] \"\$request\" \$status \$request_length \$bytes_sent \$upstream_response_time \$request_time \$bench_request_id';
  access_log ${logs:-$work}/$3-access.log bench;"
  cat >"$1" <<EOF
worker_processes 1;
daemon off;
pid $work/$3.pid;
error_log ${logs:-$work}/$3.err warn;
worker_rlimit_nofile $nofile;
events { worker_connections $((nofile - 100)); }
http {
  $access
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_max_body_size 1m;
  client_body_temp_path $work/tmp/$3-body;
  proxy_temp_path $work/tmp/$3-proxy;
  ssl_session_cache off;
  ssl_session_tickets off;
  map \$http_x_request_id \$bench_request_id { "" \$request_id; default \$http_x_request_id; }
  upstream app {
    server 127.0.0.1:$P_UP;
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$2 ssl http2 backlog=4096;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $pki/server-chain.pem;
    ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/client-ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 4;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header Forwarded "";
      proxy_set_header X-Real-IP "";
      proxy_set_header X-Client-Cert-Verified \$ssl_client_verify;
      proxy_set_header X-Client-Cert-Subject \$ssl_client_s_dn;
      proxy_set_header X-Client-Cert-Issuer \$ssl_client_i_dn;
      proxy_set_header X-Client-Cert-Serial \$ssl_client_serial;
      proxy_set_header X-Client-Cert-Sha1 \$ssl_client_fingerprint;
      proxy_set_header X-Client-Cert-Not-After \$ssl_client_v_end;
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header X-Request-Id \$bench_request_id;
    }
  }
}
EOF
}

# haproxy 2.6: one thread, no session cache or tickets, the same headers (with a real SHA-256).
haproxy_cfg() { # file, port
  cat >"$1" <<EOF
global
  nbthread 1
  # haproxy wants 2 fds per connection; idle client connections need only one each.
  maxconn $((idle_large + 100))
  no strict-limits
  tune.ssl.cachesize 0
  ssl-default-bind-options no-tls-tickets
  log stderr format raw local0 err
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$2 ssl crt $pki/server.pem ca-file $pki/client-ca.pem verify required alpn h2,http/1.1
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
  http-request del-header forwarded
  http-request del-header x-real-ip
  http-request set-header X-Client-Cert-Verified SUCCESS
  http-request set-header X-Client-Cert-Subject %[ssl_c_s_dn(,0,rfc2253)]
  http-request set-header X-Client-Cert-Issuer %[ssl_c_i_dn(,0,rfc2253)]
  http-request set-header X-Client-Cert-Serial %[ssl_c_serial,hex]
  http-request set-header X-Client-Cert-Sha256 %[ssl_c_der,sha2(256),hex,lower]
  http-request set-header X-Client-Cert-Not-After %[ssl_c_notafter]
  http-request set-header X-Forwarded-Client-Cert "Hash=%[ssl_c_der,sha2(256),hex,lower];Subject=\"%[ssl_c_s_dn(,0,rfc2253)]\""
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
  default_backend app
backend app
  server app 127.0.0.1:$P_UP
EOF
}

