#!/usr/bin/env python3
"""Checks that what sdk_send.py sent arrived in a sink.py directory exactly once and unchanged.

  compare.py --manifest FILE --sink DIR [--signals traces,metrics,logs] [--allow-extra-resource-attrs]
             [--allow-extra-items] [--timeout SECONDS]

Decodes every DIR/<signal>-<seq>.pb with opentelemetry-proto (the independent decoder; refused-*.pb
are not counted), canonicalises it like the manifest (otlp_canon.py) and checks, per signal, that
each sent item (span, metric data point, log record) was received exactly once with the same scope
and content, and that its resource is the sent one (with --allow-extra-resource-attrs: a superset
of the sent attributes, same values). Received items that were never sent fail the check unless
--allow-extra-items. Prints `<signal>: N sent, M received` per signal, then a readable diff of
every mismatch, then `compare: OK` (exit 0) or `compare: FAILED` (exit 1). Exit 2 on bad input.

--timeout S re-reads the directory (every 0.1 s, when its listing changed) until the check passes
or S seconds have passed, for exporters that batch: the result printed is the last check's.
"""
import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from otlp_canon import COMPARABLE, SIGNALS, canonical_items, diff, item_body, parse_signals  # noqa: E402

FILE_RE = re.compile(r"^(traces|metrics|logs|profiles)-(\d+)\.pb$")


def dumps(x):
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def read_sink(directory, signals):
    """Items per signal from the stored requests, in arrival order; also the list of files read."""
    names = []
    for n in os.listdir(directory):
        m = FILE_RE.match(n)
        if m and m.group(1) in signals:
            names.append((int(m.group(2)), m.group(1), n))
    names.sort()
    items = {s: [] for s in signals}
    for _seq, sig, n in names:
        msg = SIGNALS[sig].request()
        path = os.path.join(directory, n)
        with open(path, "rb") as f:
            try:
                msg.ParseFromString(f.read())
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{path} does not decode as {SIGNALS[sig].request.__name__}: {e}") from e
        for it in canonical_items(sig, msg):
            it["file"] = n
            items[sig].append(it)
    return items, [n for _s, _g, n in names]


def resource_problems(sent, got, allow_extra):
    if not allow_extra:
        return diff(sent, got, "resource")
    out = []
    for k, v in sent["attributes"].items():
        if k not in got["attributes"]:
            out.append(f"  resource.attributes.{k}: missing (sent {dumps(v)})")
        elif got["attributes"][k] != v:
            out.append(f"  resource.attributes.{k}: sent {dumps(v)}, received {dumps(got['attributes'][k])}")
    for k in ("dropped_attributes_count", "schema_url"):
        if sent[k] != got[k]:
            out.append(f"  resource.{k}: sent {dumps(sent[k])}, received {dumps(got[k])}")
    return out


def check_signal(sent, received, allow_extra_res, allow_extra_items):
    """Returns the list of problem lines (empty when the signal passes)."""
    problems = []
    resource_issues = defaultdict(list)  # (file, problem lines) -> keys of the items concerned
    by_key_sent, by_key_got = defaultdict(list), defaultdict(list)
    for it in sent:
        by_key_sent[it["key"]].append(it)
    for it in received:
        by_key_got[it["key"]].append(it)
    for key in sorted(set(by_key_sent) | set(by_key_got)):
        s_left, r_left = list(by_key_sent.get(key, [])), list(by_key_got.get(key, []))
        matched = []
        # Exact matches first (scope + content), then pair what remains to show how it changed.
        for s in list(s_left):
            body = item_body(s)
            for r in r_left:
                if item_body(r) == body:
                    matched.append((s, r))
                    s_left.remove(s)
                    r_left.remove(r)
                    break
        for s, r in matched:
            res = resource_problems(s["resource"], r["resource"], allow_extra_res)
            if res:
                resource_issues[(r["file"], tuple(res))].append(key)
        while s_left and r_left:
            s, r = s_left.pop(0), r_left.pop(0)
            problems.append(f"{key} (in {r['file']}): changed")
            problems.extend(diff({"scope": s["scope"], "item": s["item"]}, {"scope": r["scope"], "item": r["item"]}))
            res = resource_problems(s["resource"], r["resource"], allow_extra_res)
            if res:
                resource_issues[(r["file"], tuple(res))].append(key)
        for s in s_left:
            problems.append(f"{key}: sent, never received")
        sent_bodies = {item_body(s) for s in by_key_sent.get(key, [])}
        for r in r_left:
            if item_body(r) in sent_bodies:
                problems.append(f"{key} (in {r['file']}): received more than once")
            elif not allow_extra_items:
                problems.append(f"{key} (in {r['file']}): received, never sent: {dumps(r['item'])[:400]}")
    for (file, lines), keys in sorted(resource_issues.items()):
        problems.append(f"the resource of {len(keys)} items in {file} differs from the sent one (e.g. {keys[0]})")
        problems.extend(lines)
    return problems


def run_check(manifest, sink, signals, args):
    received, files = read_sink(sink, signals)
    report, failed = [], False
    for sig in signals:
        sent = manifest["items"].get(sig)
        if sent is None:
            raise ValueError(f"the manifest has no {sig} (it has {','.join(manifest['items'])})")
        report.append(f"{sig}: {len(sent)} sent, {len(received[sig])} received")
        problems = check_signal(sent, received[sig], args.allow_extra_resource_attrs, args.allow_extra_items)
        if problems:
            failed = True
            report.append(f"{sig}: {len(problems)} problem lines")
            report.extend("  " + p for p in problems)
    return failed, report, files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--sink", required=True, help="the --out directory of sink.py")
    ap.add_argument("--signals", help="comma list (default: the manifest's)")
    ap.add_argument("--allow-extra-resource-attrs", action="store_true",
                    help="a received resource may have attributes that were not sent")
    ap.add_argument("--allow-extra-items", action="store_true", help="ignore received items that were never sent")
    ap.add_argument("--timeout", type=float, default=0.0, help="wait up to S seconds for the check to pass")
    args = ap.parse_args()
    try:
        with open(args.manifest) as f:
            manifest = json.load(f)
        signals = parse_signals(args.signals) if args.signals else manifest["signals"]
        if not os.path.isdir(args.sink):
            raise ValueError(f"--sink {args.sink} is not a directory")
        if manifest.get("failures"):
            print(f"compare: note: the manifest records failed exports: {manifest['failures']}")
        deadline = time.monotonic() + args.timeout
        last_files = None
        while True:
            listing = sorted(os.listdir(args.sink))
            if listing != last_files:
                last_files = listing
                failed, report, files = run_check(manifest, args.sink, signals, args)
                if not failed:
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except (OSError, ValueError, KeyError) as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    refused = [n for n in last_files if n.startswith("refused-") and n.endswith(".pb")]
    for line in report:
        print(line)
    print(f"compare: read {len(files)} request files" + (f" ({len(refused)} refused requests not counted)"
                                                        if refused else ""))
    print("compare: FAILED" if failed else "compare: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
