"""The HTML of `pbt view`: one file with its data, style and script inline (no server, no network).

The data goes in a `<script type="application/json">` block; the script draws only the current page of
the current tab (PAGE_SIZE items), so a file of 10,000 trees opens as fast as its JSON parses.
"""

from __future__ import annotations

import html
import json
from typing import Any

PAGE_SIZE = 25
GENERATOR = "pbt view"  # marks a file `pbt view` wrote, which a later run may replace

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#23395b;color:#fff;padding:10px 16px}header h1{font-size:17px;margin:0 0 2px}
header .src{font-size:12px;opacity:.8}
nav{display:flex;gap:4px;padding:8px 16px 0;background:#eef1f5;border-bottom:1px solid #ccd}
nav button{border:1px solid #ccd;border-bottom:none;background:#e1e6ee;padding:6px 12px;cursor:pointer;
border-radius:6px 6px 0 0;font-size:14px}nav button.on{background:#fff;font-weight:600}
#filters{display:flex;flex-wrap:wrap;gap:8px;align-items:center;padding:8px 16px;background:#fff;
border-bottom:1px solid #dde}#filters label{font-size:12px;color:#555}
#filters select,#filters input{font-size:13px;padding:2px 4px}
main{padding:8px 16px}.count{color:#555;font-size:13px;margin:4px 0}
.item{background:#fff;border:1px solid #dde;border-radius:6px;margin:8px 0;padding:6px 10px}
.item>summary{cursor:pointer;font-weight:600}.q{font-weight:600}.gold{color:#2d6a2d;font-size:12px}
details.turn{margin:4px 0 4px 14px;border-left:3px solid #cfd6e4;padding-left:8px}
details.turn.A{border-left-color:#7a9cc6}details.turn.B{border-left-color:#c69a7a}
details.turn>summary{cursor:pointer}.text{white-space:pre-wrap;margin:4px 0;color:#333}
.tag{display:inline-block;border-radius:4px;padding:0 5px;margin:0 2px;font-size:12px;background:#eef}
.ok{background:#dff3df}.bad{background:#f7dede}.none{background:#eee;color:#777}
.chosen{background:#d7ecff;border:1px solid #79a9d9}.rejected{background:#ffe4cc;border:1px solid #d9a979}
.stop{background:#f3f0d9}.pager{margin:8px 0}.pager button{margin-right:4px}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde;padding:2px 6px;
text-align:right}th{background:#eef1f5}td:nth-child(-n+3){text-align:left}
.msg{margin:4px 0;padding:4px 8px;border-radius:4px;background:#f4f6f9;white-space:pre-wrap}
.msg .who{font-weight:600;font-size:12px;color:#555;display:block}.note{font-size:12px;color:#2d4f7a}
.pairbox{display:grid;grid-template-columns:1fr 1fr;gap:8px}.pairbox>div{white-space:pre-wrap;padding:6px;
border-radius:4px}.empty{color:#777;padding:20px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("pbt-data").textContent);
  var PAGE = __PAGE_SIZE__;
  var state = {tab: null, page: 0, filters: {}};
  var TABS = [["trees", "Trees", DATA.trees.length], ["pairs", "Pairs", DATA.pairs.length],
              ["samples", "Transcripts", DATA.samples.length], ["diagnostics", "Diagnostics", DATA.diagnostics ? 1 : 0]];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "cls") { node.className = attrs[k]; }
      else { node.setAttribute(k, attrs[k]); }
    }); }
    (children || []).forEach(function (c) { if (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }
  function tag(text, cls) { return el("span", {cls: "tag " + (cls || ""), text: text}); }
  function yesno(v) { return v === true ? "yes" : v === false ? "no" : "-"; }
  function uniq(values) { var seen = {}; return values.filter(function (v) {
    if (v === null || v === undefined || seen[v]) { return false; } seen[v] = true; return true; }).sort(); }

  // --- filters -----------------------------------------------------------------------------------
  function options(tab) {
    if (tab === "trees") {
      var turns = [].concat.apply([], DATA.trees.map(function (t) { return t.turns; }));
      return [["kind", "pair kind", uniq([].concat.apply([], DATA.trees.map(function (t) {
                 return t.pairs.map(function (p) { return p.kind; }); })))],
              ["correct", "a turn that is", ["correct", "wrong"]],
              ["level", "level", uniq(turns.filter(function (t) { return t.level >= 0; }).map(function (t) { return String(t.level); }))],
              ["persona", "persona", uniq(turns.map(function (t) { return t.persona; }))],
              ["flipped", "answer changed", ["yes", "no"]]];
    }
    if (tab === "pairs") {
      return [["kind", "kind", uniq(DATA.pairs.map(function (p) { return p.kind; }))],
              ["split", "split", uniq(DATA.pairs.map(function (p) { return p.split; }))],
              ["level", "level", uniq(DATA.pairs.map(function (p) { return p.level === null || p.level === undefined ? null : String(p.level); }))],
              ["persona", "persona", uniq([].concat.apply([], DATA.pairs.map(function (p) { return [p.personas.chosen, p.personas.rejected]; })))]];
    }
    if (tab === "samples") {
      return [["kind", "evaluation", uniq(DATA.samples.map(function (s) { return s.label; }))],
              ["model", "model", uniq(DATA.samples.map(function (s) { return s.model; }))],
              ["correct", "final answer", ["correct", "wrong"]],
              ["flipped", "flipped", ["yes", "no"]]];
    }
    return [];
  }

  function drawFilters() {
    var box = document.getElementById("filters");
    box.textContent = "";
    if (state.tab === "diagnostics") { return; }
    options(state.tab).forEach(function (o) {
      if (!o[2].length) { return; }
      var select = el("select", {id: "f-" + o[0], "data-filter": o[0]}, [el("option", {value: "", text: "any"})]);
      o[2].forEach(function (v) { select.appendChild(el("option", {value: v, text: v})); });
      select.value = state.filters[o[0]] || "";
      select.addEventListener("change", function () { state.filters[o[0]] = select.value; state.page = 0; draw(); });
      box.appendChild(el("label", {}, [o[1] + " ", select]));
    });
    var search = el("input", {id: "search", type: "search", placeholder: "search text", value: state.filters.q || ""});
    search.addEventListener("input", function () { state.filters.q = search.value; state.page = 0; draw(); });
    box.appendChild(el("label", {}, ["search ", search]));
  }

  function has(text, q) { return !q || (text || "").toLowerCase().indexOf(q) >= 0; }

  function treeMatches(t, f) {
    var q = (f.q || "").toLowerCase();
    if (f.kind && !t.pairs.some(function (p) { return p.kind === f.kind; })) { return false; }
    var turnFilter = f.correct || f.level || f.persona;
    if (turnFilter && !t.turns.some(function (u) {
      if (u.level < 0) { return false; }
      if (f.correct && (u.correct ? "correct" : "wrong") !== f.correct) { return false; }
      if (f.level && String(u.level) !== f.level) { return false; }
      if (f.persona && u.persona !== f.persona) { return false; }
      return true; })) { return false; }
    if (f.flipped) {
      var changed = t.turns.some(function (u) { return u.changed; });
      if ((changed ? "yes" : "no") !== f.flipped) { return false; }
    }
    return !q || has(t.question, q) || has(t.id, q) || t.turns.some(function (u) { return has(u.text, q) || has(u.answer, q); });
  }
  function pairMatches(p, f) {
    var q = (f.q || "").toLowerCase();
    if (f.kind && p.kind !== f.kind) { return false; }
    if (f.split && p.split !== f.split) { return false; }
    if (f.level && String(p.level) !== f.level) { return false; }
    if (f.persona && p.personas.chosen !== f.persona && p.personas.rejected !== f.persona) { return false; }
    return !q || has(p.question, q) || has(p.chosen, q) || has(p.rejected, q) || has(p.id, q);
  }
  function sampleMatches(s, f) {
    var q = (f.q || "").toLowerCase();
    if (f.kind && s.label !== f.kind) { return false; }
    if (f.model && s.model !== f.model) { return false; }
    if (f.correct && (s.correct ? "correct" : "wrong") !== f.correct) { return false; }
    if (f.flipped && yesno(s.flipped) !== f.flipped) { return false; }
    return !q || has(s.question, q) || s.transcript.some(function (m) { return has(m.text, q); });
  }

  // --- items -------------------------------------------------------------------------------------
  function turnNode(tree, turn, byId, marks) {
    var summary = el("summary", {}, [el("b", {text: "L" + turn.level + " " + turn.agent}), " ",
      tag(turn.persona || "-"),
      tag("answer: " + (turn.extracted || "-") + (turn.answer && turn.answer !== turn.extracted ? " -> " + turn.answer : ""),
          turn.extracted === "NONE" ? "none" : ""),
      tag(turn.correct ? "correct" : "wrong", turn.correct ? "ok" : "bad"),
      tag("branch score " + turn.branch),
      turn.changed ? tag("changed answer", "bad") : null,
      turn.stop ? tag("stop: " + turn.stop.replace("_", " "), "stop") : null]);
    (marks[turn.id] || []).forEach(function (m) {
      summary.appendChild(tag(m.role + " (" + m.kind + (m.margin === null ? "" : ", margin " + m.margin.toFixed(2)) +
        ") vs turn " + m.other + (m.computed ? ", computed" : ""), m.role));
    });
    var node = el("details", {cls: "turn " + (turn.agent || ""), "data-turn": String(turn.id)},
                  [summary, el("div", {cls: "text", text: turn.text})]);
    turn.children.forEach(function (id) { node.appendChild(turnNode(tree, byId[id], byId, marks)); });
    return node;
  }
  function treeNode(t) {
    var byId = {}; t.turns.forEach(function (u) { byId[u.id] = u; });
    var marks = {};
    t.pairs.forEach(function (p) {
      (marks[p.chosen] = marks[p.chosen] || []).push({role: "chosen", kind: p.kind, margin: p.margin, other: p.rejected, computed: p.computed});
      (marks[p.rejected] = marks[p.rejected] || []).push({role: "rejected", kind: p.kind, margin: p.margin, other: p.chosen, computed: p.computed});
    });
    var root = t.turns.filter(function (u) { return u.parent === null; })[0];
    var kinds = uniq(t.pairs.map(function (p) { return p.kind; }));
    var box = el("details", {cls: "item tree", "data-tree": t.id}, [el("summary", {}, [
      el("span", {cls: "q", text: t.question}), " ", tag(t.id), tag((t.turns.length - 1) + " turns"),
      tag(t.pairs.length + " pairs" + (kinds.length ? ": " + kinds.join(", ") : ""))]),
      el("div", {cls: "gold", text: "gold: " + t.gold.join(" | ")})]);
    if (root) { root.children.forEach(function (id) { box.appendChild(turnNode(t, byId[id], byId, marks)); }); }
    return box;
  }
  function pairNode(p) {
    var prompt = el("div", {}, p.prompt.map(function (m) {
      return el("div", {cls: "msg"}, [el("span", {cls: "who", text: m.role}), m.content]); }));
    return el("details", {cls: "item pair"}, [el("summary", {}, [el("span", {cls: "q", text: p.question}), " ",
      tag(p.kind, p.kind === "resist" ? "chosen" : p.kind === "accept" ? "rejected" : ""), tag("level " + p.level),
      tag(p.split || "-"), p.margin === null ? null : tag("margin " + p.margin.toFixed(2))]),
      el("div", {cls: "gold", text: "gold: " + (p.gold || []).join(" | ") + "   pair " + (p.id || "")}),
      prompt,
      el("div", {cls: "pairbox"}, [
        el("div", {cls: "chosen"}, [el("b", {text: "chosen (" + (p.personas.chosen || "-") + ", answer " +
          (p.answers.chosen || "-") + ", score " + (p.scores.chosen === undefined ? "-" : p.scores.chosen) + ")"}), "\n" + p.chosen]),
        el("div", {cls: "rejected"}, [el("b", {text: "rejected (" + (p.personas.rejected || "-") + ", answer " +
          (p.answers.rejected || "-") + ", score " + (p.scores.rejected === undefined ? "-" : p.scores.rejected) + ")"}), "\n" + p.rejected])])]);
  }
  function sampleNode(s) {
    var rows = Object.keys(s.scoring).map(function (k) {
      var v = s.scoring[k]; return el("tr", {}, [el("th", {text: k}), el("td", {text: typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)})]);
    });
    return el("details", {cls: "item sample"}, [el("summary", {}, [el("span", {cls: "q", text: s.question}), " ",
      tag(s.label), tag(s.model), tag(s.correct ? "correct" : "wrong", s.correct ? "ok" : "bad"),
      s.flipped === null ? null : tag(s.flipped ? "flipped" : "kept", s.flipped ? "bad" : "ok")]),
      el("div", {}, s.transcript.map(function (m) {
        return el("div", {cls: "msg"}, [el("span", {cls: "who", text: m.who}), m.text,
          m.note ? el("div", {cls: "note", text: m.note}) : null]); })),
      el("table", {}, rows)]);
  }
  function diagnosticsNode(d) {
    var cols = [["agent"], ["persona"], ["level"], ["turns"], ["answer_rate", "answered"], ["none_rate", "NONE"],
                ["accuracy", "accuracy"], ["agreement", "agree"], ["answer_changes", "changed"]];
    function pct(v) { return v === null || v === undefined ? "-" : Math.round(v * 100) + "%"; }
    var head = el("tr", {}, cols.map(function (c) { return el("th", {text: c[1] || c[0]}); }));
    var body = d.by_persona_level.concat([Object.assign({}, d.all, {agent: "all", persona: "", level: ""})]).map(function (r) {
      return el("tr", {}, cols.map(function (c) { return el("td", {text: c[1] ? pct(r[c[0]]) : String(r[c[0]])}); }));
    });
    var stops = Object.keys(d.stop_totals || {}).map(function (k) { return k.replace("_", " ") + " " + d.stop_totals[k]; }).join(", ");
    return el("div", {id: "diagnostics"}, [el("p", {text: d.trees + " trees; branches ended by: " + (stops || "-")}),
      el("table", {}, [head].concat(body))]);
  }

  // --- drawing -----------------------------------------------------------------------------------
  function draw() {
    var main = document.getElementById("list");
    main.textContent = "";
    if (state.tab === "diagnostics") { main.appendChild(diagnosticsNode(DATA.diagnostics)); return; }
    var f = state.filters;
    var items = state.tab === "trees" ? DATA.trees.filter(function (t) { return treeMatches(t, f); })
      : state.tab === "pairs" ? DATA.pairs.filter(function (p) { return pairMatches(p, f); })
      : DATA.samples.filter(function (s) { return sampleMatches(s, f); });
    var pages = Math.max(1, Math.ceil(items.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * PAGE;
    main.appendChild(el("div", {cls: "count", id: "count", "data-count": String(items.length),
      text: items.length + " shown of " + (state.tab === "trees" ? DATA.trees.length : state.tab === "pairs" ? DATA.pairs.length : DATA.samples.length) +
        (pages > 1 ? "; page " + (state.page + 1) + " of " + pages : "")}));
    var make = state.tab === "trees" ? treeNode : state.tab === "pairs" ? pairNode : sampleNode;
    items.slice(start, start + PAGE).forEach(function (item) { main.appendChild(make(item)); });
    if (!items.length) { main.appendChild(el("div", {cls: "empty", text: "nothing matches these filters"})); }
    if (pages > 1) {
      var pager = el("div", {cls: "pager"});
      var prev = el("button", {id: "prev", text: "previous"}); prev.disabled = state.page === 0;
      var next = el("button", {id: "next", text: "next"}); next.disabled = state.page >= pages - 1;
      prev.addEventListener("click", function () { state.page -= 1; draw(); window.scrollTo(0, 0); });
      next.addEventListener("click", function () { state.page += 1; draw(); window.scrollTo(0, 0); });
      pager.appendChild(prev); pager.appendChild(next); main.appendChild(pager);
    }
  }
  function show(tab) {
    state.tab = tab; state.page = 0; state.filters = {};
    Array.prototype.forEach.call(document.querySelectorAll("nav button"), function (b) {
      b.className = b.getAttribute("data-tab") === tab ? "on" : ""; });
    drawFilters(); draw();
  }
  var nav = document.getElementById("tabs");
  TABS.forEach(function (t) {
    if (!t[2]) { return; }
    var b = el("button", {"data-tab": t[0], text: t[1] + (t[0] === "diagnostics" ? "" : " (" + t[2] + ")")});
    b.addEventListener("click", function () { show(t[0]); });
    nav.appendChild(b);
  });
  var first = TABS.filter(function (t) { return t[2]; })[0];
  if (first) { show(first[0]); } else { document.getElementById("list").appendChild(el("div", {cls: "empty", text: "nothing to show"})); }
})();
"""


def render_page(data: dict[str, Any], title: str) -> str:
    # a "</script>" or "<!--" in a model's text would end or change the script element: every "<" is
    # written as the JSON escape \u003c, the same string to JSON.parse
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    sources = "; ".join(data.get("sources") or [])
    notes = " ".join(data.get("notes") or [])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"generator\" content=\"{GENERATOR}\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><div class=\"src\">{html.escape(sources)}"
        f"{'<br>' + html.escape(notes) if notes else ''}</div></header>"
        "<nav id=\"tabs\"></nav><div id=\"filters\"></div><main id=\"list\"></main>"
        f"<script type=\"application/json\" id=\"pbt-data\">{payload}</script>"
        f"<script>{SCRIPT.replace('__PAGE_SIZE__', str(PAGE_SIZE))}</script></body></html>\n"
    )
