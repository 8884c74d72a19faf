"""report.html in a real browser: headless Chromium, no network, images must actually load.

A test-only copy of the page (same folder, so relative image paths still resolve) gets a
small script that, once the page has loaded, writes what it sees into ``<body
data-check=...>``: how many images are visible, how many of those decoded
(``naturalWidth > 0``), the cards on the page, then the same after clicking "next".
``--virtual-time-budget`` lets the page settle before ``--dump-dom`` prints the DOM.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradcam_kit.viz.report import write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [pytest.mark.browser, pytest.mark.subprocess, pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get install chromium); the report's browser test needs it",
)]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing can leave the machine
]

CHECK = """<script>
(function () {
  function look() {
    var visible = 0, loaded = 0, broken = [];
    Array.prototype.forEach.call(document.images, function (img) {
      var box = img.getBoundingClientRect();
      if (box.width === 0 || box.bottom < 0 || box.top > window.innerHeight) { return; }
      visible += 1;
      if (img.complete && img.naturalWidth > 0) { loaded += 1; } else { broken.push(img.getAttribute("src")); }
    });
    var cards = Array.prototype.map.call(document.querySelectorAll(".card"), function (c) {
      return Number(c.dataset.index);
    });
    return {visible: visible, loaded: loaded, broken: broken, cards: cards,
            missing: document.querySelectorAll(".missing").length,
            counted_broken: Number(document.body.dataset.imagesBroken),
            info: document.getElementById("page-info").textContent};
  }
  window.addEventListener("load", function () {
    setTimeout(function () {
      var first = look();
      document.getElementById("next").click();
      setTimeout(function () {
        document.body.setAttribute("data-check", JSON.stringify({first: first, second: look()}));
      }, 500);
    }, 1000);
  });
})();
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def browser_check(page: Path, tmp_path: Path, *, height: int = 5000, fragment: str = "") -> dict:
    """Loads a copy of ``page`` with the check script; returns what the script saw."""
    probe = page.with_name("_browser_check.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    try:
        done = chromium(
            "--run-all-compositor-stages-before-draw", "--virtual-time-budget=8000",
            f"--window-size=1200,{height}", "--dump-dom", probe.as_uri() + fragment, profile=tmp_path / "profile",
        )
    finally:
        probe.unlink()
    match = re.search(r'data-check="([^"]*)"', done.stdout)
    assert match is not None, f"the check script did not run; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def fake_results(output: Path, count: int) -> list[dict]:
    """Overlay PNGs and rows as explain writes them, without running a model."""
    rng = np.random.default_rng(0)
    (output / "overlays").mkdir(parents=True)
    rows = []
    for i in range(count):
        name = f"overlays/{i:06d}_case.png"
        pixels = rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(output / name)
        label, pred = i % 2, (i // 3) % 2
        rows.append({"index": i, "overlay": name, "path": f"case_{i}.png", "label_idx": label,
                     "pred_idx": pred, "probability": 0.5 + 0.01 * (i % 50), "explained_idx": pred})
    return rows


def test_every_visible_image_loads_and_pages_turn(tmp_path):
    output = tmp_path / "out"
    rows = fake_results(output, 30)
    page = write_report(output, rows, class_names=["normal", "lesion"], page_size=12,
                        skipped=[("x/notes.txt", "not an image file")])
    seen = browser_check(page, tmp_path)
    first, second = seen["first"], seen["second"]
    assert first["cards"] == list(range(12))
    assert first["visible"] == 12 and first["loaded"] == 12 and first["broken"] == []
    assert first["missing"] == 0 and first["counted_broken"] == 0
    assert "page 1 of 3" in first["info"]
    assert second["cards"] == list(range(12, 24))
    assert second["visible"] == second["loaded"] == 12 and second["missing"] == 0


def test_filters_and_order_come_from_the_address(tmp_path):
    output = tmp_path / "out"
    rows = fake_results(output, 30)
    page = write_report(output, rows, class_names=["normal", "lesion"], page_size=12)
    wrong = [r["index"] for r in rows if r["label_idx"] != r["pred_idx"]]
    first = browser_check(page, tmp_path, fragment="#filter=wrong&sort=index&page=1")["first"]
    assert first["cards"] == wrong[:12] and first["visible"] == first["loaded"] == len(wrong[:12])
    first = browser_check(page, tmp_path, fragment="#filter=all&sort=prob-desc&size=5")["first"]
    by_confidence = sorted(rows, key=lambda r: -r["probability"])
    assert [rows[i]["probability"] for i in first["cards"]] == [r["probability"] for r in by_confidence[:5]]


def test_a_missing_overlay_is_caught(tmp_path):
    """The check can fail: a deleted PNG shows up as broken."""
    output = tmp_path / "out"
    rows = fake_results(output, 4)
    (output / rows[2]["overlay"]).unlink()
    seen = browser_check(write_report(output, rows, class_names=["normal", "lesion"]), tmp_path)
    first = seen["first"]
    assert first["missing"] == 1 and first["counted_broken"] == 1
    assert first["loaded"] == 3


def test_explain_report_renders_and_screenshot(tmp_path):
    from gradcam_kit.cli.commands import main

    source = tmp_path / "images"
    for label in ("lesion", "normal"):
        (source / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(source / label / f"{label}_{i}.png")
    (source / "normal" / "broken.png").write_bytes(b"\x89PNG truncated")
    output = tmp_path / "out"
    with pytest.warns(UserWarning, match="random weights"):
        main(["explain", str(source), "--weights", "none", "--size", "64", "--output", str(output),
              "--num-workers", "0", "--batch-size", "4"])
    page = output / "report.html"
    seen = browser_check(page, tmp_path)["first"]
    assert len(seen["cards"]) == 6
    assert seen["visible"] == seen["loaded"] == 6 and seen["counted_broken"] == 0

    shot = tmp_path / "report.png"
    done = chromium("--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
                    "--window-size=1200,900", f"--screenshot={shot}",
                    page.as_uri(), profile=tmp_path / "profile")
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # a rendered page, not a blank one
    dom = chromium("--virtual-time-budget=3000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert "broken.png" in dom and "Skipped files (1)" in dom
