#!/usr/bin/env python3
"""Summarises a callgrind output file by self cost (Ir), inline-aware.

usage: cgsum.py CALLGRIND_FILE [--per N] [--top K]

callgrind_annotate credits an inlined function's instructions to the function it was inlined
into; in a release build nearly everything is inlined into tokio's task poll, so that view says
little. callgrind does record the source file of inlined code (fi=/fe= lines), so this sums the
self cost by source file, by crate (from the file's path) and by source line, and by symbol as
well. --per N divides by N (requests or handshakes) to give a cost per unit.
"""
import collections
import re
import sys


def crate_of(path):
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1)
    if "/work/main/src/" in path or path.startswith("src/"):
        return "hookgate"
    if "/rustc/" in path or "/library/" in path:
        m = re.search(r"library/([a-z_]+)/", path)
        return "rust-" + (m.group(1) if m else "std")
    if "aws-lc" in path:
        return "aws-lc (C/asm)"
    if path.startswith("./") or "sysdeps" in path or "glibc" in path or "/nptl/" in path:
        return "glibc"
    return path.split("/")[-1] if path not in ("???", "") else "unknown"


def main():
    args = sys.argv[1:]
    path = args[0]
    per = float(args[args.index("--per") + 1]) if "--per" in args else 1.0
    top = int(args[args.index("--top") + 1]) if "--top" in args else 25
    names = {"fl": {}, "fn": {}, "fi": {}, "fe": {}, "ob": {}, "cfn": {}, "cfi": {}, "cfl": {}, "cob": {}}
    by_fn = collections.Counter()
    by_file = collections.Counter()
    by_crate = collections.Counter()
    by_line = collections.Counter()
    total = 0
    fl = fn = cur_file = ob = "?"
    skip_next = False
    edges = collections.Counter()  # (caller, callee) -> inclusive Ir of the calls
    cfn = "?"
    want = args[args.index("--callers") + 1] if "--callers" in args else None

    def resolve(kind, rest):
        rest = rest.strip()
        m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
        if not m:
            return rest
        idx, name = m.group(1), m.group(2)
        table = names["fl" if kind in ("fl", "fi", "fe", "cfi", "cfl") else "fn" if kind in ("fn", "cfn") else "ob"]
        if name is not None:
            table[idx] = name
        return table.get(idx, "?")

    with open(path, errors="replace") as f:
        for line in f:
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    parts = line.split()
                    if len(parts) >= 2 and parts[1].isdigit():
                        edges[(fn, cfn)] += int(parts[1])
                    continue
                parts = line.split()
                if len(parts) < 2:
                    continue
                try:
                    ir = int(parts[1])
                except ValueError:
                    continue
                total += ir
                by_fn[fn] += ir
                by_file[cur_file] += ir
                by_crate[crate_of(cur_file)] += ir
                ln = parts[0]
                if ln.isdigit():
                    by_line[(cur_file, int(ln))] += ir
                continue
            if "=" not in line:
                continue
            key, rest = line.split("=", 1)
            if key == "fl":
                fl = cur_file = resolve("fl", rest)
            elif key in ("fi", "fe"):
                cur_file = resolve(key, rest)
            elif key == "fn":
                fn = resolve("fn", rest)
                cur_file = fl
            elif key in ("cfi", "cfl"):
                resolve(key, rest)
            elif key == "cfn":
                cfn = resolve("cfn", rest)
            elif key == "ob":
                ob = resolve("ob", rest)
            elif key == "cob":
                resolve("cob", rest)
            elif key == "calls":
                skip_next = True

    def show(title, counter, fmt=str):
        print(f"\n== {title} (self Ir{' per unit' if per != 1 else ''}, share of {total / per:,.0f})")
        for k, v in counter.most_common(top):
            print(f"{v / per:>12,.0f} {100 * v / total:5.1f}%  {fmt(k)}")

    if want:
        callers = collections.Counter()
        for (a, b), v in edges.items():
            if want in b and want not in a:
                callers[f"{a[:110]} -> {b[:60]}"] += v
        show(f"callers of *{want}* (inclusive Ir of the calls)", callers)
        return

    short = lambda p: re.sub(r".*/registry/src/[^/]+/", "", re.sub(r".*/rustc/[0-9a-f]+/", "rustc/", p))
    show("by crate", by_crate)
    show("by source file", by_file, short)
    show("by symbol", by_fn, lambda s: s[:150])
    show("by source line", by_line, lambda k: f"{short(k[0])}:{k[1]}")


if __name__ == "__main__":
    main()
