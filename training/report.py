"""The evaluation report: ``report.json`` (a contract other tools read), ``report.html`` (for
people: the numbers beside their baselines and oracle, and the plots), and the summary table
``nudge train`` prints.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from nudge.contract.features import STATS_VIEW
from training.evaluate import calibration_curve, lift_by_decile
from training.labels import HOURS

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class CustomerView:
    """One customer's send-time picture: model output, truth (if known), test engagements."""

    customer_id: str
    predicted: np.ndarray  # (168,)
    truth: np.ndarray | None  # (168,)
    engaged_slots: np.ndarray  # slots of the customer's test engagements


@dataclass(frozen=True)
class SendTimePlots:
    """The arrays behind the send-time figures."""

    population_predicted: np.ndarray  # (168,) mean predicted distribution over test rows
    population_observed: np.ndarray  # (168,) share of test engagements per slot
    customers: Sequence[CustomerView]


@dataclass(frozen=True)
class Plots:
    """The arrays behind the report's figures."""

    y_test: np.ndarray
    scores: Mapping[str, np.ndarray]  # propensity scores by name: model, baseline, oracle
    send_time: SendTimePlots | None  # None: send time is n/a for this data


def not_applicable(block: Mapping[str, Any]) -> bool:
    """A report block (``send_time``, ``served.send_time``) the data could not fill, with its reason."""
    return block.get("status") == "n/a"


def write_report(models_dir: Path, report: Mapping[str, Any], plots: Plots) -> tuple[Path, Path]:
    """Write report.json and report.html under ``models_dir``; returns their paths."""
    models_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = models_dir / "report.json", models_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    html_path.write_text(render_html(report, plots))
    return json_path, html_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(metric, model, baseline, oracle) rows: the numbers a person checks first."""
    p, s = report["propensity"], report["send_time"]
    propensity = [
        ("propensity ROC-AUC", p["roc_auc"], p["baseline_roc_auc"], p["oracle_roc_auc"]),
        ("propensity PR-AUC", p["pr_auc"], p.get("baseline_pr_auc"), p.get("oracle_pr_auc")),
        ("propensity ECE", p["ece"], p.get("baseline_ece"), p.get("oracle_ece")),
        ("propensity Brier", p["brier"], p.get("baseline_brier"), p.get("oracle_brier")),
    ]
    channel = _channel_rows(report.get("channel"))
    if not_applicable(s):
        return [*propensity, ("send time (all metrics)", "n/a", "n/a", "n/a"), *channel]
    return [
        *propensity,
        ("send-time hit@1", s["hit_at_1"], None, s.get("oracle_hit_at_1")),
        ("send-time hit@3", s["hit_at_3"], _best_baseline(s), s["oracle_hit_at_3"]),
        ("send-time hit@6", s["hit_at_6"], None, s.get("oracle_hit_at_6")),
        ("send-time hour-of-day hit@3", s["hod_hit_at_3"], None, s.get("oracle_hod_hit_at_3")),
        ("send-time log loss", s["log_loss"], None, s.get("oracle_log_loss")),
        *channel,
    ]


def _channel_rows(c: Mapping[str, Any] | None) -> list[tuple[str, Any, Any, Any]]:
    """The best-channel rows of the summary (none for a report from before issue 12)."""
    if c is None:
        return []
    if not_applicable(c):
        return [("best channel (all metrics)", "n/a", "n/a", "n/a")]
    hits = [
        c[f"baseline_{b}_hit_at_1"] for b in CHANNEL_BASELINES if c.get(f"baseline_{b}_hit_at_1") is not None
    ]
    losses = [
        c[f"baseline_{b}_log_loss"] for b in CHANNEL_BASELINES if c.get(f"baseline_{b}_log_loss") is not None
    ]
    return [
        ("channel hit@1", c["hit_at_1"], max(hits, default=None), None if c["hit_at_1"] is None else 1.0),
        ("channel log loss (sends)", c["log_loss"], min(losses, default=None), c.get("oracle_log_loss")),
    ]


CHANNEL_BASELINES = {  # report key infix: what the baseline is
    "global": "the globally best channel (population rates)",
    "customer": "the customer's most-engaged channel (own 90-day rates)",
}


def channel_summary(c: Mapping[str, Any]) -> str:
    """One line of the ``channel`` block."""
    if not_applicable(c):
        return f"best channel n/a: {c['reason']}; no channel model written"
    return (
        f"best channel: {c['link']} model on {c['n_train']} train / {c['n_test']} test sends; hit@1 "
        f"{_fmt(c['hit_at_1'])} vs baselines global {_fmt(c['baseline_global_hit_at_1'])}, customer's "
        f"{_fmt(c['baseline_customer_hit_at_1'])}; log loss {_fmt(c['log_loss'])} vs global "
        f"{_fmt(c['baseline_global_log_loss'])}, customer's {_fmt(c['baseline_customer_log_loss'])}, "
        f"oracle {_fmt(c.get('oracle_log_loss'))}"
    )


def _best_baseline(send_time: Mapping[str, Any]) -> float:
    return max(send_time["baseline_global_hit_at_3"], send_time["baseline_modal_hit_at_3"])


def summary_table(report: Mapping[str, Any]) -> str:
    """Plain-text table for the end of ``nudge train``."""
    lines = [f"{'metric':<30} {'model':>8} {'baseline':>9} {'oracle':>8}"]
    lines += [f"{name:<30} {_fmt(m):>8} {_fmt(b):>9} {_fmt(o):>8}" for name, m, b, o in summary_rows(report)]
    p, s = report["propensity"], report["send_time"]
    propensity = (
        f"propensity: {p['n_train']} train / {p['n_test']} test rows, "
        f"positive rate {_fmt(p['positive_rate'])}"
    )
    if p.get("candidates"):
        propensity += (
            f"; inputs, validation ROC-AUC: {candidate_summary(p['candidates'], 'validation_roc_auc')}; "
            f"BG/NBD-only test ROC-AUC {_fmt(p.get('bgnbd_roc_auc'))}"
        )
    if p.get("calibration_candidates"):
        propensity += (
            f"; calibration, validation log loss: "
            f"{candidate_summary(p['calibration_candidates'], 'validation_log_loss')}"
        )
    if not_applicable(s):
        lines.append(propensity)
        lines.append(f"send time n/a: {s['reason']}; no send-time model exported")
        lines.append(f"to serve: {s['serving']}")
    else:
        lines.append(
            f"{propensity}; send time: {s['n_train']} train / {s['n_test']} test engagements, "
            f"model {s['model']}"
        )
        lines.append(
            f"send-time hit@3 baselines: global {_fmt(s['baseline_global_hit_at_3'])}, "
            f"customer's modal slots {_fmt(s['baseline_modal_hit_at_3'])}"
        )
        if s.get("candidates"):
            lines.append(f"send-time candidates, validation hit@3: {candidate_summary(s['candidates'])}")
    if "served" in report:
        lines.append(f"at random test instants, exact vs as served: {served_summary(report['served'])}")
    if "channel" in report:
        lines.append(channel_summary(report["channel"]))
    return "\n".join(lines)


def candidate_summary(candidates: Mapping[str, Mapping[str, Any]], metric: str = "hit_at_3") -> str:
    """One line of a comparison table: each candidate's validation ``metric``, the chosen one marked."""
    return ", ".join(
        f"{name} {_fmt(c[metric])}{' (chosen)' if c.get('chosen') else ''}" for name, c in candidates.items()
    )


def served_summary(served: Mapping[str, Any]) -> str:
    """One line of the ``served`` block: what weekly snapshots cost at serving time."""
    p, s = served["propensity"], served["send_time"]
    age = p["mean_snapshot_age_days"].get(STATS_VIEW)
    send_time = (
        "send time n/a"
        if not_applicable(s)
        else f"send-time hit@3 {_fmt(s['hit_at_3_exact'])} vs {_fmt(s['hit_at_3_served'])} "
        f"({s['n_engagements']} engagements)"
    )
    return (
        f"propensity ROC-AUC {_fmt(p['roc_auc_exact'])} vs {_fmt(p['roc_auc_served'])} "
        f"({p['n_pairs']} pairs, snapshots {_fmt(age)} days old on average); {send_time}"
    )


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render_html(report: Mapping[str, Any], plots: Plots) -> str:
    """A self-contained page: summary table, split, candidate comparison, embedded PNG plots."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(m)}</td><td>{_fmt(b)}</td><td>{_fmt(o)}</td></tr>"
        for name, m, b, o in summary_rows(report)
    )
    split = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in report["split"].items()
    )
    figures = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{png}"/>'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in _figures(plots)
    )
    send_time = report["send_time"]
    if not_applicable(send_time):
        structures = (
            f"<h2>Send time: n/a</h2><p>{html.escape(send_time['reason'])}; no send-time model was "
            f"exported.</p><p>To serve: {html.escape(send_time['serving'])}.</p>"
        )
    else:
        structures = f"""<h2>Send-time structures compared on this run's validation period (not test)</h2>
{_candidates_html(send_time.get("candidates", {}), _CANDIDATE_COLUMNS)}
<p>Chosen: {html.escape(str(send_time.get("model")))}. Rule: {html.escape(str(send_time.get("selection")))}.</p>"""
    propensity = report["propensity"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nudge training report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:520px}}</style></head><body>
<h1>nudge training report</h1>
<h2>Holdout metrics</h2>
<table><tr><th>metric</th><th>model</th><th>best baseline</th><th>oracle</th></tr>{rows}</table>
{_served_html(report)}
<h2>Propensity inputs compared on this run's validation period</h2>
{_candidates_html(propensity.get("candidates", {}), _PROPENSITY_CANDIDATE_COLUMNS)}
<p>Chosen: {html.escape(str(propensity.get("inputs")))}. Rule: {html.escape(str(propensity.get("selection")))}.
BG/NBD-only model on the test period: ROC-AUC {_fmt(propensity.get("bgnbd_roc_auc"))}, ECE {_fmt(propensity.get("bgnbd_ece"))}
(parameters {html.escape(str(propensity.get("bgnbd")))}).</p>
<h2>Propensity calibrations compared on this run's validation period</h2>
{_candidates_html(propensity.get("calibration_candidates", {}), _CALIBRATION_CANDIDATE_COLUMNS)}
<p>Chosen: {html.escape(str(propensity.get("calibration")))}. Rule: {html.escape(str(propensity.get("calibration_selection")))}.</p>
{structures}
{_channel_html(report.get("channel"))}
{policy_html(report.get("policy"))}
<h2>Split</h2><table>{split}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def _candidates_html(candidates: Mapping[str, Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A comparison table: one row per candidate, the chosen one marked."""
    header = "".join(f"<th>{title}</th>" for title in columns.values())
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(c.get(k))}</td>" for k in columns)
        + f"<td>{'yes' if c.get('chosen') else ''}</td></tr>"
        for name, c in candidates.items()
    )
    return f"<table><tr><th>candidate</th>{header}<th>chosen</th></tr>{body}</table>"


def _served_html(report: Mapping[str, Any]) -> str:
    """The served block as a table: the same model and rows, features exact vs as served."""
    if "served" not in report:
        return ""
    p, s = report["served"]["propensity"], report["served"]["send_time"]
    rows = [("propensity ROC-AUC", p["roc_auc_exact"], p["roc_auc_served"], f"{p['n_pairs']} random pairs")]
    if not_applicable(s):
        rows.append(("send-time hit@3", "n/a", "n/a", "no send-time model"))
    else:
        rows.append(
            (
                "send-time hit@3",
                s["hit_at_3_exact"],
                s["hit_at_3_served"],
                f"{s['n_engagements']} test engagements",
            )
        )
    cells = "".join(
        f"<tr><td>{name}</td><td>{_fmt(exact)}</td><td>{_fmt(served)}</td><td>{rows_used}</td></tr>"
        for name, exact, served, rows_used in rows
    )
    return (
        "<h2>At random test instants: features exact vs as served from the newest snapshot</h2>"
        "<table><tr><th>metric</th><th>exact</th><th>served</th><th>rows</th></tr>"
        f"{cells}</table><p>{html.escape(report['served']['what'])}</p>"
    )


def _channel_html(c: Mapping[str, Any] | None) -> str:
    """The best-channel block: hit@1 and log loss against both baselines and the oracle, the
    link comparison and each channel's hour-of-day effects."""
    if c is None:
        return ""
    if not_applicable(c):
        return (
            f"<h2>Best channel: n/a</h2><p>{html.escape(str(c['reason']))}; no channel model was written.</p>"
        )
    methods = [
        ("model", ""),
        *((f"baseline: {text}", f"baseline_{key}_") for key, text in CHANNEL_BASELINES.items()),
    ]
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(c.get(prefix + 'hit_at_1'))}</td>"
        f"<td>{_fmt(c.get(prefix + 'log_loss'))}</td>"
        f"<td>{_fmt(c.get('true_engagement_of_choice', {}).get(prefix.removeprefix('baseline_').rstrip('_') or 'model'))}</td></tr>"
        for name, prefix in methods
    )
    oracle_engaged = c.get("true_engagement_of_choice", {}).get("oracle")
    rows += (
        f"<tr><td>oracle (simulator truth)</td><td>{'1' if c.get('hit_at_1') is not None else '—'}</td>"
        f"<td>{_fmt(c.get('oracle_log_loss'))}</td><td>{_fmt(oracle_engaged)}</td></tr>"
    )
    links = ", ".join(
        f"{row['link']}{' + cross-channel' if row.get('cross_channel') else ''} {_fmt(row['validation_log_loss'])}"
        for row in c.get("links", [])
    )
    hours = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{v:+.2f}</td>" for v in values) + "</tr>"
        for name, values in c.get("hour_effect", {}).items()
    )
    hour_header = "".join(f"<th>{h:02d}</th>" for h in range(24))
    shares = "".join(
        f"<tr><td>{html.escape(method)}</td>"
        + "".join(f"<td>{_fmt(v)}</td>" for v in share.values())
        + "</tr>"
        for method, share in c.get("channel_share", {}).items()
    )
    share_header = "".join(
        f"<th>{html.escape(name)}</th>" for name in next(iter(c.get("channel_share", {}).values()), {})
    )
    return f"""<h2>Best channel (test period)</h2>
<table><tr><th>method</th><th>hit@1 vs oracle</th><th>log loss (held-out sends)</th>
<th>true P(engaged) of the chosen channel</th></tr>{rows}</table>
<p>hit@1: {_fmt(c.get("n_instants"))} random test instants, best channel at its best slot of {html.escape(str(c.get("candidates")))}
(cold start: {_fmt(c.get("cold_start_share"))} of instants, hit@1 {_fmt(c.get("cold_start_hit_at_1"))}).
True P(engaged): the simulator's probability for the chosen channel at its truly best candidate slot, averaged
(the oracle's own choice: its ceiling). Log loss: {c["n_test"]} held-out sends at their actual slots. Model: {html.escape(str(c["model"]))}.
Link chosen on the validation period by log loss: {html.escape(links)}.</p>
{_among_sent_html(c.get("among_sent_channels"))}
<table><tr><th>chooses</th>{share_header}</tr>{shares}</table>
<table><tr><th>hour effect</th>{hour_header}</tr>{hours}</table>"""


def _among_sent_html(block: Mapping[str, Any] | None) -> str:
    if not block or not block.get("n_instants"):
        return ""
    return (
        f"<p>Only the channels each customer was sent on in the last 90 days ({block['n_instants']} instants "
        f"with two or more): hit@1 model {_fmt(block['hit_at_1'])}, global {_fmt(block['baseline_global_hit_at_1'])}, "
        f"customer's {_fmt(block['baseline_customer_hit_at_1'])}.</p>"
    )


# --------------------------------------------------------------------------- the policy block

_POLICY_COLUMNS = {  # policy row key: column title
    "messages": "messages",
    "share_suppressed": "share suppressed",
    "engagements_per_1000": "engagements / 1,000 messages",
    "engagements": "engagements",
    "purchases_per_1000": "purchases within H / 1,000 messages",
    "purchases": "purchases within H",
    "channel_hit_at_1": "channel hit@1 (vs oracle)",
    "share_not_opted_in": "share on a channel not opted in",
}
_POLICY_SECTION = re.compile(r'<section id="policy">.*?</section>\n?', re.DOTALL)


def policy_table(block: Mapping[str, Any]) -> str:
    """Plain-text table of the ``policy`` block (``nudge evaluate-policy`` prints it)."""
    lines = [
        f"campaign day from {block['as_of']} ({block['window_hours']:g} h), {block['n_customers']:,} customers, "
        f"purchases within {block['horizon_days']:g} days",
        f"{'policy':<16} {'messages':>8} {'suppr.':>7} {'eng/1000':>9} {'engaged':>9} {'buy/1000':>9} "
        f"{'purchases':>9} {'ch hit@1':>8}",
    ]
    for name, row in block["policies"].items():
        lines.append(
            f"{name:<16} {row['messages']:>8,} {row['share_suppressed']:>7.3f} {row['engagements_per_1000']:>9.1f} "
            f"{row['engagements']:>9.1f} {row['purchases_per_1000']:>9.2f} {row['purchases']:>9.2f} "
            f"{_fmt(row['channel_hit_at_1']):>8}"
        )
    s = block["suppression"]
    lines.append(
        f"suppressed {s['suppressed']:,} ({s['share']:.1%}): cost {s['purchases_forgone']:.2f} purchases, "
        f"{s['engagements_forgone']:.1f} engagements (oracle suppressing as many: "
        f"{s['oracle_matched_purchases_forgone']:.2f} purchases); {_fmt(s.get('suppressed_dormant_share'))} "
        "of the suppressed were dormant at T"
    )
    g = block.get("oracle_gap")
    if g:
        lines.append(
            f"gap to the oracle, engagements / 1,000 of nudge's {g['messages']:,} messages: nudge {g['nudge']:.1f}; "
            f"its channel at the truly best hour {g['nudge_channel_best_hour']:.1f}; the truly best channel at "
            f"nudge's hour {g['best_channel_nudge_hour']:.1f}; oracle {g['oracle']:.1f}"
        )
    lines.append(_floors_line(block))
    return "\n".join(lines)


def _floors_line(block: Mapping[str, Any]) -> str:
    f = block["floors"]

    def met(key: str) -> str:
        return "met" if f[key]["met"] else "NOT met"

    e, o, c = f["engagements_vs_email_10"], f["engagements_vs_oracle"], f["channel_hit_at_1"]
    baselines = ", ".join(f"{k} {_fmt(v)}" for k, v in c["baselines"].items())
    test = c.get("test_period")
    reference = (
        ""
        if not test
        else f" (training report, test period: {_fmt(test['model'])} vs global {_fmt(test['baseline_global'])}, "
        f"customer's {_fmt(test['baseline_customer'])})"
    )
    return (
        f"floors: nudge/email@10 {e['value']:.3f} >= {e['floor']:g} {met('engagements_vs_email_10')}; "
        f"nudge/oracle {o['value']:.3f} >= {o['floor']:g} {met('engagements_vs_oracle')}; "
        f"channel hit@1 {_fmt(c['value'])} above {baselines} {met('channel_hit_at_1')}{reference}"
    )


def policy_html(block: Mapping[str, Any] | None) -> str:
    """The ``policy`` block as a section: the table, the floors and a bar chart per policy."""
    if block is None:
        return ""
    header = "".join(f"<th>{html.escape(t)}</th>" for t in _POLICY_COLUMNS.values())
    rows = "".join(
        f"<tr><td>{html.escape(row['label'])}</td>"
        + "".join(
            f"<td>{row[k]:,}</td>" if isinstance(row[k], int) else f"<td>{_fmt(row[k])}</td>"
            for k in _POLICY_COLUMNS
        )
        + "</tr>"
        for row in block["policies"].values()
    )
    s = block["suppression"]
    png = _png(_policy_figure(block))
    return f"""<section id="policy">
<h2>What the decisions are worth: one campaign day, valued by the simulator's truth</h2>
<p>From {html.escape(block["as_of"])} for {block["window_hours"]:g} h, {block["n_customers"]:,} customers
({block["n_without_truth"]} of the plan without truth left out; {block["n_dormant"]} dormant at T: they engage
but cannot buy). Expected values, exact under the simulator: {html.escape(block["formulas"]["purchases"])}.</p>
<table><tr><th>policy</th>{header}</tr>{rows}</table>
<p>Suppressed by nudge: {s["suppressed"]:,} ({s["share"]:.1%}); had nudge messaged them at its own best
(channel, slot): {_fmt(s["engagements_forgone"])} engagements and {_fmt(s["purchases_forgone"])} purchases
within H forgone (the oracle suppressing as many customers of lowest true value forgoes
{_fmt(s["oracle_matched_purchases_forgone"])}).</p>
{_gap_html(block.get("oracle_gap"))}
<p>{html.escape(_floors_line(block))}.</p>
<figure><img alt="policies" src="data:image/png;base64,{png}"/>
<figcaption>Engagements and purchases within H per 1,000 messages, per policy</figcaption></figure>
</section>
"""


def _gap_html(g: Mapping[str, Any] | None) -> str:
    if not g:
        return ""
    return (
        f"<p>Gap to the oracle on nudge's {g['messages']:,} messages (engagements / 1,000): nudge "
        f"{_fmt(g['nudge'])}; its channel at the truly best hour {_fmt(g['nudge_channel_best_hour'])}; the "
        f"truly best channel at nudge's hour {_fmt(g['best_channel_nudge_hour'])}; oracle {_fmt(g['oracle'])}.</p>"
    )


def _policy_figure(block: Mapping[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(block["policies"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in (
        (axes[0], "engagements_per_1000", "engagements per 1,000 messages"),
        (axes[1], "purchases_per_1000", f"purchases within {block['horizon_days']:g} d per 1,000 messages"),
    ):
        values = [block["policies"][n][key] for n in names]
        colours = [
            "tab:blue" if n == "nudge" else "tab:green" if n.startswith("oracle") else "tab:grey"
            for n in names
        ]
        bars = ax.bar(range(len(names)), values, color=colours)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(title=title)
    return fig


def add_policy_section(html_path: Path, block: Mapping[str, Any]) -> Path:
    """Put the policy section into an existing report.html (replacing an older one), before the
    split; a page of its own when there is no report.html yet. Returns the page's path."""
    section = policy_html(block)
    if not html_path.is_file():
        html_path.write_text(
            f'<!doctype html>\n<html><head><meta charset="utf-8"><title>nudge policy evaluation</title></head>'
            f"<body>{section}</body></html>\n"
        )
        return html_path
    page = _POLICY_SECTION.sub("", html_path.read_text())
    anchor = "<h2>Split</h2>" if "<h2>Split</h2>" in page else "</body>"
    html_path.write_text(page.replace(anchor, section + anchor, 1))
    return html_path


_CANDIDATE_COLUMNS = {  # report key: column title (validation metrics)
    "hit_at_3": "validation hit@3",
    "hit_at_1": "hit@1",
    "hit_at_6": "hit@6",
    "log_loss": "log loss",
    "ort_latency_ms": "onnxruntime ms/call",
    "fit_seconds": "fit s",
}


_PROPENSITY_CANDIDATE_COLUMNS = {
    "validation_roc_auc": "validation ROC-AUC",
    "test_roc_auc": "test ROC-AUC (not used to choose)",
    "boosting_rounds": "boosting rounds",
    "fit_seconds": "fit s",
}
_CALIBRATION_CANDIDATE_COLUMNS = {
    "validation_log_loss": "validation log loss",
    "validation_excess": "excess over the lowest",
    "validation_excess_standard_error": "its standard error",
    "validation_ece": "validation ECE",
    "test_log_loss": "test log loss (not used to choose)",
    "test_ece": "test ECE (not used to choose)",
}


def _figures(plots: Plots) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    figures = [
        ("Propensity calibration (reliability) curve", _png(_calibration_figure(plots))),
        ("Propensity ROC curves", _png(_roc_figure(plots))),
        ("Propensity lift by decile", _png(_lift_figure(plots))),
    ]
    if plots.send_time is not None:
        figures.append(
            ("Send time: population, predicted vs observed", _png(_population_figure(plots.send_time)))
        )
        figures += [
            (f"Send time: customer {c.customer_id}", _png(_customer_figure(c)))
            for c in plots.send_time.customers
        ]
    return figures


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _calibration_figure(plots: Plots) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, p in plots.scores.items():
        curve = calibration_curve(plots.y_test, p)
        ax.plot([c["predicted"] for c in curve], [c["observed"] for c in curve], marker="o", label=name)
    ax.set(xlabel="predicted probability", ylabel="observed purchase rate", title="Calibration (10 bins)")
    ax.legend()
    return fig


def _roc_figure(plots: Plots) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in plots.scores.items():
        fpr, tpr, _ = roc_curve(plots.y_test, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    return fig


def _lift_figure(plots: Plots) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    width = 0.8 / max(len(plots.scores), 1)
    for i, (name, p) in enumerate(plots.scores.items()):
        ax.bar(
            np.arange(1, 11) + (i - (len(plots.scores) - 1) / 2) * width,
            lift_by_decile(plots.y_test, p),
            width=width,
            label=name,
        )
    ax.axhline(1, color="grey", linestyle=":")
    ax.set(xlabel="score decile (1 = highest)", ylabel="lift", title="Lift by decile")
    ax.legend()
    return fig


def _heatmap(ax: Any, values: np.ndarray, title: str) -> None:
    ax.imshow(values.reshape(len(DAYS), HOURS), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(DAYS)), DAYS)
    ax.set_xticks(range(0, HOURS, 3))
    ax.set(xlabel="local hour", title=title)


def _population_figure(plots: SendTimePlots) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3))
    _heatmap(axes[0], plots.population_predicted, "mean predicted (test)")
    _heatmap(axes[1], plots.population_observed, "observed test engagements")
    return fig


def _customer_figure(view: CustomerView) -> Any:
    import matplotlib.pyplot as plt

    panels = [("predicted", view.predicted)]
    if view.truth is not None:
        panels.append(("true preference", view.truth))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        _heatmap(ax, values, title)
        for slot in view.engaged_slots:
            ax.plot(slot % HOURS, slot // HOURS, marker="x", color="red")
    fig.suptitle(f"customer {view.customer_id} (x = test engagements)", y=1.06)
    return fig
