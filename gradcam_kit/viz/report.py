"""``report.html``: one self-contained page to browse what ``explain`` wrote.

The page needs nothing but the files next to it: CSS and JavaScript are inline, images
are referenced by paths relative to the page, and no network resource is ever requested.
The per-image data is embedded once as JSON; the cards are built by a small inline script
one page at a time (``loading="lazy"`` on top), so a folder of tens of thousands of images
stays responsive. The script also counts loaded and broken images on ``<body>``
(``data-images-loaded`` / ``data-images-broken``), which the browser test reads.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["confusion_matrix", "write_report"]

PAGE_SIZE = 48


def confusion_matrix(
    true: Sequence[int | None], predicted: Sequence[int], num_classes: int
) -> list[list[int]]:
    """``matrix[t][p]``: how many images of true class ``t`` were predicted ``p``.

    Images with an unknown label (``None`` or a negative index) are left out.

    Raises:
        ValueError: the sequences differ in length or hold an index ``>= num_classes``.
    """
    if len(true) != len(predicted):
        raise ValueError(f"got {len(true)} labels for {len(predicted)} predictions")
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(true, predicted):
        if t is None or t < 0:
            continue
        if not (0 <= t < num_classes and 0 <= p < num_classes):
            raise ValueError(
                f"class index out of range for {num_classes} classes: true {t}, predicted {p}"
            )
        matrix[t][p] += 1
    return matrix


def _json_for_script(data: object) -> str:
    # "</script>" or "<!--" inside a string would end or confuse the <script> element;
    # \u003c is the same character to JSON.parse and harmless to the HTML parser.
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _relative(path: str | Path, output: Path) -> str:
    path = Path(path)
    try:
        return path.resolve().relative_to(output.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def write_report(
    output: str | Path,
    rows: Sequence[Mapping[str, object]],
    *,
    class_names: Sequence[str],
    skipped: Sequence[tuple[str, str]] = (),
    contact_sheet: str | Path | None = None,
    predictions_csv: str | Path | None = None,
    details: Mapping[str, str] | None = None,
    title: str = "Grad-CAM report",
    page_size: int = PAGE_SIZE,
) -> Path:
    """Writes ``output/report.html``.

    Args:
        output: the folder holding the overlays; the page goes there.
        rows: one mapping per explained image with ``index``, ``overlay`` (path of the
            overlay PNG), ``path`` (the input, as shown), ``label_idx`` (``None`` or ``-1``
            when unknown), ``pred_idx``, ``probability`` (of the predicted class) and
            ``explained_idx`` (the class the heatmap explains).
        class_names: the model's classes, in output order.
        skipped: ``(path, reason)`` for inputs that were not explained.
        contact_sheet: the contact-sheet PNG to link, if any.
        predictions_csv: the CSV to link, if any.
        details: extra ``name: value`` lines for the header (checkpoint, layer, ...).
        title: the page title.
        page_size: cards per page.

    Returns:
        The path of the page.

    Raises:
        ValueError: ``page_size < 1`` or a class index outside ``class_names``.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in class_names]
    records = []
    for row in rows:
        label = row.get("label_idx")
        label = -1 if label is None or label == "" else int(label)
        records.append(
            [
                int(row["index"]),
                _relative(str(row["overlay"]), output),
                str(row["path"]),
                label,
                int(row["pred_idx"]),
                round(float(row["probability"]), 4),
                int(row.get("explained_idx", row["pred_idx"])),
            ]
        )
    records.sort(key=lambda r: r[0])
    labelled = [r for r in records if r[3] >= 0]
    matrix = confusion_matrix([r[3] for r in labelled], [r[4] for r in labelled], len(names))
    correct = sum(matrix[i][i] for i in range(len(names)))
    predicted_counts = [sum(1 for r in records if r[4] == c) for c in range(len(names))]

    summary = [
        ("inputs", str(len(records) + len(skipped))),
        ("explained", str(len(records))),
        ("skipped", str(len(skipped))),
    ]
    if labelled:
        summary += [
            ("with labels", str(len(labelled))),
            ("accuracy", f"{100.0 * correct / len(labelled):.1f}%"),
            ("misclassified", str(len(labelled) - correct)),
        ]
    summary_html = "".join(
        f'<div class="stat"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        if k != "skipped" or not skipped
        else f'<a class="stat" href="#skipped"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></a>'
        for k, v in summary
    )
    detail_html = " &middot; ".join(
        f"{html.escape(k)}: <code>{html.escape(str(v))}</code>" for k, v in (details or {}).items()
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    counts_html = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{c}</td></tr>" for n, c in zip(names, predicted_counts)
    )
    counts_html = (
        "<table><thead><tr><th>predicted class</th><th>images</th></tr></thead>"
        f"<tbody>{counts_html}</tbody></table>"
    )
    matrix_html = ""
    if labelled:
        peak = max(max(r) for r in matrix) or 1
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = ""
        for t, row in enumerate(matrix):
            cells = ""
            for p, count in enumerate(row):
                shade = 0.12 + 0.6 * count / peak if count else 0.0
                hue = "34,139,34" if t == p else "200,40,40"
                cells += f'<td style="background:rgba({hue},{shade:.2f})">{count}</td>'
            body += f"<tr><th>{html.escape(names[t])}</th>{cells}</tr>"
        matrix_html = (
            '<table class="cm"><caption>confusion matrix</caption><thead><tr>'
            f'<th class="corner">true &darr; / predicted &rarr;</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody><tfoot><tr><th>all images</th>"
            + "".join(f"<td>{c}</td>" for c in predicted_counts)
            + "</tr></tfoot></table>"
        )
        counts_html = ""  # the matrix's last row holds the predicted counts
    skipped_html = ""
    if skipped:
        items = "".join(
            f"<tr><td><code>{html.escape(str(p))}</code></td><td>{html.escape(str(r))}</td></tr>"
            for p, r in skipped
        )
        skipped_html = (
            f'<section id="skipped"><h2>Skipped files ({len(skipped)})</h2>'
            f"<details{' open' if len(skipped) <= 20 else ''}><summary>files that could not be "
            f"explained</summary><table class=\"list\"><thead><tr><th>file</th><th>reason</th>"
            f"</tr></thead><tbody>{items}</tbody></table></details></section>"
        )
    links = []
    if predictions_csv is not None:
        links.append(f'<a href="{html.escape(_relative(predictions_csv, output))}">predictions.csv</a>')
    if contact_sheet is not None:
        links.append(f'<a href="{html.escape(_relative(contact_sheet, output))}">contact sheet</a>')
    class_options = "".join(
        f'<option value="pred:{i}">predicted {html.escape(n)}</option>'
        f'<option value="true:{i}">true {html.escape(n)}</option>'
        for i, n in enumerate(names)
    )
    data = {"classes": names, "rows": records, "pageSize": page_size}

    page = _TEMPLATE.format(
        title=html.escape(title),
        generated=generated,
        details=detail_html,
        details_sep=" &middot; " if detail_html else "",
        links=" &middot; ".join(links),
        summary=summary_html,
        counts=counts_html,
        matrix=matrix_html,
        skipped=skipped_html,
        class_options=class_options,
        wrong_option=(
            '<option value="wrong">misclassified</option><option value="right">correct</option>'
            if labelled
            else ""
        ),
        data=_json_for_script(data),
        css=_CSS,
        js=_JS,
    )
    path = output / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f8}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{font-size:12px;color:#b8c0d0}
header code{color:#fff}
header a{color:#9cc3ff}
main{padding:16px 24px}
section{background:#fff;border-radius:8px;padding:12px 16px;margin:0 0 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:15px;margin:0 0 8px}
.row{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.stats{display:flex;gap:10px;flex-wrap:wrap}
.stat{min-width:96px;padding:8px 12px;border-radius:6px;background:#eef1f6;text-align:center}
.stat .v{font-size:20px;font-weight:600}
.stat .k{font-size:12px;color:#5b6475}
a.stat{color:inherit;text-decoration:none;background:#fbe9e9}
caption{font-size:12px;color:#5b6475;caption-side:top;text-align:left}
table{border-collapse:collapse}
td,th{border:1px solid #d8dce4;padding:4px 10px;text-align:center}
table.list td{text-align:left}
.cm th.corner{font-weight:normal;font-size:11px;color:#5b6475}
.cm tfoot th,.cm tfoot td{color:#5b6475;font-weight:normal}
.controls{display:flex;gap:12px;flex-wrap:wrap;align-items:center;margin-bottom:10px}
.controls select,.controls button{font:inherit;padding:3px 8px}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{border:2px solid #d8dce4;border-radius:8px;overflow:hidden;background:#fff}
.card.wrong{border-color:#d03030}
.card.right{border-color:#3a9a3a}
.card a{display:block;line-height:0;background:#222}
.card img{width:100%;height:auto;display:block}
.card .missing{line-height:1.4;color:#fff;padding:40px 8px;text-align:center;background:#822}
.card .cap{padding:6px 8px;font-size:13px}
.card .file{font-family:ui-monospace,monospace;font-size:11px;color:#5b6475;word-break:break-all}
.badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:11px;font-weight:600;color:#fff;background:#d03030;margin-left:6px}
.bar{height:5px;background:#e3e6ee;border-radius:3px;margin:3px 0}
.bar span{display:block;height:100%;background:#2f6fdb;border-radius:3px}
.pager{display:flex;gap:8px;align-items:center}
"""

_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var classes = data.classes, rows = data.rows;
  var state = {filter: "all", sort: "index", page: 0, size: data.pageSize};
  var body = document.body;
  body.dataset.imagesLoaded = "0";
  body.dataset.imagesBroken = "0";
  function bump(key) { body.dataset[key] = String(Number(body.dataset[key]) + 1); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function selected() {
    var f = state.filter, out = rows.filter(function (r) {
      if (f === "all") { return true; }
      if (f === "wrong") { return r[3] >= 0 && r[3] !== r[4]; }
      if (f === "right") { return r[3] >= 0 && r[3] === r[4]; }
      var parts = f.split(":"), c = Number(parts[1]);
      return parts[0] === "pred" ? r[4] === c : r[3] === c;
    });
    if (state.sort === "prob-asc") { out.sort(function (a, b) { return a[5] - b[5]; }); }
    if (state.sort === "prob-desc") { out.sort(function (a, b) { return b[5] - a[5]; }); }
    return out;
  }
  function card(r) {
    var wrong = r[3] >= 0 && r[3] !== r[4];
    var box = el("div", "card" + (r[3] < 0 ? "" : (wrong ? " wrong" : " right")));
    box.dataset.index = String(r[0]);
    var link = el("a");
    link.href = r[1];
    var img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = r[2];
    img.addEventListener("load", function () { bump("imagesLoaded"); });
    img.addEventListener("error", function () {
      bump("imagesBroken");
      link.replaceChild(el("div", "missing", "image missing: " + r[1]), img);
    });
    img.src = r[1];
    link.appendChild(img);
    box.appendChild(link);
    var cap = el("div", "cap");
    var pred = el("div");
    pred.appendChild(el("b", null, classes[r[4]]));
    pred.appendChild(document.createTextNode(" " + (100 * r[5]).toFixed(1) + "%"));
    if (wrong) { pred.appendChild(el("span", "badge", "misclassified")); }
    cap.appendChild(pred);
    var bar = el("div", "bar"), fill = el("span");
    fill.style.width = (100 * r[5]).toFixed(1) + "%";
    bar.appendChild(fill);
    cap.appendChild(bar);
    cap.appendChild(el("div", null, "true: " + (r[3] >= 0 ? classes[r[3]] : "unknown") +
      (r[6] !== r[4] ? " \\u00b7 heatmap for " + classes[r[6]] : "")));
    cap.appendChild(el("div", "file", "#" + r[0] + " " + r[2]));
    box.appendChild(cap);
    return box;
  }
  function readHash() {
    // #filter=wrong&sort=prob-asc&page=2&size=96: a view that can be bookmarked or shared.
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      var kv = pair.split("="), key = decodeURIComponent(kv[0]), value = decodeURIComponent(kv[1] || "");
      if (key === "filter" || key === "sort") { state[key] = value; }
      if ((key === "page" || key === "size") && /^[0-9]+$/.test(value)) {
        state[key] = key === "page" ? Math.max(0, Number(value) - 1) : Math.max(1, Number(value));
      }
    });
    document.getElementById("filter").value = state.filter;
    document.getElementById("sort").value = state.sort;
    if (document.getElementById("filter").value !== state.filter) { state.filter = "all"; document.getElementById("filter").value = "all"; }
    if (document.getElementById("sort").value !== state.sort) { state.sort = "index"; document.getElementById("sort").value = "index"; }
  }
  function writeHash() {
    var hash = "#filter=" + encodeURIComponent(state.filter) + "&sort=" + state.sort +
      "&page=" + (state.page + 1) + "&size=" + state.size;
    try { history.replaceState(null, "", hash); } catch (err) { /* some file:// setups refuse */ }
  }
  function render() {
    var list = selected(), pages = Math.max(1, Math.ceil(list.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * state.size, cards = document.getElementById("cards");
    cards.textContent = "";
    var frag = document.createDocumentFragment();
    list.slice(start, start + state.size).forEach(function (r) { frag.appendChild(card(r)); });
    cards.appendChild(frag);
    document.getElementById("page-info").textContent = list.length ?
      "images " + (start + 1) + "\\u2013" + Math.min(start + state.size, list.length) +
      " of " + list.length + " (page " + (state.page + 1) + " of " + pages + ")" : "no images match";
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    writeHash();
  }
  function bind(id, key, reset) {
    document.getElementById(id).addEventListener("change", function (e) {
      state[key] = key === "size" ? Number(e.target.value) : e.target.value;
      if (reset) { state.page = 0; }
      render();
    });
  }
  bind("filter", "filter", true);
  bind("sort", "sort", true);
  bind("size", "size", true);
  document.getElementById("prev").addEventListener("click", function () { state.page -= 1; render(); });
  document.getElementById("next").addEventListener("click", function () { state.page += 1; render(); });
  readHash();
  var sizes = document.getElementById("size");
  [24, 48, 96, 192].forEach(function (n) {
    var o = el("option", null, String(n));
    o.value = String(n);
    if (n === state.size) { o.selected = true; }
    sizes.appendChild(o);
  });
  if ([24, 48, 96, 192].indexOf(state.size) < 0) {
    var o = el("option", null, String(state.size));
    o.value = String(state.size);
    o.selected = true;
    sizes.appendChild(o);
  }
  render();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<div class="meta">generated {generated}{details_sep}{details}</div>
<div class="meta">{links}</div>
</header>
<main>
<section><h2>Summary</h2><div class="row"><div class="stats">{summary}</div>
{counts}
{matrix}
</div></section>
<section><h2>Images</h2>
<div class="controls">
<label>show <select id="filter"><option value="all">all</option>{wrong_option}{class_options}</select></label>
<label>order <select id="sort"><option value="index">input order</option><option value="prob-asc">least confident first</option><option value="prob-desc">most confident first</option></select></label>
<label>per page <select id="size"></select></label>
<span class="pager"><button id="prev" type="button">&larr; previous</button><span id="page-info"></span><button id="next" type="button">next &rarr;</button></span>
</div>
<noscript><p>The image cards need JavaScript. The overlays are in the <code>overlays/</code> folder next to this page and listed in predictions.csv.</p></noscript>
<div id="cards"></div>
</section>
{skipped}
</main>
<script type="application/json" id="report-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""
