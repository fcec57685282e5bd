"""Tables, convergence boundaries and the plot of the split-policy study (studies/split_policy.py)."""
from __future__ import annotations

from collections import defaultdict
from statistics import median

from studies.split_policy import POLICIES, link_pages_per_ms, predict, residue_pages

COLUMNS = ("policy", "pages/round", "sleep ms", "rate pages/ms", "converged", "iterations",
           "predicted", "total ms", "downtime ms", "pages sent", "s2 faults", "wall s", "CPU s")
WHAT_IF_COLUMNS = ("policy", "pages/round", "sleep ms", "rate pages/ms", "fault µs",
                   "guest rate pages/ms", "converged", "iterations", "total ms", "downtime ms",
                   "pages sent", "s2 faults")


def _link(results: list[dict]) -> tuple[int, int, int, int]:
    p = results[0]["point"]
    return p["bandwidth"], p["downtime_ms"], p["max_iterations"], p["total"]


def first_pass_ms(results: list[dict]) -> float:
    """Virtual duration of iteration 1 (the full pass), median over the points."""
    return median(r["per_iteration"][0]["end_ms"] for r in results)


def predicted(r: dict) -> tuple[bool, int]:
    p = r["point"]
    return predict(r["rate"], total=p["total"], first_pass_ms=r["per_iteration"][0]["end_ms"],
                   bandwidth=p["bandwidth"], downtime_ms=p["downtime_ms"],
                   cap=p["max_iterations"])


def replayed(r: dict) -> int:
    """Iterations the recurrence gives from the measured D1 (pages dirtied in the full pass)
    and the guest's measured rate: the recurrence checked from iteration 2 on."""
    p = r["point"]
    q = r["rate_measured"] / link_pages_per_ms(p["bandwidth"])
    thr = residue_pages(p["bandwidth"], p["downtime_ms"])
    d, k = r["per_iteration"][0]["dirtied"], 1
    while d > thr and k < p["max_iterations"]:
        d, k = min(p["total"] + 2, q * d), k + 1      # + 2: dirtyram's own .data and stack
    return k + 1


def predicted_boundary(results: list[dict]) -> float:
    """Highest rate (pages/ms) the recurrence says converges within the cap (bisection)."""
    bw, down, cap, total = _link(results)
    t1 = first_pass_ms(results)
    lo, hi = 0.0, 2 * link_pages_per_ms(bw)
    for _ in range(60):
        mid = (lo + hi) / 2
        ok, _ = predict(mid, total=total, first_pass_ms=t1, bandwidth=bw, downtime_ms=down,
                        cap=cap)
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def boundaries(results: list[dict]) -> dict[str, tuple[float | None, float | None]]:
    """Per policy: (highest rate that converged, lowest rate that did not)."""
    out = {}
    for pol in POLICIES:
        rs = [r for r in results if r["point"]["policy"] == pol]
        if not rs:
            continue
        ok = [r["rate"] for r in rs if r["converged"]]
        bad = [r["rate"] for r in rs if not r["converged"]]
        out[pol] = (max(ok) if ok else None, min(bad) if bad else None)
    return out


def _row(r: dict) -> list[str]:
    p = r["point"]
    _, pred_iters = predicted(r)
    return [p["policy"], str(p["per_round"]), str(p["sleep_ms"]), f"{r['rate']:.2f}",
            "yes" if r["converged"] else f"**no** ({r['end']})", str(r["iterations"]),
            str(pred_iters), f"{r['total_ms']:.1f}", f"{r['downtime_ms']:.1f}",
            str(r["pages_sent"]), str(r["faults"]["total"]), f"{r['host']['wall_s']:.1f}",
            f"{r['host']['cpu_s']:.1f}"]


def _what_if_row(r: dict) -> list[str]:
    p = r["point"]
    return [p["policy"], str(p["per_round"]), str(p["sleep_ms"]), f"{r['rate']:.2f}",
            f"{p['fault_ns'] / 1000:g}", f"{r['rate_measured']:.2f}",
            "yes" if r["converged"] else f"**no** ({r['end']})", str(r["iterations"]),
            f"{r['total_ms']:.1f}", f"{r['downtime_ms']:.1f}", str(r["pages_sent"]),
            str(r["faults"]["total"])]


def table(results: list[dict], columns=COLUMNS, row=_row) -> str:
    key = lambda r: (r["rate"], r["point"]["fault_ns"], r["point"]["sleep_ms"],
                     POLICIES.index(r["point"]["policy"]))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in sorted(results, key=key)]
    return "\n".join(lines)


def _same_virtual(a: dict, b: dict) -> bool:
    keys = ("converged", "iterations", "total_ms", "pages_sent", "zero_pages", "guest_rounds")
    return all(a[k] == b[k] for k in keys) and abs(a["downtime_ms"] - b["downtime_ms"]) < 1e-3


def compare(results: list[dict]) -> str:
    """Lazy against eager: the same migration in virtual time? What each paid in faults,
    tables, TLB and host time."""
    by = {(r["point"]["policy"], r["point"]["per_round"], r["point"]["sleep_ms"]): r
          for r in results}
    pairs = [(by[("lazy",) + k[1:]], r) for k, r in by.items()
             if k[0] == "eager" and ("lazy",) + k[1:] in by]
    same = sum(_same_virtual(a, b) for a, b in pairs)
    out = [f"Points run under both policies: {len(pairs)}; identical in virtual time "
           f"(convergence, iterations, total time, downtime, pages sent, guest progress): "
           f"{same}.", ""]
    agg = {pol: defaultdict(float) for pol in POLICIES}
    for r in results:
        a = agg[r["point"]["policy"]]
        for k, v in r["faults_by_kind"].items():
            a[k] += v
        for k, v in r["host"]["fault_wall_s"].items():
            a["wall " + k] += v
        for k, v in r["host"].get("fault_cpu_s", {}).items():
            a["cpu " + k] += v
        a["points"] += 1
        a["faults"] += r["faults"]["total"]
        a["first-iteration faults"] += r["per_iteration"][0]["faults"]
        a["tables"] += r["tables_at_switchover"] - r["tables_before"]
        a["flushes"] += r["tlb_flushes"]
        a["fills"] += r["tlb_fills"]
        a["wall"] += r["host"]["wall_s"]
        a["cpu"] += r["host"]["cpu_s"]
        a["fault cpu"] += sum(r["host"].get("fault_cpu_s", {}).values())
        a["setup"] += r["host"].get("setup_cpu_s", 0.0)
    kinds = sorted({k for a in agg.values() for k in a if k[0] in "pt" and " L" in k})
    out += ["| | " + " | ".join(POLICIES) + " |", "|---|" + "---|" * len(POLICIES)]

    def line(label, fn):
        out.append(f"| {label} | " + " | ".join(fn(agg[p]) for p in POLICIES) + " |")
    line("points", lambda a: f"{a['points']:.0f}")
    line("stage-2 faults, all points", lambda a: f"{a['faults']:.0f}")
    line("... in iteration 1", lambda a: f"{a['first-iteration faults']:.0f}")
    for k in kinds:
        line(f"... {k}", lambda a, k=k: f"{a[k]:.0f}")
    for k in kinds:
        line(f"hypervisor µs per {k} fault (CPU / wall)",
             lambda a, k=k: f"{1e6 * a['cpu ' + k] / a[k]:.1f} / "
                            f"{1e6 * a['wall ' + k] / a[k]:.1f}" if a[k] else "-")
    line("table pages allocated (per point)", lambda a: f"{a['tables'] / a['points']:.1f}")
    line("VMID TLB flushes (per point)", lambda a: f"{a['flushes'] / a['points']:.1f}")
    line("TLB fills (all points)", lambda a: f"{a['fills']:.0f}")
    line("logging on (eager: + the split), CPU ms per point", lambda a: f"{1e3 * a['setup'] / a['points']:.2f}")
    line("stage-2 fault handling, CPU s, all points", lambda a: f"{a['fault cpu']:.1f}")
    line("wall s, all points", lambda a: f"{a['wall']:.1f}")
    line("CPU s, all points", lambda a: f"{a['cpu']:.1f}")
    return "\n".join(out)


def markdown(everything: list[dict], meta: dict | None = None) -> str:
    results = [r for r in everything if not r["point"]["fault_ns"]]
    what_if = [r for r in everything if r["point"]["fault_ns"]]
    bw, down, cap, total = _link(results)
    link, thr, pred = link_pages_per_ms(bw), residue_pages(bw, down), predicted_boundary(results)
    out = []
    if meta:
        out.append(f"{meta['points']} points on {meta['engine']}, {meta['wall_s']} s of wall "
                   f"clock ({meta.get('cpu_count')} CPUs).\n")
    out.append(f"Link {bw / (1 << 20):g} MiB/s = **{link:.2f} pages/ms**; downtime limit {down} "
               f"ms = a residue of **{thr} pages**; region {total} pages; iteration cap {cap}; "
               f"first pass {first_pass_ms(results):.1f} ms. The recurrence (iteration k "
               f"dirties rate x its duration) predicts convergence within the cap up to "
               f"**{pred:.2f} pages/ms**.\n")
    out += ["| policy | highest rate that converged | lowest rate that did not | "
            "predicted boundary | link rate |", "|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"
    for pol, (ok, bad) in boundaries(results).items():
        out.append(f"| {pol} | {fmt(ok)} | {fmt(bad)} | {pred:.2f} | {link:.2f} |")
    agree = sum(predicted(r)[0] == r["converged"] for r in results)
    iters = sum(predicted(r)[1] == r["iterations"] for r in results)
    again = sum(replayed(r) == r["iterations"] for r in results)
    out.append(f"\nPrediction vs measurement: convergence agrees on {agree}/{len(results)} "
               f"points, the iteration count on {iters}/{len(results)} (the rest within "
               f"{max(abs(predicted(r)[1] - r['iterations']) for r in results)}); replayed from "
               f"each point's measured first-pass dirty set and guest rate, on "
               f"{again}/{len(results)}.\n")
    out += [compare(results), "", table(results), ""]
    if what_if:
        out += ["What if a stage-2 fault cost the guest time (the model charges none; here an "
                "observer sleeps the vCPU that long per fault):", "",
                table(what_if, WHAT_IF_COLUMNS, _what_if_row), ""]
    return "\n".join(out)


def plot(everything: list[dict], path: str) -> None:
    """Iterations (whole range and around the boundary), pages sent and host CPU seconds
    against the dirty rate, one line per policy; the link rate and the predicted boundary."""
    results = [r for r in everything if not r["point"]["fault_ns"]]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    bw, _, cap, _ = _link(results)
    link, pred = link_pages_per_ms(bw), predicted_boundary(results)
    panels = [("iterations", "iterations (incl. stop-and-copy)", None),
              ("iterations", "iterations, around the boundary", (27.5, 34)),
              ("pages_sent", "pages sent", None),
              ("fault_cpu", "host CPU s handling stage-2 faults, per point", None)]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    style = {"lazy": dict(marker="o", ls="-", ms=8, mfc="none"),
             "eager": dict(marker="x", ls="--", ms=7)}
    for ax, (key, label, zoom) in zip(axes.flat, panels):
        for pol in POLICIES:
            by_rate = defaultdict(list)
            for r in results:
                if r["point"]["policy"] == pol:
                    by_rate[r["rate"]].append(sum(r["host"]["fault_cpu_s"].values())
                                             if key == "fault_cpu" else r[key])
            xs = sorted(x for x in by_rate if zoom is None or zoom[0] <= x <= zoom[1])
            ax.plot(xs, [sum(by_rate[x]) / len(by_rate[x]) for x in xs], label=pol,
                    **style[pol])
        ax.axvline(link, color="k", lw=1, label=f"link: {link:.2f} pages/ms")
        ax.axvline(pred, color="r", lw=1, ls=":", label=f"predicted boundary: {pred:.2f}")
        if key == "iterations":
            ax.axhline(cap + 1, color="grey", lw=0.8, ls="-.", label=f"cap ({cap}) reached")
        if zoom is None:
            ax.set_xscale("log")
            ax.set_xticks([8, 16, 24, 32, 64, 128])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("dirty rate (pages per ms of virtual time)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("dirtyram pre-copy from 2 MiB blocks: lazy (dissolve on first write) vs eager "
                 "(split when logging starts)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
