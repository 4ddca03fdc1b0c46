"""The review report: one HTML page with tables, and its figures as PNG files beside it."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"
#: Queue rows shown in the HTML; the rest are counted.
MAX_QUEUE_ROWS = 200

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
img { max-width: 100%; margin: 0.5em 0 1.5em; } .note { color: #666; font-size: 0.9em; }
"""


def _fmt(x: Any, digits: int = 1) -> str:
    """Format a number for the tables ("-" for missing/NaN); integers without decimals."""
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x)).lower()
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return html.escape(str(x))
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def _p(x: Any) -> str:
    """Format a p-value: 4 decimals, or scientific below 1e-4."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(v):
        return "-"
    return f"{v:.2e}" if 0 < v < 1e-4 else f"{v:.4f}"


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """HTML table; the first ``left`` columns are left-aligned text, cells already escaped."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>"
                 for i, h in enumerate(header or ()))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table>{f'<tr>{th}</tr>' if th else ''}{body}</table>"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "all"


def _by_measure(obj: Any, marker: str) -> dict[str, Any]:
    """Accept one result (has key ``marker``) or a {measure: result} mapping."""
    if not obj:
        return {}
    if isinstance(obj, Mapping) and marker in obj:
        return {"": obj}
    # other entries (e.g. "best_measure": name) are not results
    return {str(k): v for k, v in obj.items() if isinstance(v, Mapping) and marker in v}


def _class_names(review: Mapping[str, Any], diff: Mapping[str, Any]) -> list[str]:
    if review.get("class_names"):
        return [str(c) for c in review["class_names"]]
    names: list[str] = []
    for row in diff.values():
        names += [k for k in row if not k.startswith("_") and k not in names]
    return names


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=110)
    return path.name


def _differential_figure(diff: Mapping[str, Any], names: list[str], path: Path) -> str:
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the GUI thread

    samples = list(diff)
    x = np.arange(len(samples))
    width = 0.8 / max(len(names), 1)
    fig = Figure(figsize=(min(4 + 0.9 * len(samples), 18), 4), layout="constrained")
    ax = fig.subplots()
    for j, name in enumerate(names):
        pct = np.array([diff[s][name]["percent"] for s in samples], float)
        lo = np.array([diff[s][name]["ci_low"] for s in samples], float)
        hi = np.array([diff[s][name]["ci_high"] for s in samples], float)
        err = np.vstack([pct - lo, hi - pct])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, pct, width, yerr=err, capsize=2,
               label=name)
    ax.set_xticks(x, samples, rotation=45 if len(samples) > 6 else 0, ha="right"
                  if len(samples) > 6 else "center")
    ax.set_ylabel("cells, % (95 % Wilson CI)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", ncols=min(len(names), 4))
    ax.set_title("Differential count per sample")
    return _save(fig, path)


def _ood_figure(stats: Mapping[str, Any], raw: Mapping[str, Any] | None, title: str,
                path: Path) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    if raw:
        names = list(raw)
        ax.boxplot([np.asarray(raw[k], float) for k in names], tick_labels=names,
                   showfliers=False)
    else:  # only the summary: boxes from quartiles, whiskers to min/max
        summ = stats.get("summary", {})
        names = list(summ)
        boxes = [
            {"label": k, "med": v["median"], "q1": v["q1"], "q3": v["q3"],
             "whislo": v.get("min", v["q1"]), "whishi": v.get("max", v["q3"]), "fliers": []}
            for k, v in summ.items()
        ]
        ax.bxp(boxes, showfliers=False)
    ax.set_ylabel("confidence")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    return _save(fig, path)


def _reliability_figure(rel: Mapping[str, Any], title: str, path: Path) -> str:
    from matplotlib.figure import Figure

    edges = np.asarray(rel["edges"], float)
    acc = np.asarray(rel["accuracy"], float)
    conf = np.asarray(rel.get("confidence", np.full(acc.shape, np.nan)), float)
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.bar(edges[:-1], np.nan_to_num(acc), np.diff(edges), align="edge", edgecolor="k",
           alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.plot(conf, acc, "o", color="C3", ms=4, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize="small", loc="upper left")
    ax.set_title(title)
    return _save(fig, path)


def _differential_html(diff: Mapping[str, Any], names: list[str]) -> str:
    reasons: list[str] = []
    for row in diff.values():
        reasons += [r for r in row.get("_excluded", {}) if r not in reasons]
    header = ["sample", "counted", "flagged", *(f"{_e(n)} %" for n in names),
              *(f"excluded: {_e(r)}" for r in reasons)]
    rows = []
    for s, row in diff.items():
        cells = [_e(s), _fmt(row.get("_total")), _fmt(row.get("_flagged"))]
        for n in names:
            c = row[n]
            cells.append(f"{_fmt(c['percent'])} ({_fmt(c['ci_low'])}&ndash;"
                         f"{_fmt(c['ci_high'])}), n={_fmt(c['n'])}")
        cells += [_fmt(row.get("_excluded", {}).get(r, 0)) for r in reasons]
        rows.append(cells)
    return _table(header, rows) + (
        '<p class="note">Percent of the counted cells (QC passed, not excluded as '
        "out-of-distribution) with the 95 % Wilson interval and the count.</p>"
    )


def _queue_html(queue: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any] | None) -> str:
    parts = []
    if metrics:
        keys = list(metrics)
        parts.append(_table(keys, [[_fmt(metrics[k], 3) for k in keys]], left=0))
    if not queue:
        return "".join(parts) + "<p>No cell confidently disagrees with its given label.</p>"
    keys = list(queue[0])
    rows = [[_fmt(r.get(k), 3) if not isinstance(r.get(k), str) else _e(r[k]) for k in keys]
            for r in queue[:MAX_QUEUE_ROWS]]
    parts.append(_table([_e(k) for k in keys], rows, left=0))
    if len(queue) > MAX_QUEUE_ROWS:
        parts.append(f'<p class="note">... and {len(queue) - MAX_QUEUE_ROWS} more cells.</p>')
    return "".join(parts)


def _ood_html(stats: Mapping[str, Any]) -> str:
    k = stats.get("kruskal", {})
    parts = [f"<p>Kruskal&ndash;Wallis: H = {_fmt(k.get('H'), 2)}, p = {_p(k.get('p'))}</p>"]
    summ = stats.get("summary", {})
    auroc = stats.get("auroc", {})
    rows = [[_e(name), _fmt(v.get("n")), _fmt(v.get("median"), 3), _fmt(v.get("q1"), 3),
             _fmt(v.get("q3"), 3), _fmt(auroc.get(name), 3)] for name, v in summ.items()]
    ref = _e(stats.get("reference", "reference"))
    parts.append(_table(["set", "n", "median", "q1", "q3", f"AUROC ({ref} vs set)"], rows))
    post = stats.get("posthoc", [])
    if post:
        rows = [[_e(r["a"]), _e(r["b"]), _fmt(r["U"], 1), _p(r["p"]), _p(r["p_bonferroni"])]
                for r in post]
        parts.append(_table(["a", "b", "Mann-Whitney U", "p", "p (Bonferroni)"], rows, left=2))
    return "".join(parts)


def write_report(
    out_dir: str | PathLike[str], review: Mapping[str, Any], *, title: str
) -> Path:
    """Write the review report: ``report.html`` plus its PNG figures in ``out_dir``.

    Every section is optional; missing parts are left out.

    Parameters
    ----------
    out_dir : str or PathLike
        Folder for the report (created if missing; files of the same names are replaced).
    review : dict
        - ``differential``: output of
          :func:`~hemalens.engine.review.differential.differential_counts`;
        - ``class_names``: column order of the differential (default: as found in it);
        - ``queue``: list of ``{"cell_id", "given", "predicted", "confidence", ...}`` rows,
          ranked; ``queue_metrics``: output of
          :func:`~hemalens.engine.review.mislabel.queue_metrics` (simulated data);
        - ``ood``: output of :func:`~hemalens.engine.review.ood.ood_statistics`, or
          ``{measure: that output}`` (other entries, e.g. ``"best_measure": name``, are
          shown as text or ignored); ``ood_confidences``: the raw confidences
          ``{set: array}`` (or ``{measure: {set: array}}``) for full box plots, else boxes
          are drawn from the summary quartiles with whiskers at min/max;
        - ``reliability``: ``{"edges", "accuracy", "confidence", "count"}`` as from
          ``hemalens.engine.calibrate.reliability_data``, or ``{measure: that}``;
        - ``calibration``: ``{measure: {"ece", "mce", ...}}`` numbers to tabulate;
        - ``meta``: ``{key: value}`` shown at the top (model, measure, temperature, ...);
          default: the top-level ``model``, ``measure`` and ``threshold`` entries;
        - ``signoffs``: ``[{"sample", "kind", "user", "time", "reason"}]`` rows;
        - ``changes``: ``{"summary": {user: {op: n}}, "rows": [{"time", "user", "op",
          "cell_id", "change", "reason"}], "csv": file name}`` (the reviewer's edits; the
          HTML lists the newest ``MAX_QUEUE_ROWS``).
    title : str
        Page title and heading.

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>{_e(title)}</h1>"]
    meta = review.get("meta") or {
        k: review[k] for k in ("model", "measure", "threshold") if review.get(k) is not None
    }
    if meta:
        body.append(_table(None, [[_e(k), _e(v)] for k, v in meta.items()], left=2))

    diff = review.get("differential") or {}
    if diff:
        names = _class_names(review, diff)
        body.append("<h2>Differential count</h2>")
        body.append(_differential_html(diff, names))
        png = _differential_figure(diff, names, out / "differential.png")
        body.append(f'<img src="{png}" alt="differential count per sample">')

    signoffs = review.get("signoffs") or []
    if signoffs:
        body.append("<h2>Sign-off</h2>")
        body.append(_table(["sample", "action", "by", "when", "reason"],
                           [[_e(r["sample"]), _e(r["kind"]), _e(r["user"]),
                             _e(str(r["time"])[:19].replace("T", " ")), _e(r.get("reason", ""))]
                            for r in signoffs], left=5))
    changes = review.get("changes") or {}
    if changes:
        body.append("<h2>Reviewer's changes</h2>")
        summary = changes.get("summary") or {}
        ops = sorted({op for v in summary.values() for op in v})
        if summary:
            body.append(_table(["reviewer", *map(_e, ops)],
                               [[_e(u), *(str(v.get(op, 0)) for op in ops)]
                                for u, v in summary.items()]))
        rows = changes.get("rows") or []
        shown = rows[-MAX_QUEUE_ROWS:][::-1]
        if shown:
            more = (f" (the newest {len(shown)} of {len(rows)}; all in "
                    f"{_e(changes.get('csv', 'the CSV'))})" if len(rows) > len(shown) else "")
            body.append(f"<p class=\"note\">Every edit is in the project's history{more}.</p>")
            body.append(_table(["when", "reviewer", "command", "cell", "change", "reason"],
                               [[_e(str(r["time"])[:19].replace("T", " ")), _e(r["user"]),
                                 _e(r["op"]), str(r["cell_id"]), _e(r["change"]),
                                 _e(r.get("reason", ""))] for r in shown], left=6))

    if "queue" in review or review.get("queue_metrics"):
        body.append("<h2>Mislabel queue</h2>")
        body.append(_queue_html(review.get("queue") or [], review.get("queue_metrics")))

    ood = _by_measure(review.get("ood"), "kruskal")
    raw_all = review.get("ood_confidences") or {}
    if raw_all and all(isinstance(v, (np.ndarray, list, tuple)) for v in raw_all.values()):
        raw_all = {"": raw_all}
    if ood:
        body.append("<h2>Out-of-distribution confidence</h2>")
        info = review.get("ood") or {}
        best = info.get("best_measure")
        if isinstance(best, str):
            held = info.get("best_measure_auroc")
            shown = ("; AUROC on the held-out half: " + ", ".join(
                f"{_e(k)} {float(v):.3f}" for k, v in held.items())) if isinstance(
                held, dict) else ""
            body.append(f"<p>Best separating measure: {_e(best)}{shown}</p>")
        if isinstance(info.get("selection"), str):
            body.append(f"<p><i>{_e(info['selection'])}</i></p>")
        for measure, stats in ood.items():
            label = f" &ndash; {_e(measure)}" if measure else ""
            body.append(f"<h3>Confidence{label}</h3>")
            body.append(_ood_html(stats))
            png = _ood_figure(stats, raw_all.get(measure), f"Confidence {measure}".strip(),
                              out / f"ood_{_slug(measure)}.png")
            body.append(f'<img src="{png}" alt="confidence per set {_e(measure)}">')

    calib = review.get("calibration") or {}
    if calib:
        keys: list[str] = []
        for v in calib.values():
            keys += [k for k in v if k not in keys]
        body.append("<h2>Calibration</h2>")
        body.append(_table(["measure", *map(_e, keys)],
                           [[_e(m), *(_fmt(v.get(k), 4) for k in keys)]
                            for m, v in calib.items()]))
    rel = _by_measure(review.get("reliability"), "edges")
    if rel:
        body.append("<h2>Reliability</h2>")
        for measure, data in rel.items():
            png = _reliability_figure(data, f"Reliability {measure}".strip(),
                                      out / f"reliability_{_slug(measure)}.png")
            body.append(f'<img src="{png}" alt="reliability diagram {_e(measure)}">')

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path
