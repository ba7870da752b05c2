"""Every benchmark still runs end to end (``--quick``) and prints its figures.

Speed is measured by the benchmarks, never asserted here: these only keep them from
rotting as the code under them changes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks.runner import BENCHMARKS

# the figures the README's benchmark table quotes, per benchmark
QUOTED = {
    "edge_ingest": {"agent_per_s", "bare_per_s", "ratio", "agent_live_per_s",
                    "bare_live_per_s", "rss_mb_per_1000_sensors", "rss_mb_idle",
                    "cold_start_s"},
    "allocate": {"in_process_per_s", "in_process_per_cpu_s", "in_process_per_s_100x",
                 "ratio_100x_to_seed", "naive_ratio", "naive_agreement", "http_p50_ms",
                 "http_p99_ms"},
    "reroute": {"reroute_287_s", "naive_287_s", "naive_ratio_287", "seed_ratio_287"},
    "reroute_under_reads": {"reroute_alone_s", "reroute_under_reads_s", "ratio"},
    "e2e": {"p50_s", "p99_s", "mqtt_rtt_p50_ms", "rtt_ratio"},
    "cockpit": {"telemetry_single_per_s", "telemetry_batch_per_s", "bare_batch_per_s",
                "state_p50_ms", "push_p50_ms", "http_state_p50_ms", "healthz_p50_ms"},
    "scale": {"storm_s", "delivered_s", "lost", "applied_twice", "redelivered", "calm_s",
              "connect_s", "failover_s", "failover_max_s", "intake_1_per_s",
              "intake_2_per_s", "instances_2_over_1", "oversold"},
    "returns": {"accuracy_before", "accuracy_after_corrections", "test_texts"},
    "returns_cv": {"cv_before", "cv_after", "cv_after_restricted", "cv_after_shipped",
                   "chosen_alpha", "chosen_lexicon_weight", "chosen_mix",
                   "chosen_temperature", "shipped_is_best"},
    "returns_fresh": {"fresh_before", "fresh_after", "fresh_after_nb_alone"},
    "import": {"csv_rows_per_s", "csv_s", "xlsx_calamine_s", "xlsx_openpyxl_s",
               "calamine_to_openpyxl"},
    "auth": {"public_p50_ms", "token_p50_ms", "token_overhead_ms", "token_uncached_p50_ms",
             "session_p50_ms", "login_ms"},
    "inquiries": {"orders_loaded", "inquiry_p50_ms", "inquiry_p99_ms", "order_get_p50_ms",
                  "order_get_p99_ms", "ratio_p99", "inquiry_cpu_ms", "order_get_cpu_ms",
                  "first_response_p50_s",
                  "first_response_p95_s"},
}


def test_every_benchmark_has_its_quoted_figures_listed() -> None:
    assert set(QUOTED) == set(BENCHMARKS)


def _timeout(name: str) -> float:
    # scale starts five coordinator processes (storm, failover, intake) even when quick:
    # 80-110 s on the loaded 2-core machine
    return 240 if name == "scale" else 110


@pytest.mark.slow
@pytest.mark.timeout(260)  # the subprocess has its own, shorter one (_timeout)
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_quick_and_prints_its_figures(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", name, "--quick", "--json"],
                          capture_output=True, text=True, timeout=_timeout(name), check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"benchmark {name} ")  # the readable table comes first
    figures = json.loads(lines[-1])
    assert figures.pop("benchmark") == name
    details = figures.pop("details", {})
    assert isinstance(details, dict)
    missing = QUOTED[name] - set(figures)
    assert not missing, f"{name} no longer reports {sorted(missing)}"
    for key, value in figures.items():
        assert isinstance(value, int | float) and math.isfinite(value), key
        # an overhead is a difference of two timed medians: in a --quick run on a busy
        # machine the noise can put it below zero; every other figure is a count or time
        assert value >= 0 or "overhead" in key, key
    if "naive_agreement" in figures:  # the fast engine must decide as the naive one does
        assert figures["naive_agreement"] == 1.0


# the PostgreSQL variants (--db postgresql) and the figures the README quotes from them
QUOTED_POSTGRESQL = {
    "allocate": {"pg_in_process_per_s", "sqlite_in_process_per_s", "pg_to_sqlite"},
    "reroute": {"pg_reroute_287_tx_s", "sqlite_reroute_287_tx_s", "pg_reroute_287_s",
                "sqlite_reroute_287_s"},
    "reroute_under_reads": {"reroute_alone_s", "reroute_under_reads_s", "ratio"},
    "scale": {"storm_s", "lost", "applied_twice", "failover_s", "intake_1_per_s",
              "intake_2_per_s", "instances_2_over_1", "oversold"},
}


@pytest.mark.slow
@pytest.mark.timeout(260)
@pytest.mark.parametrize("name", sorted(QUOTED_POSTGRESQL))
def test_benchmark_runs_quick_on_postgresql(name: str, postgres_server: object) -> None:
    """``postgres_server`` only for its skip/fail rule: the benchmark starts its own."""
    done = subprocess.run([sys.executable, "-m", "benchmarks", name, "--db", "postgresql",
                           "--quick", "--json"],
                          capture_output=True, text=True, timeout=_timeout(name), check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.pop("details", None)
    missing = QUOTED_POSTGRESQL[name] - set(figures)
    assert not missing, f"{name} --db postgresql no longer reports {sorted(missing)}"
    assert all(math.isfinite(v) and v >= 0 for k, v in figures.items() if k != "benchmark")
