"""Offline checks of deploy/monitoring against a real scrape of hookgate.

Usage: check.py SCRAPE_FILE RULES_OUT_DIR

- every metric in SPEC's table (../shared/SPEC.md, when present) is in the scrape;
- the Grafana dashboard parses and each metric its queries name exists in the scrape;
- the PrometheusRule's expressions name only metrics that exist;
- writes the rule groups as a plain Prometheus rules file (hookgate-rules.yaml) and a copy
  without annotations for the promtool unit tests (hookgate-rules-noannot.yaml).
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
scrape_file, out_dir = sys.argv[1], sys.argv[2]
failures = []

# Metric families in the scrape, from their TYPE lines; histogram series add suffixes.
families = {}
for line in open(scrape_file, encoding="utf-8"):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families[m.group(1)] = m.group(2)
series_names = set(families)
for name, kind in families.items():
    if kind == "histogram":
        series_names |= {name + "_bucket", name + "_sum", name + "_count"}
print(f"scrape: {len(families)} metric families")

spec = os.path.join(ROOT, "..", "shared", "SPEC.md")
if os.path.exists(spec):
    for line in open(spec, encoding="utf-8"):
        for name in re.findall(r"`(hookgate_[a-z_]+)`", line) if line.startswith("| `hookgate_") else []:
            if name not in families:
                failures.append(f"SPEC metric {name} is not exported")
else:
    print("note: ../shared/SPEC.md not found; skipping the SPEC cross-check")

METRIC = re.compile(r"\b((?:hookgate|process)_[a-z_]+)\b")


def check_exprs(where, exprs):
    for expr in exprs:
        for name in METRIC.findall(expr):
            if name not in series_names:
                failures.append(f"{where}: {name} does not exist (expr: {expr.strip()[:80]})")


with open(os.path.join(ROOT, "deploy/monitoring/grafana-dashboard.json"), encoding="utf-8") as f:
    dash = json.load(f)
exprs = []


def walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)


walk(dash)
if not exprs:
    failures.append("dashboard has no queries")
check_exprs("dashboard", exprs)
titles = [p.get("title", "") for p in dash.get("panels", [])]
print(f"dashboard: {len(titles)} panels, {len(exprs)} queries")

with open(os.path.join(ROOT, "deploy/monitoring/prometheus-rule.yaml"), encoding="utf-8") as f:
    rule = yaml.safe_load(f)
if rule.get("kind") != "PrometheusRule" or rule.get("apiVersion") != "monitoring.coreos.com/v1":
    failures.append("prometheus-rule.yaml is not a monitoring.coreos.com/v1 PrometheusRule")
groups = rule["spec"]["groups"]
rules = [r for g in groups for r in g["rules"]]
check_exprs("rules", [r["expr"] for r in rules])
for r in rules:
    ann = r.get("annotations", {})
    if not ann.get("summary") or not ann.get("runbook"):
        failures.append(f"alert {r.get('alert')} lacks a summary or runbook annotation")
print(f"rules: {len(rules)} alerts")

os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "hookgate-rules.yaml"), "w", encoding="utf-8") as f:
    yaml.safe_dump({"groups": groups}, f, sort_keys=False)
bare = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups]
with open(os.path.join(out_dir, "hookgate-rules-noannot.yaml"), "w", encoding="utf-8") as f:
    yaml.safe_dump({"groups": bare}, f, sort_keys=False)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("monitoring checks: OK")
