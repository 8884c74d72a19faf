"""The benchmark harness (benchmarks/bench_gradcam.py) on a tiny CPU configuration.

These tests run the real command so that it cannot rot; they check what it reports (every
contender, ratios against plain inference of the same run, heatmaps that agree with ours),
never how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gradcam.py"
BATCH = 2
TINY = ["--device", "cpu", "--size", "64", "--batch-sizes", str(BATCH), "--repeats", "1",
        "--warmup", "0", "--threads", "1"]

CPU_CONTENDERS = {
    "plain", "plain-cl", "ours-dormant", "ours", "ours-cl", "ours-layers", "ours-gradcam++",
    "pytorch-grad-cam", "captum", "torchcam",
}
CUDA_ONLY = {"plain-bf16", "ours-bf16"}
# Same algorithm, same weights, same input: the maps must match ours (fp32) this closely.
AGREEMENT = {"pytorch-grad-cam": 1e-4, "captum": 1e-4, "torchcam": 1e-4, "ours-cl": 1e-4}


def run_harness(out_dir: Path, *flags: str, env: dict[str, str] | None = None):
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--out-dir", str(out_dir), *flags],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((out_dir / "bench_cpu.json").read_text())
    return report, completed.stdout


def load_harness():
    spec = importlib.util.spec_from_file_location("bench_gradcam", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Every default contender, timing only (the memory processes are tested separately)."""
    out_dir = tmp_path_factory.mktemp("bench")
    report, stdout = run_harness(out_dir, "--no-memory")
    return report, stdout, out_dir


def by_name(report):
    return {r["contender"]: r for r in report["results"]}


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_contender_is_reported(full_run):
    report, _, _ = full_run
    results = by_name(report)
    assert set(results) == CPU_CONTENDERS | CUDA_ONLY
    for name in CPU_CONTENDERS:
        result = results[name]
        assert result["status"] == "ok", (name, result["status"])
        assert result["batch_size"] == BATCH
        assert len(result["times_ms"]) == 1 and result["median_ms"] > 0
        assert result["q1_ms"] <= result["median_ms"] <= result["q3_ms"]
    for name in CUDA_ONLY:
        assert results[name]["status"] == "skipped: CUDA only"
        assert results[name]["median_ms"] is None


@pytest.mark.slow
@pytest.mark.subprocess
def test_ratios_are_against_plain_inference_of_the_same_run(full_run):
    report, _, _ = full_run
    results = by_name(report)
    plain = results["plain"]["median_ms"]
    assert results["plain"]["ratio"] == pytest.approx(1.0)
    for name in CPU_CONTENDERS:
        result = results[name]
        assert result["ratio"] == pytest.approx(result["median_ms"] / plain, rel=1e-9)
        matched = results[result["baseline"]]["median_ms"]
        assert result["ratio_matched"] == pytest.approx(result["median_ms"] / matched, rel=1e-9)
        assert result["images_per_s"] == pytest.approx(BATCH / result["median_ms"] * 1e3)
    assert results["ours-cl"]["baseline"] == "plain-cl"
    # The targets are evaluated on this run's own figures (B=8 was not run here).
    assert {t["target"] for t in report["targets"]} == {
        "ours time / plain time", "pytorch-grad-cam time / ours time"
    }
    assert all(t["met"] is None for t in report["targets"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_heatmaps_agree_with_ours(full_run):
    report, _, _ = full_run
    results = by_name(report)
    ours = results["ours"]
    # A real map, not a constant one (which would agree with anything).
    assert ours["heatmap_min"] == pytest.approx(0.0, abs=1e-6)
    assert ours["heatmap_max"] == pytest.approx(1.0, abs=1e-6)
    assert 0.02 < ours["heatmap_mean"] < 0.98
    for name, tolerance in AGREEMENT.items():
        diff = results[name]["max_abs_diff"]
        assert diff is not None and diff <= tolerance, (name, diff)
        assert results[name]["heatmap_max"] == pytest.approx(1.0, abs=1e-4)
    assert results["plain"]["max_abs_diff"] is None  # no heatmap to compare


@pytest.mark.slow
@pytest.mark.subprocess
def test_writes_table_json_and_plot(full_run):
    report, stdout, out_dir = full_run
    assert "| 2 | pytorch-grad-cam |" in stdout and "Targets:" in stdout
    assert (out_dir / "bench_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["batch_sizes"] == [BATCH]
    assert meta["versions"]["torch"] and "bench_gradcam.py" in meta["command"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_missing_library_is_reported_and_memory_is_measured_per_process(tmp_path):
    fake = tmp_path / "blocked" / "captum"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('captum blocked for this test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent), env.get("PYTHONPATH")]))
    report, stdout = run_harness(
        tmp_path / "out", "--contenders", "plain", "ours", "captum", env=env
    )
    results = by_name(report)
    assert results["captum"]["status"] == "not installed: pip install captum"
    assert results["captum"]["median_ms"] is None and results["captum"]["memory_mb"] is None
    assert "not installed" in stdout
    plain, ours = results["plain"]["memory_mb"], results["ours"]["memory_mb"]
    assert plain > 0 and ours > 0
    assert results["ours"]["memory_ratio"] == pytest.approx(ours / plain)


def test_rejects_bad_flags(capsys):
    harness = load_harness()
    with pytest.raises(SystemExit):
        harness.main(["--device", "cpu", "--repeats", "0"])
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        harness.main(["--device", "cpu", "--batch-sizes", "8", "0"])
    assert "--batch-sizes must be positive" in capsys.readouterr().err
