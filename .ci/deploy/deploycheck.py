#!/usr/bin/env python3
"""Checks on the rendered Kubernetes manifests, for .ci/deploy-checks.

    deploycheck.py split RENDERED BUILTIN_OUT CUSTOM_OUT
        Write the built-in kinds and the custom resources to separate files, so that
        kubernetes-validate sees only kinds it has schemas for (and any warning from it
        is an error).
    deploycheck.py custom FILE...
        Structural check of the custom resources (cert-manager, Prometheus Operator): a
        JSON schema per kind for the fields these manifests use, with unknown fields
        refused. Any other custom kind is an error.
    deploycheck.py consistency FILE...
        Fail if a rendering's ports, probe paths, mounts or terminationGracePeriodSeconds
        disagree with the hookgate config its ConfigMap carries.
    deploycheck.py config-drift BASE FILE...
        Fail if a rendering's hookgate config differs from the base rendering's in any key
        but proxy_protocol (components/aws-nlb carries its own copy of the file).
    deploycheck.py self-test FILE
        Break a rendering in each way `consistency` must catch and assert that it does.
    deploycheck.py dockerfile DOCKERFILE
        Print, as shell assignments, what the proof needs from the Dockerfile: the build
        stage's RUSTFLAGS, `cargo build` arguments and COPY lines (each source checked
        against .dockerignore), and the final stage's binary path,
        USER, ENV PATH and HOOKGATE_CONFIG, ENTRYPOINT and EXPOSE. Fails if any is missing.
    deploycheck.py image-agrees FILE EXPOSE HOOKGATE_CONFIG
        Fail unless the Dockerfile's EXPOSE lists the config's listen and admin ports and its
        HOOKGATE_CONFIG is the path the Deployment mounts the config at.
    deploycheck.py rootfs FILE ROOT PKI
        Lay out ROOT as the image's root filesystem plus the pod's mounts: the ConfigMap's
        config at its mount path and test certificates (from mint-test-pki.sh in PKI) at
        the Secrets' mount paths under the Secrets' key names. Prints the hookgate
        container's args, one per line.
"""

import copy
import os
import pathlib
import re
import sys

import jsonschema
import yaml

HOOKGATE = "hookgate"
ADMIN_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
PROXY_ANNOTATIONS = ["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"]
# Config keys in which an overlay's config may differ from the base's (config-drift).
DRIFT_ALLOWED = {"proxy_protocol"}
BUILTIN_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def load(path):
    docs = [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]
    if not docs:
        fail(f"{path}: no resources")
    return docs


def dump(docs, path):
    pathlib.Path(path).write_text(yaml.safe_dump_all(docs, sort_keys=False))


# ---------------------------------------------------------------- custom resources

def obj(props, required=(), extra=False):
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": extra}


STR = {"type": "string", "minLength": 1}
STRS = {"type": "array", "items": STR, "minItems": 1}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = obj({"name": STR, "namespace": STR, "labels": LABELS, "annotations": LABELS},
               ["name"])
SELECTOR = obj({"matchLabels": LABELS, "matchExpressions": {"type": "array"}})

# Field names and types from the CRDs' API references (cert-manager.io/v1,
# monitoring.coreos.com/v1), limited to what these manifests use.
CUSTOM_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): obj({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": obj({
            "secretName": STR,
            "dnsNames": STRS,
            "commonName": STR,
            "issuerRef": obj({"name": STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                              "group": {"const": "cert-manager.io"}}, ["name"]),
            "privateKey": obj({
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer"},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]}}),
            "duration": DURATION,
            "renewBefore": DURATION,
            "usages": STRS,
        }, ["secretName", "issuerRef"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("cert-manager.io/v1", "ClusterIssuer"): obj({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": obj({
            "acme": obj({
                "server": {"type": "string", "pattern": "^https://"},
                "email": STR,
                "privateKeySecretRef": obj({"name": STR, "key": STR}, ["name"]),
                "solvers": {"type": "array", "minItems": 1, "items": obj({
                    "selector": obj({"dnsZones": STRS, "dnsNames": STRS,
                                     "matchLabels": LABELS}),
                    "dns01": obj({
                        "route53": obj({"region": STR, "hostedZoneID": STR, "role": STR}),
                        "cloudDNS": obj({"project": STR, "hostedZoneName": STR},
                                        ["project"]),
                    }, extra=False),
                    "http01": {"type": "object"},
                })},
            }, ["server", "privateKeySecretRef", "solvers"]),
        }, ["acme"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "PrometheusRule"): obj({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": obj({
            "groups": {"type": "array", "minItems": 1, "items": obj({
                "name": STR, "interval": DURATION,
                "rules": {"type": "array", "minItems": 1, "items": obj({
                    "alert": STR, "record": STR, "expr": STR, "for": DURATION,
                    "labels": LABELS, "annotations": LABELS,
                }, ["expr"])},
            }, ["name", "rules"])},
        }, ["groups"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "PodMonitor"): obj({
        "apiVersion": STR, "kind": STR, "metadata": METADATA,
        "spec": obj({
            "selector": SELECTOR,
            "namespaceSelector": obj({"any": {"type": "boolean"}, "matchNames": STRS}),
            "jobLabel": STR,
            "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": obj({
                "port": STR, "path": {"type": "string", "pattern": "^/"},
                "interval": DURATION, "scrapeTimeout": DURATION,
                "scheme": {"enum": ["http", "https"]},
                "honorLabels": {"type": "boolean"},
                "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
            }, ["port"])},
        }, ["selector", "podMetricsEndpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


def cmd_split(rendered, builtin_out, custom_out):
    builtin, custom = [], []
    for doc in load(rendered):
        (builtin if doc["apiVersion"] in BUILTIN_GROUPS else custom).append(doc)
    dump(builtin, builtin_out)
    pathlib.Path(custom_out).write_text(
        yaml.safe_dump_all(custom, sort_keys=False) if custom else "")
    print(f"{rendered}: {len(builtin)} built-in, {len(custom)} custom resource(s)")


def cmd_custom(*files):
    n = 0
    for path in files:
        text = pathlib.Path(path).read_text()
        for doc in (d for d in yaml.safe_load_all(text) if d):
            key = (doc.get("apiVersion"), doc.get("kind"))
            schema = CUSTOM_SCHEMAS.get(key)
            if schema is None:
                fail(f"{path}: no structural schema for {key}; add one to {__file__}")
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc),
                            key=lambda e: list(e.path))
            for e in errors:
                print(f"{path}: {key[1]}/{doc['metadata'].get('name')}: "
                      f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
            if errors:
                fail(f"{path}: {key[1]} does not match its structure")
            if key[1] != "ClusterIssuer" and "namespace" not in doc["metadata"]:
                fail(f"{path}: {key[1]}/{doc['metadata']['name']} has no namespace")
            if key[1] == "ClusterIssuer" and "namespace" in doc["metadata"]:
                fail(f"{path}: ClusterIssuer is cluster-scoped but has a namespace")
            n += 1
    print(f"custom resources: {n} checked")


# ---------------------------------------------------------------- consistency

def parse_duration(text):
    """hookgate's durations: `500ms`, `10s`, `1m30s`, `2h` (a unit is required)."""
    text = str(text)
    parts = re.findall(r"(\d+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        fail(f"cannot parse duration {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * scale[u] for n, u in parts)


def port_of(addr, key):
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", str(addr))
    if not m:
        fail(f"config {key}: cannot read a port from {addr!r}")
    return int(m.group(1))


def index(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def one(by_kind, kind, where):
    items = list(by_kind.get(kind, {}).values())
    if len(items) != 1:
        fail(f"{where}: expected exactly one {kind}, found {len(items)}")
    return items[0]


def hookgate_container(pod, where):
    native = [c for c in pod.get("initContainers", []) if c["name"] == HOOKGATE]
    classic = [c for c in pod.get("containers", []) if c["name"] == HOOKGATE]
    if len(native) + len(classic) != 1:
        fail(f"{where}: expected one container named {HOOKGATE}")
    if native and native[0].get("restartPolicy") != "Always":
        fail(f"{where}: the hookgate init container needs restartPolicy: Always "
             "(a native sidecar); without it the pod never starts the app")
    for c in pod.get("containers", []):
        if "restartPolicy" in c:
            fail(f"{where}: container {c['name']} sets restartPolicy, which only init "
                 "containers may")
    return (native or classic)[0], bool(native)


def container_port(container, ref, where):
    for p in container.get("ports", []):
        if ref in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    fail(f"{where}: container {container['name']} has no port {ref!r}")


def hookgate_config(by_kind, pod, hg, where):
    """The config file hookgate reads, from its --config arg and the mount behind it."""
    args = hg.get("args", [])
    if "--config" in args:
        path = args[args.index("--config") + 1]
    else:
        env = {e["name"]: e.get("value") for e in hg.get("env", [])}
        path = env.get("HOOKGATE_CONFIG", "/etc/hookgate/config.yaml")
    for m in hg.get("volumeMounts", []):
        vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
        if "configMap" not in vol:
            continue
        if m.get("subPath"):
            hit = m["mountPath"] == path and m["subPath"]
        else:
            hit = path.startswith(m["mountPath"].rstrip("/") + "/") and \
                path[len(m["mountPath"].rstrip("/")) + 1:]
        if hit:
            cm_name = vol["configMap"]["name"]
            cm = by_kind.get("ConfigMap", {}).get(cm_name)
            if cm is None or hit not in cm.get("data", {}):
                fail(f"{where}: {path} comes from ConfigMap {cm_name} key {hit}, "
                     "which the rendering does not have")
            return path, yaml.safe_load(cm["data"][hit])
    fail(f"{where}: no ConfigMap is mounted at hookgate's config path {path}")


def secret_for_file(by_kind, pod, hg, file_path, where):
    """(secret name, key) that a file named in the config comes from."""
    for m in hg.get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        if not file_path.startswith(base) or m.get("subPath"):
            continue
        vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
        if "secret" not in vol:
            fail(f"{where}: {file_path} is mounted from {vol['name']}, not a Secret")
        return vol["secret"]["secretName"], file_path[len(base):]
    fail(f"{where}: no Secret is mounted where the config expects {file_path}")


def check_security(pod, c, where):
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    w = f"{where}: container {c['name']}"
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail(f"{w}: runAsNonRoot is not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{w}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{w}: allowPrivilegeEscalation is not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail(f"{w}: capabilities.drop is not [ALL]")
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        fail(f"{w}: seccompProfile is not RuntimeDefault")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                fail(f"{w}: resources.{kind}.{r} is not set")


def prestop_sleep(c):
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    cmd = pre.get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    return 0


def check_rendering(path, docs):
    by_kind = index(docs)
    dep = one(by_kind, "Deployment", path)
    where = f"{path}: Deployment/{dep['metadata']['name']}"
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    hg, native = hookgate_container(pod, where)
    cfg_path, cfg = hookgate_config(by_kind, pod, hg, where)

    listen = port_of(cfg.get("listen", "0.0.0.0:8443"), "listen")
    admin = port_of(cfg.get("admin", {}).get("listen", "0.0.0.0:9090"), "admin.listen")
    upstream = str(cfg["upstream"]["url"])
    app_port = int(m.group(1)) if (m := re.search(r":(\d+)$", upstream)) else None

    # Container ports.
    if container_port(hg, "https", where) != listen:
        fail(f"{where}: port https is {container_port(hg, 'https', where)}, "
             f"config {cfg_path} listens on {listen}")
    if container_port(hg, "admin", where) != admin:
        fail(f"{where}: port admin is {container_port(hg, 'admin', where)}, "
             f"config admin.listen is {admin}")

    # Probes: HTTP GET on the admin port, the SPEC's paths.
    for probe, want in ADMIN_PATHS.items():
        p = hg.get(probe)
        if not p or "httpGet" not in p:
            fail(f"{where}: hookgate has no {probe} with httpGet")
        got_path = p["httpGet"].get("path")
        got_port = container_port(hg, p["httpGet"]["port"], where)
        if got_path != want or got_port != admin:
            fail(f"{where}: hookgate {probe} is GET {got_path} on port {got_port}; "
                 f"want GET {want} on the admin port {admin}")
        if p["httpGet"].get("scheme", "HTTP") != "HTTP":
            fail(f"{where}: hookgate {probe} must use HTTP (the admin port is plain HTTP)")

    # Termination grace: longer than everything that runs before the pod is killed.
    drain = parse_duration(cfg.get("shutdown", {}).get("drain_delay", "5s"))
    grace = parse_duration(cfg.get("shutdown", {}).get("grace_period", "25s"))
    app_sleep = max([prestop_sleep(c) for c in pod["containers"] if c["name"] != HOOKGATE]
                    or [0])
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    need = app_sleep + drain + grace
    if not tgps > need:
        fail(f"{where}: terminationGracePeriodSeconds is {tgps}; it must exceed the app's "
             f"preStop sleep {app_sleep:g}s + drain_delay {drain:g}s + grace_period {grace:g}s "
             f"= {need:g}s")

    # Files the config names come from the right Secrets, under the right keys.
    tls = cfg["tls"]
    client_ca = tls["client_ca"] if isinstance(tls["client_ca"], list) else [tls["client_ca"]]
    cert_secret = None
    for key, file_path in [("tls.cert", tls["cert"]), ("tls.key", tls["key"])] + \
            [(f"tls.client_ca[{i}]", p) for i, p in enumerate(client_ca)]:
        name, item = secret_for_file(by_kind, pod, hg, file_path, where)
        if key in ("tls.cert", "tls.key"):
            cert_secret = cert_secret or name
            if name != cert_secret:
                fail(f"{where}: tls.cert and tls.key come from different Secrets")
            if item != {"tls.cert": "tls.crt", "tls.key": "tls.key"}[key]:
                fail(f"{where}: config {key} reads key {item!r} of Secret {name}; "
                     "cert-manager writes tls.crt and tls.key")
        else:
            secret = by_kind.get("Secret", {}).get(name)
            if secret is None:
                fail(f"{where}: config {key} reads Secret {name}, which is not rendered")
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            if item not in keys:
                fail(f"{where}: config {key} reads key {item!r} of Secret {name}, "
                     f"which has {sorted(keys)}")
    certs = [c for c in by_kind.get("Certificate", {}).values()
             if c["spec"]["secretName"] == cert_secret]
    if not certs:
        fail(f"{where}: no cert-manager Certificate writes Secret {cert_secret}")

    # Service: 443 -> the listen port, and nothing else.
    svc = one(by_kind, "Service", path)
    if svc["spec"].get("type") != "LoadBalancer":
        fail(f"{path}: the Service must be a LoadBalancer (L4 pass-through)")
    if svc["spec"]["selector"].items() - pod_labels.items():
        fail(f"{path}: the Service selector does not match the pod")
    ports = svc["spec"]["ports"]
    if len(ports) != 1 or ports[0]["port"] != 443 or \
            container_port(hg, ports[0]["targetPort"], where) != listen:
        fail(f"{path}: the Service must expose exactly 443 -> hookgate's listen port {listen}")

    # PROXY protocol: hookgate expects the header exactly when the load balancer sends it.
    pp = str(cfg.get("proxy_protocol", "off"))
    annotations = svc["metadata"].get("annotations", {})
    sends = [a for a in PROXY_ANNOTATIONS if a in annotations]
    if pp != "off" and not sends:
        fail(f"{path}: config proxy_protocol is {pp}, but the Service asks its load balancer "
             "for no PROXY header: every connection would be refused")
    if pp == "off" and sends:
        fail(f"{path}: the Service annotation {sends[0]} makes the load balancer send PROXY "
             "headers, but config proxy_protocol is off: every handshake would fail")

    # NetworkPolicy: listen port from anywhere, admin port from monitoring only.
    np = one(by_kind, "NetworkPolicy", path)
    if np["spec"]["podSelector"]["matchLabels"].items() - pod_labels.items():
        fail(f"{path}: the NetworkPolicy does not select the pod")
    if "Ingress" not in np["spec"].get("policyTypes", []):
        fail(f"{path}: the NetworkPolicy does not restrict ingress")
    allowed = {}
    for rule in np["spec"].get("ingress", []):
        rule_ports = rule.get("ports")
        if not rule_ports:
            fail(f"{path}: a NetworkPolicy ingress rule without ports admits every port")
        for p in rule_ports:
            num = p["port"] if isinstance(p["port"], int) else \
                container_port(hg, p["port"], where)
            allowed.setdefault(num, []).append(rule.get("from"))
    if set(allowed) != {listen, admin}:
        fail(f"{path}: the NetworkPolicy admits ports {sorted(allowed)}; "
             f"want exactly {listen} (listen) and {admin} (admin)")
    if app_port in allowed:
        fail(f"{path}: the NetworkPolicy admits the app's own port {app_port}")
    if allowed[listen] != [None]:
        fail(f"{path}: the listen port {listen} must be open to everyone (Wise)")
    for sources in allowed[admin]:
        ok = sources and all(
            set(s) == {"namespaceSelector"} and
            s["namespaceSelector"].get("matchLabels") ==
            {"kubernetes.io/metadata.name": "monitoring"} for s in sources)
        if not ok:
            fail(f"{path}: the admin port {admin} must be open to the monitoring "
                 "namespace only")

    # Scraping: the admin port, /metrics.
    pm = one(by_kind, "PodMonitor", path)
    if pm["spec"]["selector"]["matchLabels"].items() - pod_labels.items():
        fail(f"{path}: the PodMonitor does not select the pod")
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if container_port(hg, ep["port"], where) != admin or \
                ep.get("path", "/metrics") != "/metrics":
            fail(f"{path}: the PodMonitor must scrape /metrics on the admin port {admin}")

    # The app's own port is in no container's declared ports and no Service.
    for c in pod["containers"] + pod.get("initContainers", []):
        for p in c.get("ports", []):
            if p["containerPort"] == app_port:
                fail(f"{where}: container {c['name']} declares the app's port {app_port}")

    # Security context and resources on every container.
    for c in pod["containers"] + pod.get("initContainers", []):
        check_security(pod, c, where)
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken should be false")

    # PDB and HPA point at this Deployment.
    pdb = one(by_kind, "PodDisruptionBudget", path)
    if pdb["spec"]["selector"]["matchLabels"].items() - pod_labels.items():
        fail(f"{path}: the PodDisruptionBudget does not select the pod")
    hpa = one(by_kind, "HorizontalPodAutoscaler", path)
    if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
        fail(f"{path}: the HPA does not target the Deployment")
    if hpa["spec"]["minReplicas"] <= pdb["spec"].get("minAvailable", 0):
        fail(f"{path}: HPA minReplicas must exceed the PDB's minAvailable, "
             "or no node can ever be drained")

    layout = "native sidecar" if native else "classic sidecar"
    print(f"{path}: consistent ({layout}; listen {listen}, admin {admin}, "
          f"proxy_protocol {pp}, grace {tgps}s > {app_sleep:g}+{drain:g}+{grace:g}s)")


def rendered_config(path):
    by_kind = index(load(path))
    pod = one(by_kind, "Deployment", path)["spec"]["template"]["spec"]
    hg, _ = hookgate_container(pod, path)
    return hookgate_config(by_kind, pod, hg, path)[1]


def cmd_config_drift(base, *others):
    """Overlays that replace the config file must keep it the base's, but for DRIFT_ALLOWED."""
    want = rendered_config(base)
    for path in others:
        got = rendered_config(path)
        keys = {k for k in set(want) | set(got) if want.get(k) != got.get(k)}
        if keys - DRIFT_ALLOWED:
            fail(f"{path}: its hookgate config differs from {base} in {sorted(keys)}; only "
                 f"{sorted(DRIFT_ALLOWED)} may differ (edit both copies)")
        print(f"{path}: config as in the base" +
              (f" but for {sorted(keys)}" if keys else ""))


def cmd_consistency(*files):
    for path in files:
        check_rendering(path, load(path))


def cmd_self_test(path):
    """Each mutation must make check_rendering fail."""
    docs = load(path)

    def dep(d):
        return next(x for x in d if x["kind"] == "Deployment")

    def hg(d):
        pod = dep(d)["spec"]["template"]["spec"]
        return next(c for c in pod.get("initContainers", []) + pod["containers"]
                    if c["name"] == HOOKGATE)

    def cm(d):
        return next(x for x in d if x["kind"] == "ConfigMap")

    def set_cfg(d, fn):
        c = cm(d)
        key = next(iter(c["data"]))
        cfg = yaml.safe_load(c["data"][key])
        fn(cfg)
        c["data"][key] = yaml.safe_dump(cfg)

    def kind(d, k):
        return next(x for x in d if x["kind"] == k)

    mutations = {
        "liveness path": lambda d: hg(d)["livenessProbe"]["httpGet"].update(path="/live"),
        "readiness path": lambda d: hg(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readiness on the TLS port":
            lambda d: hg(d)["readinessProbe"]["httpGet"].update(port="https"),
        "config listen port": lambda d: set_cfg(d, lambda c: c.update(listen="0.0.0.0:9443")),
        "config admin port":
            lambda d: set_cfg(d, lambda c: c.setdefault("admin", {}).update(
                listen="0.0.0.0:9091")),
        "longer grace_period":
            lambda d: set_cfg(d, lambda c: c["shutdown"].update(grace_period="40s")),
        "short terminationGracePeriodSeconds":
            lambda d: dep(d)["spec"]["template"]["spec"].update(
                terminationGracePeriodSeconds=30),
        "container port": lambda d: hg(d)["ports"][0].update(containerPort=8444),
        "service targetPort":
            lambda d: kind(d, "Service")["spec"]["ports"][0].update(targetPort=8080),
        "app port in NetworkPolicy":
            lambda d: kind(d, "NetworkPolicy")["spec"]["ingress"].append(
                {"ports": [{"port": 8080, "protocol": "TCP"}]}),
        "admin port open to all":
            lambda d: kind(d, "NetworkPolicy")["spec"]["ingress"][1].pop("from"),
        "PodMonitor on the TLS port":
            lambda d: kind(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(
                port="https"),
        "wrong CA secret key":
            lambda d: set_cfg(d, lambda c: c["tls"].update(
                client_ca=["/etc/hookgate/client-ca/wise.pem"])),
        "writable root filesystem":
            lambda d: hg(d)["securityContext"].update(readOnlyRootFilesystem=False),
        "no memory limit": lambda d: hg(d)["resources"]["limits"].pop("memory"),
        "PROXY annotation, proxy_protocol off":
            lambda d: kind(d, "Service")["metadata"].setdefault("annotations", {}).update(
                {PROXY_ANNOTATIONS[0]: "*"}),
        "proxy_protocol v2, no PROXY annotation":
            lambda d: set_cfg(d, lambda c: c.update(proxy_protocol="v2")),
        "longer app preStop sleep":
            lambda d: next(c for c in dep(d)["spec"]["template"]["spec"]["containers"]
                           if c["name"] != HOOKGATE)["lifecycle"]["preStop"].update(
                exec={"command": ["sleep", "20"]}),
    }
    check_rendering(path, docs)  # the unmodified rendering passes
    for name, mutate in mutations.items():
        broken = copy.deepcopy(docs)
        mutate(broken)
        try:
            check_rendering(f"{path} [{name}]", broken)
        except SystemExit as e:
            print(f"  caught: {name}: {str(e).removeprefix('FAIL: ')}")
            continue
        fail(f"self-test: the consistency check missed: {name}")
    print(f"self-test: all {len(mutations)} broken renderings caught")


# ---------------------------------------------------------------- the image, for the proof

def ignored(rel, patterns):
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    import fnmatch
    parts = rel.split("/")
    verdict = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.strip("/")
        # A pattern matches the path or one of its parent directories.
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            verdict = not neg
    return verdict


def cmd_dockerfile(path):
    import json
    import shlex
    text = pathlib.Path(path).read_text()
    lines, cur = [], ""
    for raw in text.splitlines():
        if not cur and raw.lstrip().startswith("#"):
            continue
        cur += raw.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    stages, out = [], {}
    for line in lines:
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append({"from": rest, "lines": []})
        elif stages:
            stages[-1]["lines"].append((instr, rest))
    if len(stages) < 2:
        fail(f"{path}: expected a multi-stage build")
    build, final = stages[0], stages[-1]

    def env_of(stage):
        env = {}
        for instr, rest in stage["lines"]:
            if instr == "ENV":
                for tok in shlex.split(rest):
                    k, _, v = tok.partition("=")
                    env[k] = v
        return env

    benv = env_of(build)
    if "RUSTFLAGS" not in benv:
        fail(f"{path}: the build stage sets no RUSTFLAGS")
    out["DF_RUSTFLAGS"] = benv["RUSTFLAGS"]
    runs = [rest for instr, rest in build["lines"] if instr == "RUN" and "cargo build" in rest]
    if len(runs) != 1:
        fail(f"{path}: expected one RUN with `cargo build` in the build stage")
    words = shlex.split(runs[0])
    i = words.index("cargo")
    cargo = []
    for w in words[i + 2:]:
        if w in ("&&", ";", "||"):
            break
        cargo.append(w)
    out["DF_CARGO_ARGS"] = " ".join(shlex.quote(w) for w in cargo)
    # What the build stage copies into its WORKDIR, as "source:destination" pairs, after
    # checking that .dockerignore lets each source into the build context.
    workdir = next((rest for instr, rest in build["lines"] if instr == "WORKDIR"), "/")
    ignore = pathlib.Path(path).with_name(".dockerignore")
    patterns = [ln.strip() for ln in ignore.read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")] if ignore.exists() else []
    pairs = []
    for instr, rest in build["lines"]:
        if instr != "COPY" or "--from=" in rest:
            continue
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        *srcs, dest = words
        for src in srcs:
            if ignored(src.rstrip("/"), patterns):
                fail(f"{path}: COPY {src}, but .dockerignore keeps it out of the build context")
            d = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            if d.endswith("/") or d.endswith("/.") or len(srcs) > 1:
                d = f"{d.rstrip('/.').rstrip('/')}/{pathlib.PurePosixPath(src).name}"
            rel = pathlib.PurePosixPath(d).relative_to(workdir)
            pairs.append(f"{src}:{rel}")
    if not pairs:
        fail(f"{path}: the build stage copies nothing from the build context")
    out["DF_BUILD_COPY"] = " ".join(pairs)
    target = cargo[cargo.index("--target") + 1] if "--target" in cargo else None
    if target is None or "--release" not in cargo:
        fail(f"{path}: the build must be --release with an explicit --target")
    out["DF_TARGET"] = target
    copies = [rest for instr, rest in final["lines"] if instr == "COPY" and "--from=" in rest]
    if len(copies) != 1:
        fail(f"{path}: expected one COPY --from in the final stage")
    out["DF_BIN_DEST"] = shlex.split(copies[0])[-1]
    fenv = env_of(final)
    out["DF_PATH"] = fenv.get("PATH", "")
    out["DF_HOOKGATE_CONFIG"] = fenv.get("HOOKGATE_CONFIG", "")
    users = [rest for instr, rest in final["lines"] if instr == "USER"]
    entry = [rest for instr, rest in final["lines"] if instr == "ENTRYPOINT"]
    expose = [rest for instr, rest in final["lines"] if instr == "EXPOSE"]
    if not users or not entry or not expose or not out["DF_PATH"]:
        fail(f"{path}: the final stage needs USER, ENTRYPOINT, EXPOSE and ENV PATH")
    out["DF_USER"] = users[-1]
    out["DF_ENTRYPOINT"] = " ".join(shlex.quote(w) for w in json.loads(entry[-1]))
    out["DF_EXPOSE"] = " ".join(" ".join(e.split()) for e in expose)
    out["DF_FINAL_FROM"] = final["from"]
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")


def cmd_image_agrees(path, expose, default_config):
    by_kind = index(load(path))
    pod = one(by_kind, "Deployment", path)["spec"]["template"]["spec"]
    hg, _ = hookgate_container(pod, path)
    cfg_path, cfg = hookgate_config(by_kind, pod, hg, path)
    want = {port_of(cfg.get("listen", "0.0.0.0:8443"), "listen"),
            port_of(cfg.get("admin", {}).get("listen", "0.0.0.0:9090"), "admin.listen")}
    got = {int(p.split("/")[0]) for p in expose.split()}
    if got != want:
        fail(f"Dockerfile EXPOSE {sorted(got)} differs from the config's ports {sorted(want)}")
    if default_config != cfg_path:
        fail(f"Dockerfile HOOKGATE_CONFIG {default_config} differs from the Deployment's "
             f"config path {cfg_path}")
    print(f"Dockerfile agrees with {path}: EXPOSE {sorted(got)}, config {cfg_path}")


# ---------------------------------------------------------------- rootfs for the proof

def cmd_rootfs(path, root, pki):
    docs = load(path)
    by_kind = index(docs)
    dep = one(by_kind, "Deployment", path)
    pod = dep["spec"]["template"]["spec"]
    hg, _ = hookgate_container(pod, path)
    root = pathlib.Path(root)
    pki = pathlib.Path(pki)
    test_files = {  # Secret key -> test file standing in for it
        "tls.crt": pki / "server/tls.crt",
        "tls.key": pki / "server/tls.key",
        "ca.crt": pki / "server/ca.crt",
        "ca-chain.pem": pki / "client-ca/ca-chain.pem",
    }
    for m in hg.get("volumeMounts", []):
        vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
        target = root / m["mountPath"].lstrip("/")
        if "configMap" in vol:
            cm = by_kind["ConfigMap"][vol["configMap"]["name"]]
            items = {m["subPath"]: target} if m.get("subPath") else \
                {k: target / k for k in cm["data"]}
            for key, dest in items.items():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(cm["data"][key])
        elif "secret" in vol:
            name = vol["secret"]["secretName"]
            secret = by_kind.get("Secret", {}).get(name)
            keys = (set(secret.get("data", {})) | set(secret.get("stringData", {}))) \
                if secret else {"tls.crt", "tls.key", "ca.crt"}  # cert-manager's keys
            target.mkdir(parents=True, exist_ok=True)
            for key in sorted(keys):
                if key not in test_files:
                    fail(f"rootfs: no test file for key {key} of Secret {name}")
                dest = target / key
                dest.write_bytes(test_files[key].read_bytes())
                dest.chmod(vol["secret"].get("defaultMode", 0o644))
                # The kubelet gives Secret files the pod's fsGroup as their group.
                os.chown(dest, 0, pod.get("securityContext", {}).get("fsGroup", 0))
        else:
            fail(f"rootfs: volume {vol['name']} is neither a ConfigMap nor a Secret")
    for arg in hg.get("args", []):
        print(arg)


def main():
    cmds = {"split": cmd_split, "custom": cmd_custom, "consistency": cmd_consistency,
            "self-test": cmd_self_test, "rootfs": cmd_rootfs,
            "dockerfile": cmd_dockerfile, "image-agrees": cmd_image_agrees,
            "config-drift": cmd_config_drift}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        raise SystemExit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
