#!/usr/bin/env python3
"""Turns the measurements of one `bench/run` into results.

Reads WORK/records.jsonl (one JSON line per measurement: name, size, rep,
data), WORK/meta.json and WORK/store_benchmark.json; writes every input and
the computed rows to --out (JSON) and the tables to --markdown. With
--results instead of --work, recomputes the tables of an earlier results
file (bench/results/<timestamp>.json).

Every value is the median over the repetitions of a run. A ratio pairs each
repetition of the service with the baseline measured next to it in the same
repetition and reports the median of those ratios, so that drift of a noisy
machine between repetitions cancels out.
"""
import argparse
import json
import statistics

MIB = 1 << 20


def load(work):
    records = [json.loads(line) for line in open(f"{work}/records.jsonl")]
    meta = json.load(open(f"{work}/meta.json"))
    try:
        store = json.load(open(f"{work}/store_benchmark.json"))
    except (OSError, ValueError):
        store = None
    return records, meta, store


class Runs:
    def __init__(self, records):
        self.by = {}
        for r in records:
            if r["data"] is None:
                continue
            self.by.setdefault((r["name"], r["size"]), {})[r["rep"]] = r["data"]

    def reps(self, name, size):
        return self.by.get((name, size), {})

    def values(self, name, size, get):
        out = []
        for data in self.reps(name, size).values():
            try:
                out.append(get(data))
            except (KeyError, TypeError):
                pass
        return out

    def median(self, name, size, get):
        v = self.values(name, size, get)
        return statistics.median(v) if v else None

    def paired(self, a, b, size, get_a, get_b, combine):
        """Median over repetitions of combine(a_rep, b_rep)."""
        ra, rb = self.reps(a, size), self.reps(b, size)
        out = []
        for rep in sorted(set(ra) & set(rb)):
            try:
                out.append(combine(get_a(ra[rep]), get_b(rb[rep])))
            except (KeyError, TypeError, ZeroDivisionError):
                pass
        return statistics.median(out) if out else None


def cps(d):
    return d["calls_per_second"]


def eps(d):
    return d["events_per_second"]


def p(q):
    return lambda d: d["latency_us"][q]


def fmt_rate(x, unit="/s"):
    if x is None:
        return "n/a"
    return f"{x:,.0f}{unit}"


def fmt_us(x):
    if x is None:
        return "n/a"
    return f"{x:,.0f} µs" if x >= 100 else f"{x:.1f} µs"


def fmt_cpu(x):
    return "n/a" if x is None else f"{x:.3f}"


def fmt_ratio(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}×" if x < 0.1 else f"{x:.2f}×"


def target_rows(runs, sizes, meta):
    s0 = sizes[0]
    rows = []

    def row(metric, baseline, service, ratio, target, ok, note=""):
        rows.append({
            "metric": metric, "baseline": baseline, "service": service,
            "ratio": ratio, "target": target,
            "met": None if ok is None else bool(ok), "note": note,
        })

    for c in (32, 64):
        base = runs.median(f"echo_append_c{c}", s0, cps)
        serv = runs.median(f"append_c{c}", s0, cps)
        ratio = runs.paired(f"append_c{c}", f"echo_append_c{c}", s0, cps, cps,
                            lambda a, b: a / b)
        row(f"Single-event AppendEvents, {c} in flight (calls/s)",
            f"echo {fmt_rate(base)}", fmt_rate(serv), fmt_ratio(ratio),
            "≥ 0.80× echo", None if ratio is None else ratio >= 0.80)

    base = runs.median("raw_write_100", s0, eps)
    serv = runs.median("append100_c1", s0, eps)
    ratio = runs.paired("append100_c1", "raw_write_100", s0, eps, eps,
                        lambda a, b: a / b)
    shaped = runs.paired("append100_c1", "raw_write_100_k10", s0, eps, eps,
                         lambda a, b: a / b)
    row("AppendEvents, 100 events per call, 1 in flight (events/s)",
        f"raw RocksDB sync, batches of 100: {fmt_rate(base)}",
        fmt_rate(serv), fmt_ratio(ratio), "≥ 0.50× raw",
        None if ratio is None else ratio >= 0.50,
        "" if shaped is None else
        f"{fmt_ratio(shaped)} of raw writes with 10 more keys per event")

    # The disk's fsync p50 of a repetition: the mean of the probes run just
    # before and just after the 1-in-flight append.
    def disk_p50(rep):
        probes = [runs.reps(n, s0).get(rep) for n in ("fsync", "fsync_after")]
        probes = [x["latency_us"]["p50"] for x in probes if x]
        return sum(probes) / len(probes) if probes else None
    disks = [d for d in map(disk_p50, runs.reps("append_c1", s0)) if d]
    echo = runs.median("echo_append_c1", s0, p("p50"))
    disk = statistics.median(disks) if disks else None
    serv = runs.median("append_c1", s0, p("p50"))
    budgets = {}
    for rep in runs.reps("append_c1", s0):
        e = runs.reps("echo_append_c1", s0).get(rep)
        f = disk_p50(rep)
        a = runs.reps("append_c1", s0).get(rep)
        if e and f and a:
            budgets[rep] = a["latency_us"]["p50"] / (
                e["latency_us"]["p50"] + f + 30)
    ratio = statistics.median(budgets.values()) if budgets else None
    budget = None if echo is None or disk is None else echo + disk + 30
    row("Single-event append, 1 in flight, p50",
        f"echo {fmt_us(echo)} + fsync {fmt_us(disk)} + 30 µs = "
        f"{fmt_us(budget)}", fmt_us(serv), fmt_ratio(ratio),
        "≤ 1.00× budget", None if ratio is None else ratio <= 1.0)

    base = runs.median("echo_get_c1", s0, p("p50"))
    serv = runs.median("get_c1", s0, p("p50"))
    ratio = runs.paired("get_c1", "echo_get_c1", s0, p("p50"), p("p50"),
                        lambda a, b: a / b)
    row("GetConnection, 1 in flight, p50", f"echo {fmt_us(base)}",
        fmt_us(serv), fmt_ratio(ratio), "≤ 1.15× echo",
        None if ratio is None else ratio <= 1.15)

    base = runs.median("echo_get_c16", s0, cps)
    serv = runs.median("get_c16", s0, cps)
    ratio = runs.paired("get_c16", "echo_get_c16", s0, cps, cps,
                        lambda a, b: a / b)
    row("GetConnection, 16 in flight (calls/s)", f"echo {fmt_rate(base)}",
        fmt_rate(serv), fmt_ratio(ratio), "≥ 0.85× echo",
        None if ratio is None else ratio >= 0.85)

    base = runs.median("echo_list_c1", s0, p("p50"))
    serv = runs.median("list_c1", s0, p("p50"))
    ratio = runs.paired("list_c1", "echo_list_c1", s0, p("p50"), p("p50"),
                        lambda a, b: a / (b + 100))
    row("ListEvents, page of 100 of one connection, 1 in flight, p50",
        f"echo (same bytes) {fmt_us(base)} + 100 µs = "
        f"{fmt_us(None if base is None else base + 100)}",
        fmt_us(serv), fmt_ratio(ratio), "≤ 1.00× budget",
        None if ratio is None else ratio <= 1.0)

    scan = lambda d: d["scan"]["records_per_second"]
    base = runs.median("log_scan", s0, scan)
    serv = runs.median("rebuild", s0, lambda d: d["events_per_second"])
    ratio = runs.paired("rebuild", "log_scan", s0,
                        lambda d: d["events_per_second"], scan,
                        lambda a, b: a / b)
    events = runs.median("rebuild", s0, lambda d: d["rebuilt_events"])
    row("Rebuild of all projections (events/s)",
        f"raw scan of the same log: {fmt_rate(base)}", fmt_rate(serv),
        fmt_ratio(ratio), "≥ 0.40× scan",
        None if ratio is None else ratio >= 0.40,
        f"log of {events:,.0f} events" if events else "")

    big = sizes[-1]
    label = f"10^{len(str(s0)) - 1} → 10^{len(str(big)) - 1}"
    if big == s0:
        for metric, target in (
                ("Growth: single-event append, 64 in flight", "≥ 0.85×"),
                ("Growth: AppendEvents 100 per call", "≥ 0.85×"),
                ("Growth: GetConnection p99", "≤ 1.30×")):
            row(metric, "n/a", "n/a", "n/a", target, None,
                "not measured: --quick runs one log size")
    else:
        for name, metric in (("append_c64",
                              "single-event append, 64 in flight"),
                             ("append100_c1", "AppendEvents 100 per call, "
                              "1 in flight")):
            a = runs.median(name, s0, eps)
            b = runs.median(name, big, eps)
            ratio = b / a if a and b else None
            row(f"Growth {label}: {metric} (events/s)",
                f"at {s0:,}: {fmt_rate(a)}", f"at {big:,}: {fmt_rate(b)}",
                fmt_ratio(ratio), "≥ 0.85×",
                None if ratio is None else ratio >= 0.85)
        a = runs.median("get_c1", s0, p("p99"))
        b = runs.median("get_c1", big, p("p99"))
        ratio = b / a if a and b else None
        row(f"Growth {label}: GetConnection p99, 1 in flight",
            f"at {s0:,}: {fmt_us(a)}", f"at {big:,}: {fmt_us(b)}",
            fmt_ratio(ratio), "≤ 1.30×",
            None if ratio is None else ratio <= 1.30)

    # Memory: at each moment sampled during append runs, RSS against
    # block cache + memtables (at that moment) + 64 MiB; the worst moment.
    worst = None
    for (name, size), reps in runs.by.items():
        if not (name.startswith("append") or name in ("open_append",
                                                       "soak_append")):
            continue
        for d in reps.values():
            memory = (d.get("server") or {}).get("memory")
            if not memory:
                continue
            budget = 128 * MIB + memory["memtable_bytes"]
            r = memory["rss_bytes"] / budget
            if worst is None or r > worst[0]:
                worst = (r, memory["rss_bytes"], memory["memtable_bytes"],
                         name, size, d["server"]["rss_max_bytes"])
    if worst:
        r, rss, mem, name, size, peak = worst
        row("Memory: RSS under load (worst moment of the append runs)",
            f"64 MiB cache + {mem / MIB:.0f} MiB memtables + 64 MiB = "
            f"{(128 * MIB + mem) / MIB:.0f} MiB",
            f"{rss / MIB:.0f} MiB", fmt_ratio(r), "≤ 1.00× budget", r <= 1.0,
            f"{name} at {size:,}; that run's peak RSS {peak / MIB:.0f} MiB")
    else:
        row("Memory: RSS under load", "n/a", "n/a", "n/a", "≤ 1.00× budget",
            None)

    # Memory over the soak: median RSS of the last tenth of the run
    # against that of its second tenth (the first holds the warm-up of
    # caches and memtables).
    soak = [(size, d) for (name, size), reps in runs.by.items()
            if name == "soak_append" for d in reps.values()]
    if soak:
        size, d = soak[-1]
        server = d.get("server") or {}
        tenths = server.get("rss_tenths_median_bytes") or []
        minutes = d.get("seconds", 0) / 60
        if len(tenths) == 10:
            r = tenths[-1] / tenths[1]
            row(f"Memory: growth over a {minutes:.0f}-minute append run "
                "(median RSS, last tenth against the second)",
                f"{tenths[1] / MIB:.0f} MiB", f"{tenths[-1] / MIB:.0f} MiB",
                fmt_ratio(r), "≤ 1.10×", r <= 1.10,
                f"open loop at {d.get('calls_per_second', 0):,.0f} "
                f"appends/s on a log of {size:,}; medians per tenth: "
                + ", ".join(f"{t / MIB:.0f}" for t in tenths) + " MiB")
    else:
        row("Memory: no growth over a 10-minute run", "n/a", "n/a", "n/a",
            "≤ 1.10×", None, "needs --full (or SOAK_SECONDS=600)")

    # Restart at the largest log measured (the target names 10^7, which
    # only --full reaches): seconds from starting the process to the first
    # answered GetConnection, against the target's own budget.
    first = lambda d: d["first_answer_seconds"]
    for name, what, budget in (("restart_clean", "after a clean stop", 1.0),
                               ("restart_kill", "after SIGKILL under load",
                                3.0)):
        t = runs.median(name, big, first)
        note = "" if big >= 10**7 else (
            f"log of {big:,} events; 10^7 needs --full")
        row(f"Restart {what}: first answer (s)", f"budget {budget:.0f} s",
            "n/a" if t is None else f"{t:.3f} s",
            fmt_ratio(None if t is None else t / budget), "≤ 1.00× budget",
            None if t is None else t <= budget, note)
    return rows


def run_rows(runs, sizes):
    rows = []
    for (name, size), reps in sorted(runs.by.items(),
                                     key=lambda kv: (kv[0][1], kv[0][0])):
        first = next(iter(reps.values()))
        if "rpc" not in first or first.get("mode") == "fill":
            continue
        med = lambda get: runs.median(name, size, get)
        server = lambda key: (lambda d: d["server"][key])
        rows.append({
            "name": name, "size": size, "reps": len(reps),
            "mode": first.get("mode"),
            "concurrency": first.get("concurrency"),
            "rate": first.get("rate"),
            "calls_per_second": med(cps),
            "events_per_second": med(eps),
            "p50_us": med(p("p50")), "p99_us": med(p("p99")),
            "p999_us": med(p("p999")),
            "max_us": max(runs.values(name, size, p("max")) or [0]),
            "errors": sum(runs.values(name, size, lambda d: d["errors"])),
            "shed": sum(runs.values(name, size, lambda d: d.get("shed", 0))),
            "server_cpu_s_per_1000": med(server("cpu_seconds_per_1000_events")),
            "server_write_bytes_per_event":
                med(server("write_bytes_per_event")),
            "server_rss_max_mib": (lambda v: v / MIB if v else None)(
                med(server("rss_max_bytes"))),
            "request_bytes": med(lambda d: d["sizes"]["request_bytes_mean"]),
            "response_bytes": med(lambda d: d["sizes"]["response_bytes_mean"]),
        })
    return rows


def baseline_rows(runs, sizes):
    s0 = sizes[0]
    out = []
    fs = runs.values("fsync", s0, p("p50")) + runs.values(
        "fsync_after", s0, p("p50"))
    f50 = statistics.median(fs) if fs else None
    fs = runs.values("fsync", s0, p("p99")) + runs.values(
        "fsync_after", s0, p("p99"))
    f99 = statistics.median(fs) if fs else None
    probes = sorted(round(x) for x in runs.values("fsync", s0, p("p50")) +
                    runs.values("fsync_after", s0, p("p50")))
    out.append(("4 KiB pwrite + fdatasync (probes before and after each "
                "1-in-flight append run)",
                f"p50 {fmt_us(f50)}, p99 {fmt_us(f99)}; p50 of each probe: "
                f"{', '.join(map(str, probes))} µs"))
    value_bytes = lambda d: d["value_bytes_mean"]
    cpu = lambda d: d["cpu_seconds_per_1000_events"]
    for b in (1, 100):
        name = f"raw_write_{b}"
        out.append((f"raw RocksDB sync writes, batches of {b}",
                    f"{fmt_rate(runs.median(name, s0, eps), ' events/s')}, "
                    f"p50 {fmt_us(runs.median(name, s0, p('p50')))}, "
                    f"p99 {fmt_us(runs.median(name, s0, p('p99')))}, "
                    f"{runs.median(name, s0, value_bytes) or 0:.0f} B/value"))
    name = "raw_write_100_k10"
    out.append(("raw RocksDB sync writes, batches of 100, with 10 more "
                "small random keys per event (authtraild's key shape)",
                f"{fmt_rate(runs.median(name, s0, eps), ' events/s')}, "
                f"p50 {fmt_us(runs.median(name, s0, p('p50')))}, CPU "
                f"{fmt_cpu(runs.median(name, s0, cpu))} s per 1000 events "
                f"(1 key per event: "
                f"{fmt_cpu(runs.median('raw_write_100', s0, cpu))})"))
    for size in sizes:
        rs = runs.median("raw_scan", size,
                         lambda d: d["scan"]["records_per_second"])
        rp = runs.median("raw_scan", size,
                         lambda d: d["scan_parse"]["records_per_second"])
        out.append((f"raw scan of a {size:,}-record RocksDB log",
                    f"{fmt_rate(rs, ' records/s')} (with parsing: "
                    f"{fmt_rate(rp, ' records/s')})"))
        ls = runs.median("log_scan", size,
                         lambda d: d["scan"]["records_per_second"])
        lp = runs.median("log_scan", size,
                         lambda d: d["scan_parse"]["records_per_second"])
        n = runs.median("log_scan", size, lambda d: d["scan"]["records"])
        rb = runs.median("rebuild", size, lambda d: d["events_per_second"])
        out.append((f"authtrail log after the {size:,} phase "
                    f"({n or 0:,.0f} events)",
                    f"raw scan {fmt_rate(ls, ' records/s')}, with parsing "
                    f"{fmt_rate(lp, ' records/s')}; offline rebuild "
                    f"{fmt_rate(rb, ' events/s')}"))
    return out


def store_rows(store):
    if not store:
        return []
    rows = []
    for b in store.get("benchmarks", []):
        if b.get("aggregate_name") not in ("median", None):
            continue
        if b.get("run_type") == "aggregate" and b["aggregate_name"] != "median":
            continue
        rows.append({
            "name": b.get("run_name", b["name"]),
            "items_per_second": b.get("items_per_second"),
            "real_time": b.get("real_time"), "cpu_time": b.get("cpu_time"),
            "time_unit": b.get("time_unit"),
        })
    return rows


def markdown(meta, targets, runs_table, baselines, store):
    out = []
    missed = [t for t in targets if t["met"] is False]
    flag = "" if meta["mode"] == "default" else " --" + meta["mode"]
    out.append(f"## authtrail benchmarks — {meta['stamp']} "
               f"(`bench/run{flag}`)")
    out.append("")
    out.append(f"Machine: {meta['nproc']} cores, {meta['cpu_model']}, "
               f"kernel {meta['kernel']}; filesystem `{meta['filesystem']}`; "
               f"{meta['memory']}. Load average at start: "
               f"{meta['loadavg_start']}, at end: "
               f"{meta.get('loadavg_end', '?')}. "
               f"Commit {meta['commit']}"
               f"{' with local changes' if meta['dirty'] else ''}. "
               f"{meta['reps']} repetitions of {meta['duration_s']:g} s per "
               f"measurement; values are medians, ratios are medians of "
               f"per-repetition ratios.")
    out.append("")
    out.append("| metric | baseline | service | ratio | target | met |")
    out.append("|---|---|---|---|---|---|")
    for t in targets:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        note = f" ({t['note']})" if t["note"] else ""
        out.append(f"| {t['metric']}{note} | {t['baseline']} | {t['service']} "
                   f"| {t['ratio']} | {t['target']} | {met} |")
    out.append("")
    out.append(f"Targets missed: {len(missed)} of "
               f"{sum(1 for t in targets if t['met'] is not None)} measured.")
    out.append("")
    out.append("### Baselines")
    out.append("")
    out.append("| baseline | result |")
    out.append("|---|---|")
    for name, value in baselines:
        out.append(f"| {name} | {value} |")
    out.append("")
    out.append("### Load generator runs")
    out.append("")
    out.append("`size` is the pre-filled log; appends made by the runs come "
               "on top. Server columns are authtraild's (or echo_server's) "
               "CPU seconds per 1000 events (calls for reads), bytes written "
               "to disk per event, and peak RSS.")
    out.append("")
    out.append("| run | size | mode | calls/s | events/s | p50 | p99 | p99.9 "
               "| max | errors | CPU s/1k | B written/event | RSS MiB |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs_table:
        mode = (f"closed {r['concurrency']}" if r["mode"] == "closed"
                else f"open {r['rate']:,.0f}/s")
        if r["shed"]:
            mode += f" ({r['shed']} shed)"
        cpu = r["server_cpu_s_per_1000"]
        wb = r["server_write_bytes_per_event"]
        rss = r["server_rss_max_mib"]
        out.append(
            f"| {r['name']} | {r['size']:,} | {mode} | "
            f"{fmt_rate(r['calls_per_second'], '')} | "
            f"{fmt_rate(r['events_per_second'], '')} | {fmt_us(r['p50_us'])} | "
            f"{fmt_us(r['p99_us'])} | {fmt_us(r['p999_us'])} | "
            f"{fmt_us(r['max_us'])} | {r['errors']} | "
            f"{'' if cpu is None else f'{cpu:.3f}'} | "
            f"{'' if wb is None else f'{wb:,.0f}'} | "
            f"{'' if rss is None else f'{rss:.0f}'} |")
    out.append("")
    if store:
        out.append("### In-process (store_benchmark, 10^5 events pre-filled)")
        out.append("")
        out.append("| benchmark | items/s | time per iteration |")
        out.append("|---|---|---|")
        for s in store:
            t = s["real_time"]
            out.append(f"| {s['name']} | {fmt_rate(s['items_per_second'], '')} "
                       f"| {t:,.1f} {s['time_unit']} |")
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--work", help="the scratch folder of a run")
    source.add_argument("--results", help="an earlier results JSON file")
    parser.add_argument("--out", help="results JSON to write")
    parser.add_argument("--markdown", required=True)
    args = parser.parse_args()
    if args.work:
        records, meta, store = load(args.work)
        with open("/proc/loadavg") as f:
            meta["loadavg_end"] = f.read().strip()
    else:
        earlier = json.load(open(args.results))
        records, meta = earlier["records"], earlier["meta"]
        store = earlier.get("store_benchmark_raw")
    runs = Runs(records)
    sizes = sorted({r["size"] for r in records if r["name"] == "fill"})
    targets = target_rows(runs, sizes, meta)
    runs_table = run_rows(runs, sizes)
    baselines = baseline_rows(runs, sizes)
    store_table = store_rows(store)
    if args.out:
        json.dump({"meta": meta, "targets": targets, "runs": runs_table,
                   "baselines": baselines, "store_benchmark": store_table,
                   "store_benchmark_raw": store, "records": records},
                  open(args.out, "w"), indent=1)
    with open(args.markdown, "w") as f:
        f.write(markdown(meta, targets, runs_table, baselines, store_table))
        f.write("\n")


if __name__ == "__main__":
    main()
