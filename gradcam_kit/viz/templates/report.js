(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var classes = data.classes, rows = data.rows;
  // A multi-label page (data.findings): a row is [index, path, probabilities, truth, overlays].
  var findings = data.findings || null, thresholds = data.thresholds || [];
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
  function called(r, k) { return r[2][k] >= thresholds[k]; }
  function missed(r, k) { return (r[3][k] === 0 || r[3][k] === 1) && (r[3][k] === 1) !== called(r, k); }
  function keepFinding(r, f) {
    var any = r[2].some(function (p, k) { return called(r, k); });
    if (f === "any" || f === "none") { return (f === "any") === any; }
    var parts = f.split(":"), k = Number(parts[1]);
    if (parts[0] === "pos") { return called(r, k); }
    if (parts[0] === "true") { return r[3][k] === 1; }
    return parts[0] === "wrong" ? missed(r, k) : true;
  }
  function confidence(r) { return findings ? Math.max.apply(null, r[2]) : r[5]; }
  function selected() {
    var f = state.filter, out = rows.filter(function (r) {
      if (f === "all") { return true; }
      if (findings) { return keepFinding(r, f); }
      if (f === "wrong") { return r[3] >= 0 && r[3] !== r[4]; }
      if (f === "right") { return r[3] >= 0 && r[3] === r[4]; }
      var parts = f.split(":"), c = Number(parts[1]);
      return parts[0] === "pred" ? r[4] === c : r[3] === c;
    });
    if (state.sort === "prob-asc") { out.sort(function (a, b) { return confidence(a) - confidence(b); }); }
    if (state.sort === "prob-desc") { out.sort(function (a, b) { return confidence(b) - confidence(a); }); }
    return out;
  }
  function picture(href, alt) {
    var link = el("a");
    link.href = href;
    var img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    img.addEventListener("load", function () { bump("imagesLoaded"); });
    img.addEventListener("error", function () {
      bump("imagesBroken");
      link.replaceChild(el("div", "missing", "image missing: " + href), img);
    });
    img.src = href;
    link.appendChild(img);
    return link;
  }
  function findingLine(r, k) {
    var line = el("div", "finding" + (called(r, k) ? " on" : ""));
    line.appendChild(el("span", "name", findings[k]));
    var bar = el("div", "bar"), fill = el("span"), tick = el("i");
    fill.style.width = (100 * r[2][k]).toFixed(1) + "%";
    tick.style.left = (100 * thresholds[k]).toFixed(1) + "%";
    tick.title = "threshold " + thresholds[k].toFixed(3);
    bar.appendChild(fill);
    bar.appendChild(tick);
    line.appendChild(bar);
    line.appendChild(el("span", null, (100 * r[2][k]).toFixed(1) + "%"));
    if (data.labelled) {
      var t = r[3][k];
      line.appendChild(el("span", "truth" + (missed(r, k) ? " miss" : ""),
        t === 1 ? "true +" : t === 0 ? "true \u2212" : t === -1 ? "uncertain" : "blank"));
    }
    return line;
  }
  function findingCard(r) {
    var labelled = r[3].some(function (t) { return t === 0 || t === 1; });
    var wrong = r[2].some(function (p, k) { return missed(r, k); });
    var box = el("div", "card" + (labelled ? (wrong ? " wrong" : " right") : ""));
    box.dataset.index = String(r[0]);
    var shots = el("div", "shots");
    r[4].forEach(function (o) {
      var fig = el("figure");
      fig.appendChild(picture(o[1], r[1] + ": " + findings[o[0]]));
      fig.appendChild(el("figcaption", null, findings[o[0]]));
      shots.appendChild(fig);
    });
    if (!r[4].length) { shots.appendChild(el("div", "none", "no finding at or above its threshold")); }
    box.appendChild(shots);
    var cap = el("div", "cap");
    findings.forEach(function (name, k) { cap.appendChild(findingLine(r, k)); });
    cap.appendChild(el("div", "file", "#" + r[0] + " " + r[1]));
    box.appendChild(cap);
    return box;
  }
  function card(r) {
    if (findings) { return findingCard(r); }
    var wrong = r[3] >= 0 && r[3] !== r[4];
    var box = el("div", "card" + (r[3] < 0 ? "" : (wrong ? " wrong" : " right")));
    box.dataset.index = String(r[0]);
    box.appendChild(picture(r[1], r[2]));
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
      (r[6] !== r[4] ? " \u00b7 heatmap for " + classes[r[6]] : "")));
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
      "images " + (start + 1) + "\u2013" + Math.min(start + state.size, list.length) +
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
