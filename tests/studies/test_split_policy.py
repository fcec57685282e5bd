"""The split-policy study (studies/split_policy.py): a point is a pure function of its
parameters, the process pool and a Dask cluster give identical results, and convergence and
non-convergence are reported as such under both policies. Small machines, so it stays fast."""
import pytest

from studies import split_report
from studies.split_policy import POLICIES, Point, deterministic, predict, run_point, sweep

# 1024 pages round-robin in 8 MiB: light for the default link (128 MiB/s, 300 ms)
LIGHT = dict(per_round=8, sleep_ms=1, total=1024, ram_mib=8)
# 64 pages/ms over 16 MiB/s (4.1 pages/ms) with a 30 ms downtime (122 pages): never fits
HEAVY = dict(per_round=64, sleep_ms=1, total=2048, ram_mib=16, bandwidth=16 << 20,
             downtime_ms=30, max_iterations=4)


def test_a_point_is_deterministic_and_the_stream_arrives_intact():
    a = run_point(Point("lazy", **LIGHT, verify=True))
    b = run_point(Point("lazy", **LIGHT, verify=True))
    assert deterministic(a) == deterministic(b)
    assert a["verified"] is True                    # digests equal, the destination runs on
    assert a["host"]["wall_s"] > 0 and "host" not in deterministic(a)


def test_both_policies_converge_at_a_light_rate_and_not_at_a_heavy_one():
    light = {pol: run_point(Point(pol, **LIGHT)) for pol in POLICIES}
    heavy = {pol: run_point(Point(pol, **HEAVY)) for pol in POLICIES}
    for pol in POLICIES:
        assert light[pol]["converged"] and light[pol]["end"] == "converged"
        assert light[pol]["iterations"] == 2 and light[pol]["downtime_ms"] < 300
        h = heavy[pol]
        assert not h["converged"] and h["end"] == "cap"
        assert h["iterations"] == HEAVY["max_iterations"] + 1     # + the forced stop-and-copy
        assert h["downtime_ms"] > HEAVY["downtime_ms"]            # what the cap cost
        assert [it["dirtied"] for it in h["per_iteration"][1:-1]] == [2048 + 2] * 3
    # the policies differ in the faults they take, not in the migration itself
    assert light["lazy"]["faults_by_kind"].get("translation L3", 0) > 0
    assert set(light["eager"]["faults_by_kind"]) == {"permission L3"}
    assert light["eager"]["eager_splits"] == 4 and light["lazy"]["eager_splits"] == 0
    for k in ("iterations", "total_ms", "pages_sent", "guest_rounds"):
        assert light["lazy"][k] == light["eager"][k] and heavy["lazy"][k] == heavy["eager"][k]
    # the recurrence agrees, and the report says so
    p = heavy["lazy"]["point"]
    assert predict(64.0, total=p["total"], first_pass_ms=heavy["lazy"]["per_iteration"][0]
                   ["end_ms"], bandwidth=p["bandwidth"], downtime_ms=p["downtime_ms"],
                   cap=p["max_iterations"]) == (False, 5)
    text = split_report.markdown(list(heavy.values()))
    assert "**no** (cap)" in text and "identical in virtual time" in text


def test_the_process_pool_and_a_dask_cluster_give_identical_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    points = [Point(pol, **LIGHT) for pol in POLICIES] + \
             [Point("eager", **dict(HEAVY, max_iterations=2))]
    pooled = sweep(points, workers=2)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        dasked = sweep(points, scheduler=cluster.scheduler_address)
    assert [deterministic(r) for r in pooled] == [deterministic(r) for r in dasked]
    assert [r["point"]["policy"] for r in dasked] == ["lazy", "eager", "eager"]
    assert [r["converged"] for r in dasked] == [True, True, False]
    pytest.importorskip("matplotlib")
    split_report.plot(pooled, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 10_000
