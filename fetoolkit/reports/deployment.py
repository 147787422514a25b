"""The deployment report: ``report.md`` and ``report.html`` from one run's results.

The document a deployment review asks for: the operating point and its error rates with counts
and intervals, the dev/eval figures and EPC, the per-group table with the cross-group FMR heatmap
and per-group DET curves, the data provenance and the caveats. Both files are rendered from one
list of blocks, so they say the same thing.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetoolkit.deployment import Deployment
from fetoolkit.reports.inputs import input_notes
from fetoolkit.reports.tables import fmt, fmt_ci, model_label

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


@dataclass(frozen=True)
class Block:
    """One piece of the report: ``kind`` is ``h1``/``h2``/``h3``/``p``/``list``/``table``/``img``."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.3g}%"


def _ci_pct(ci: Any) -> str:
    return "" if not ci or ci[0] is None else f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _rate_rows(r: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    boot = r.get("interval_method")
    return (
        (
            "FMR (false match rate)",
            _pct(r.get("fmr")),
            f"{r['n_false_match']} / {r['n_impostor']}",
            _ci_pct(r.get("fmr_ci_clopper_pearson")),
            _ci_pct(r.get("fmr_ci")) if boot else "",
        ),
        (
            "FNMR (false non-match rate)",
            _pct(r.get("fnmr")),
            f"{r['n_false_non_match']} / {r['n_genuine']}",
            _ci_pct(r.get("fnmr_ci_clopper_pearson")),
            _ci_pct(r.get("fnmr_ci")) if boot else "",
        ),
        ("HTER", _pct(r.get("hter")), "", "", _ci_pct(r.get("hter_ci")) if boot else ""),
    )


def _rate_header(r: dict[str, Any]) -> tuple[str, ...]:
    boot = r.get("interval_method")
    return ("rate", "value", "errors / comparisons", "95% Clopper-Pearson", f"95% bootstrap ({boot})" if boot else "")


def _operating(s: dict[str, Any]) -> list[Block]:
    op = s["operating_point"]
    target = (
        f" (target {'FAR' if 'far' in op else 'FRR'} {op.get('far', op.get('frr')):g})"
        if ("far" in op or "frr" in op)
        else ""
    )
    blocks = [Block("h2", "Operating point")]
    if op.get("reason"):
        return blocks + [Block("p", f"No operating point: {op['reason']}.")]
    blocks += [
        Block(
            "p",
            f"Threshold **{fmt(op['threshold'], 5)}** chosen by `{op['criterion']}`{target} on {op['threshold_from']}; "
            f"{op['rule']}. Rates on {s['dataset']}:",
        ),
        Block("table", header=_rate_header(op["rates"]), rows=_rate_rows(op["rates"])),
    ]
    if op.get("note"):
        blocks.append(Block("p", f"Note: {op['note']}."))
    return blocks


def _dev_eval(s: dict[str, Any]) -> list[Block]:
    de = s.get("dev_eval")
    if not de:
        return []
    src = de["dev"].get("source") or {}
    if de.get("reason"):
        return [Block("h2", "Dev / eval"), Block("p", f"No dev threshold: {de['reason']}."), Block("img", "epc.png")]
    blocks = [
        Block("h2", "Dev / eval"),
        Block(
            "p",
            f"Threshold {fmt(de['threshold'], 5)} fixed on dev (`{src.get('path', 'dev')}`) by `{de['criterion']}`, "
            "then applied unchanged to eval.",
        ),
    ]
    rows = []
    for name in ("dev", "eval"):
        r = de[name]
        rows.append(
            (
                name,
                f"{_pct(r['fmr'])} {_ci_pct(r.get('fmr_ci_clopper_pearson'))}",
                f"{_pct(r['fnmr'])} {_ci_pct(r.get('fnmr_ci_clopper_pearson'))}",
                f"{_pct(r['hter'])} {_ci_pct(r.get('hter_ci'))}",
                f"{r['n_genuine']} / {r['n_impostor']}",
            )
        )
    blocks.append(
        Block(
            "table",
            header=("set", "FMR [95% CP]", "FNMR [95% CP]", "HTER [95% bootstrap]", "genuine / impostor"),
            rows=tuple(rows),
        )
    )
    e = de["epc"]
    step = max(1, len(e["alpha"]) // 10)
    idx = list(range(0, len(e["alpha"]), step))
    if idx[-1] != len(e["alpha"]) - 1:
        idx.append(len(e["alpha"]) - 1)
    blocks += [
        Block("h3", "Expected performance curve"),
        Block("img", "epc.png"),
        Block(
            "table",
            header=("alpha", "dev threshold", "eval HTER"),
            rows=tuple((f"{e['alpha'][k]:.2f}", fmt(e["threshold"][k], 5), _pct(e["hter"][k])) for k in idx),
        ),
    ]
    return blocks


def _groups(s: dict[str, Any]) -> list[Block]:
    g = s.get("groups")
    if not g:
        return []
    if g.get("reason"):
        return [Block("h2", "Demographic differentials"), Block("p", f"No global threshold: {g['reason']}.")]
    blocks = [
        Block("h2", "Demographic differentials"),
        Block(
            "p",
            f"One global threshold {fmt(g['threshold'], 5)} ({g['threshold_from']}). A group's FMR counts impostor "
            "comparisons with both sides in the group; comparisons across groups are in the heatmap. "
            f"Rates of groups with fewer than {g['min_pairs']} comparisons are not shown (the count is).",
        ),
    ]
    for attr, groups in g["attributes"].items():
        d = g["differentials"][attr]
        rows = []
        for v, r in groups.items():
            fnmr = f"{_pct(r['fnmr'])} {_ci_pct(r.get('fnmr_ci'))}" if r["fnmr"] is not None else r["fnmr_reason"]
            fmr = f"{_pct(r['fmr'])} {_ci_pct(r.get('fmr_ci'))}" if r["fmr"] is not None else r["fmr_reason"]
            rows.append((v, str(r["n_genuine"]), str(r["n_impostor"]), fnmr, fmr, fmt(r.get("tar_at_far"))))
        ratio = (
            f"FMR max/min {fmt(d['fmr_max_min'], 2)}"
            if d["fmr_max_min"] is not None
            else f"FMR max/min n/a ({d['fmr_max_min_reason']})"
        )
        ratio += (
            f"; FNMR max/min {fmt(d['fnmr_max_min'], 2)}"
            if d["fnmr_max_min"] is not None
            else f"; FNMR max/min n/a ({d['fnmr_max_min_reason']})"
        )
        blocks += [
            Block("h3", f"Attribute `{attr}`"),
            Block(
                "table",
                header=(
                    "group",
                    "genuine",
                    "impostor",
                    "FNMR [95% CP]",
                    "FMR [95% CP]",
                    f"TAR@FAR={g['far']:g} (the group's own threshold)",
                ),
                rows=tuple(rows),
            ),
            Block(
                "p",
                f"{ratio}; fairness discrepancy rate {fmt(d['fdr'], 4)} (alpha {d['fdr_alpha']}; 1 = no "
                f"differential). Comparisons with a side of unknown group: {d['n_unknown']}; genuine comparisons "
                f"across groups: {d['n_genuine_across_groups']}.",
            ),
            Block("img", f"groups_{_slug(attr)}_fmr.png"),
            Block("img", f"groups_{_slug(attr)}_det.png"),
        ]
    return blocks


def _figures(s: dict[str, Any]) -> list[Block]:
    rows = [
        ("EER", f"{fmt_ci(s['eer'], s.get('eer_ci'))} (threshold {fmt(s.get('eer_threshold'))})"),
        ("AUC", fmt(s.get("auc"), 5)),
    ]
    if s.get("accuracy_mean") is not None:
        rows.insert(0, (f"{s['kfold']['n_folds']}-fold accuracy", fmt_ci(s["accuracy_mean"], s.get("accuracy_ci"))))
    ci = s.get("tar_at_far_ci") or {}
    for k, v in (s.get("tar_at_far_decades") or s["tar_at_far"]).items():
        rows.append((f"TAR @ FAR={k}", fmt_ci(v, ci.get(k))))
    return [
        Block("h2", "Verification figures"),
        Block("table", header=("figure", "value [95% interval]"), rows=tuple(rows)),
        Block("img", "roc.png"),
        Block("img", "det.png"),
    ]


def _provenance(s: dict[str, Any]) -> list[Block]:
    items = [f"system: `{model_label(s)}` ({s['backend']})"]
    if s.get("weights_sha256"):
        items.append(f"weights sha256: `{s['weights_sha256']}`")
    items.append(f"data: {s['dataset']}")
    data = dict(s.get("data") or {})
    dev_src = ((s.get("dev_eval") or {}).get("dev") or {}).get("source")
    if dev_src and "dev" not in data:
        data["dev"] = dev_src
    for name in ("scores", "dev", "eval"):
        src = data.get(name)
        if src:
            items.append(
                f"{name} file: `{src['path']}` ({src['format']}, sha256 `{src['sha256'][:16]}...`, "
                f"{src['n_rows']} rows)"
            )
    g = (s.get("groups") or {}).get("file")
    if g:
        items.append(f"group file: `{g['path']}` (keyed by {g['key']}, sha256 `{g['sha256'][:16]}...`)")
    m = s.get("machine") or {}
    if m:
        items.append(f"CPU: {m.get('cpu')}")
    v = s.get("versions") or {}
    if v:
        items.append("versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items()) if val))
    return [Block("h2", "Provenance"), Block("list", items=tuple(items))]


def _caveats(s: dict[str, Any]) -> list[Block]:
    op = dict(s["operating_point"])
    op["rates"] = op.get("rates") or {}
    items = [
        f"{s['n_genuine']} genuine and {s['n_impostor']} impostor comparisons; the finest FAR they can measure is "
        f"{s['finest_far']:.3g} (TAR at finer FARs is not reported, never extrapolated).",
        "Clopper-Pearson intervals treat comparisons as independent; comparisons that share subjects are not, so "
        "those intervals are optimistic.",
    ]
    method = op["rates"].get("interval_method")
    if method == "subject":
        items.append(
            f"Bootstrap intervals resample the {op['rates'].get('n_subjects')} subjects (subsets bootstrap, two-way)."
        )
    elif method == "pair":
        items.append("Subjects are unknown: bootstrap intervals resample comparisons and are optimistic.")
    if op["threshold_from"] == "this set":
        items.append(
            "The threshold was chosen on the same comparisons it is reported on, which flatters it; give a dev set "
            "(`dataset.dev=... dataset.eval=...` or `threshold.dev=...`) for an honest estimate."
        )
    if s.get("fte"):
        items.append(f"{s['fte']} images failed to enrol; their comparisons are left out (counted in results.json).")
    if (s.get("data") or {}).get("n_missing"):
        items.append(f"{s['data']['n_missing']} score rows compare images that did not enrol and were left out.")
    items += [f"{label[0].upper()}{label[1:]}: {text}." for label, text in input_notes(s)]
    return [Block("h2", "Caveats"), Block("list", items=tuple(items))]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def report_blocks(s: dict[str, Any]) -> list[Block]:
    """The report of one ``results.json`` summary that has an ``operating_point``."""
    title = f"Deployment report: {model_label(s)} ({s['backend']}) on {s['dataset']}"
    return [
        Block("h1", title),
        *_operating(s),
        *_dev_eval(s),
        *_groups(s),
        *_figures(s),
        *_provenance(s),
        *_caveats(s),
    ]


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub Markdown."""
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out += ["#" * int(b.kind[1]) + " " + b.text, ""]
        elif b.kind == "p":
            out += [b.text, ""]
        elif b.kind == "list":
            out += [f"- {i}" for i in b.items] + [""]
        elif b.kind == "table":
            cols = [c for c in b.header]
            keep = [k for k, c in enumerate(cols) if c]
            out.append("| " + " | ".join(cols[k] for k in keep) + " |")
            out.append("|" + "|".join("---" for _ in keep) + "|")
            out += ["| " + " | ".join(r[k].replace("|", "\\|") for k in keep) + " |" for r in b.rows]
            out.append("")
        elif b.kind == "img":
            out += [f"![{b.text}]({b.text})", ""]
    return "\n".join(out)


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def to_html(blocks: list[Block]) -> str:
    """The blocks as one self-contained HTML page (images linked beside it, no scripts, no CDN)."""
    title = next((b.text for b in blocks if b.kind == "h1"), "report")
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "img{max-width:100%}code{background:#f4f4f4}</style>",
        "</head><body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline_html(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            keep = [k for k, c in enumerate(b.header) if c]
            head = "".join(f"<th>{_inline_html(b.header[k])}</th>" for k in keep)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(r[k])}</td>" for k in keep) + "</tr>" for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            out.append(f'<p><img src="{html.escape(b.text)}" alt="{html.escape(b.text)}"></p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write(summary: dict[str, Any], deploy: Deployment, out_dir: Path) -> list[Path]:
    """The EPC, heatmap and per-group DET plots, ``report.md`` and ``report.html`` into ``out_dir``."""
    from fetoolkit.reports import plots

    written = []
    name = f"{summary['model']} ({summary['backend']})"
    if deploy.epc is not None:
        written.append(plots.plot_epc(deploy.epc.alpha, deploy.epc.hter, out_dir / "epc.png", title=f"EPC of {name}"))
    for attr, c in deploy.group_curves.items():
        slug = _slug(attr)
        written.append(
            plots.plot_fmr_heatmap(
                c.values,
                c.cross_fmr,
                c.cross_n,
                out_dir / f"groups_{slug}_fmr.png",
                title=f"FMR across {attr} groups\n{name}, threshold {fmt(summary['groups']['threshold'])}",
            )
        )
        written.append(
            plots.plot_det(
                {f"{attr}={v}": c.det[v] for v in c.values if v in c.det},
                out_dir / f"groups_{slug}_det.png",
                title=f"DET per {attr} group",
            )
        )
    blocks = report_blocks(summary)
    (out_dir / REPORT_MD).write_text(to_markdown(blocks))
    (out_dir / REPORT_HTML).write_text(to_html(blocks))
    return [*written, out_dir / REPORT_MD, out_dir / REPORT_HTML]
