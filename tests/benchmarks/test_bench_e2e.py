"""benchmarks/bench_e2e.py on a tiny CPU configuration, so that it cannot rot.

Checks what it reports (every job and format, ratios against plain inference of the same
run, explain's time split by stage), never how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_e2e.py"
IMAGES = 4


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_e2e", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--images", str(IMAGES), "--file-size", "64",
         "--size", "64", "--batch-size", "2", "--rounds", "2", "--warmup", "0", "--threads", "1",
         "--out-dir", str(out), "--tag", "tiny"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (out / "e2e_cpu_tiny.md").read_text().startswith("| format | job |")
    return json.loads((out / "e2e_cpu_tiny.json").read_text())


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_job_and_format_is_timed_against_plain_of_the_same_format(report):
    rows = {(r["job"], r["format"]): r for r in report["results"]}
    assert set(rows) == {(job, fmt) for job in ("plain", "explain", "evaluate") for fmt in ("png", "png16")}
    for (_job, fmt), row in rows.items():
        assert row["images"] == IMAGES
        plain = rows[("plain", fmt)]
        assert row["x_plain"] == pytest.approx(row["images_per_s"] / plain["images_per_s"])
        assert row["x_plain_best"] == pytest.approx(row["best_images_per_s"] / plain["best_images_per_s"])
        assert row["cpu_ms_per_image"] > 0 and row["x_plain_cpu"] > 0
    assert rows[("plain", "png")]["x_plain"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.subprocess
def test_stages_come_from_explains_own_profile(report):
    explain = next(r for r in report["results"] if r["job"] == "explain")
    for stage in ("wait for data", "model", "colouring", "title+PNG (summed, threads)", "whole command"):
        assert stage in explain["stages_s"], sorted(explain["stages_s"])
    plain = next(r for r in report["results"] if r["job"] == "plain")
    assert {"model", "decode (summed in workers)"} <= set(plain["stages_s"])
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch_threads"] == 1 and env["loadavg_end"] is not None


def test_parse_profile_reads_seconds_per_stage():
    text = (
        "something else  1.0\n"
        "profile (8 images, rank 0 of 1; seconds, ms per image):\n"
        "  set-up (model, input scan)       1.25\n"
        "  model                            0.40    50.00\n"
        "  title+PNG (summed, threads)      0.08    10.00\n"
        "  whole command                    2.00  -> 4.0 images/s\n"
    )
    assert load_bench().parse_profile(text) == {
        "set-up (model, input scan)": 1.25, "model": 0.40, "title+PNG (summed, threads)": 0.08,
        "whole command": 2.00,
    }
