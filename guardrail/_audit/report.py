"""The audit report: one self-contained HTML file (figures inlined as PNG data), PNG files on request.

Figures are drawn with matplotlib (the ``audit`` extra) on its Agg canvas, never through pyplot, so
no GUI backend or global figure state is involved.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guardrail._audit.load import DECISIONS, Audit, Check, drift, mean_profile, pca, pick_bucket
from guardrail._values import VALUES
from guardrail._version import __version__

if TYPE_CHECKING:
    from guardrail._audit.diff import PolicyDiff

COLOURS = {"allow": "#2e7d32", "log": "#1565c0", "rewrite": "#ef6c00", "block": "#c62828"}
MAX_SERIES = 8  # deployments drawn on the radar and in the drift panels; the rest are summed in the tables
MAX_BLOCKED_ROWS = 200
FIGURES = ("radar", "pca", "drift")


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the audit report draws with matplotlib: pip install 'value-guardrail[audit]'") from exc
    return Figure


def render(
    audit: Audit, out: Path, png_dir: Path | None = None, bucket: str | None = None, *, diff: PolicyDiff | None = None
) -> list[Path]:
    """Write the HTML report to ``out`` (and the figures as PNG files into ``png_dir``).

    ``diff``: a policy change re-decided on recorded answers (``guardrail policy diff``), shown as its own section.

    Returns:
        The files written, the report first.
    """
    bucket_s = pick_bucket(audit.checks, bucket)
    figures = {"radar": _radar(audit), "pca": _pca(audit), "drift": _drift(audit, bucket_s)}
    images = {}
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        images[name] = buffer.getvalue()
    written = [out]
    out.parent.mkdir(parents=True, exist_ok=True)
    # A span may carry a lone surrogate (valid JSON, not encodable): shown escaped, never a crash.
    out.write_text(_html(audit, images, bucket_s, diff), encoding="utf-8", errors="backslashreplace")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            path = png_dir / f"{name}.png"
            path.write_bytes(data)
            written.append(path)
    return written


# -- figures ----------------------------------------------------------------------------------


def _radar(audit: Audit) -> Any:
    fig = _figure_class()(figsize=(6.0, 5.6))
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * n / len(VALUES) for n in range(len(VALUES))]
    profiles = [(d, mean_profile(audit.scored(d))) for d in audit.deployments()[:MAX_SERIES] if audit.scored(d)]
    peak = max((abs(s) for _, p in profiles for s in p), default=0.0)
    limit = max(0.5, math.ceil(peak * 1.15 * 4) / 4)  # quarter steps, never tighter than +-0.5
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_ylim(-limit, limit)
    ax.set_xticks(angles, [v.replace("_", " ") for v in VALUES], fontsize=9)
    ax.plot([*angles, angles[0]], [0.0] * (len(VALUES) + 1), color="#555", linewidth=1.2, linestyle="--")
    for deployment, profile in profiles:
        ax.plot(
            [*angles, angles[0]],
            [*profile, profile[0]],
            linewidth=2,
            label=f"{deployment} (n={len(audit.scored(deployment))})",
        )
        ax.fill([*angles, angles[0]], [*profile, profile[0]], alpha=0.08)
    ax.set_title("Mean value profile per deployment (dashed: 0, no connection)", fontsize=11, pad=18)
    ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.12), fontsize=8, frameon=False)
    return fig


def _pca(audit: Audit) -> Any:
    fig = _figure_class()(figsize=(10.5, 5.2))
    scored = audit.scored()
    if len(scored) < 3:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "fewer than 3 scored responses: no map", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ax, circle = fig.subplots(1, 2, width_ratios=[1.7, 1])
    points, loadings, ratio = pca(scored)
    for decision in DECISIONS:
        rows = [n for n, c in enumerate(scored) if c.final_decision == decision]
        if rows:
            ax.scatter(points[rows, 0], points[rows, 1], s=14, alpha=0.65, color=COLOURS[decision],
                       label=f"{decision} ({len(rows)})", edgecolors="none")  # fmt: skip
    ax.axhline(0, color="#ddd", linewidth=0.8, zorder=0)
    ax.axvline(0, color="#ddd", linewidth=0.8, zorder=0)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    ax.set_title("Checked responses in value space (PCA), by final decision", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="best")
    # The loadings beside the map: which way each value pulls a response on it.
    circle.add_patch(_circle_patch())
    longest = max(math.hypot(x, y) for x, y in loadings) or 1.0
    for name, (x, y) in zip(VALUES, loadings / longest):  # the longest arrow reaches the circle
        if math.hypot(x, y) < 0.12:
            continue  # a value that barely moves the map would only clutter it
        circle.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": "#555"})
        circle.text(x * 1.12, y * 1.12, name.replace("_", " "), fontsize=8, ha="center", va="center")
    circle.set_xlim(-1.25, 1.25)
    circle.set_ylim(-1.25, 1.25)
    circle.set_aspect("equal")
    circle.set_xticks([])
    circle.set_yticks([])
    circle.set_title("How each value pulls on PC1 / PC2 (loadings)", fontsize=10)
    return fig


def _circle_patch() -> Any:
    from matplotlib.patches import Circle

    return Circle((0, 0), 1, fill=False, color="#bbb", linewidth=0.8)


def _drift(audit: Audit, bucket_s: int) -> Any:
    deployments = [d for d in audit.deployments()[:MAX_SERIES] if audit.scored(d)]
    figure = _figure_class()
    fig = figure(figsize=(10.5, 0.6 + 2.5 * max(len(deployments), 1)))
    if not deployments:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no scored responses", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(deployments), 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{n}" for n in range(len(VALUES))]
    for ax, deployment in zip(axes, deployments):
        times, means = drift(audit.scored(deployment), bucket_s)
        for n, value in enumerate(VALUES):
            marker = "o" if len(times) < 12 else None
            ax.plot(times, [m[n] for m in means], color=colours[n], linewidth=1.4, marker=marker, markersize=3,
                    label=value.replace("_", " "))  # fmt: skip
        ax.axhline(0, color="#999", linewidth=0.8)
        ax.set_ylim(-1, 1)
        ax.set_ylabel("mean score")
        ax.set_title(f"{deployment}", fontsize=10, loc="left")
        ax.grid(alpha=0.3)
    axes[0].legend(ncol=5, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.12))
    fig.suptitle(f"Value drift: mean score per value per {_duration(bucket_s)} (UTC)", fontsize=11, y=1.0)
    fig.autofmt_xdate()
    return fig


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px auto; max-width: 1440px; padding: 0 16px;
       color: #222; }
.row { display: flex; gap: 32px; flex-wrap: wrap; align-items: flex-start; }
.row > div:first-child { flex: 1 1 0; min-width: 480px; overflow-x: auto; } .row > div:last-child { flex: 0 1 auto; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 30px; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 13px; } table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; white-space: nowrap; }
th { background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; }
.card b { display: block; font-size: 22px; } figure { margin: 10px 0; } figure img { max-width: 100%; }
.allow { color: #2e7d32; } .log { color: #1565c0; } .rewrite { color: #ef6c00; } .block { color: #c62828; }
.text { max-width: 380px; white-space: pre-wrap; word-break: break-word; } .none { color: #999; font-style: italic; }
"""


def _html(audit: Audit, images: dict[str, bytes], bucket_s: int, diff: PolicyDiff | None = None) -> str:
    checks = audit.checks
    finals = {d: sum(c.final_decision == d for c in checks) for d in DECISIONS}
    errors = sum(c.error is not None for c in checks)
    first, last = _when(checks[0].time_ns), _when(checks[-1].time_ns)
    cards = "".join(f'<div class="card"><b class="{d}">{finals[d]:,}</b>{d}</div>' for d in DECISIONS)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>value-guardrail audit: {escape(audit.source)}</title><style>{_CSS}</style></head><body>",
        "<h1>value-guardrail audit report</h1>",
        f'<p class="meta">Source: {escape(audit.source)} &middot; {first} to {last} (UTC) &middot; generated '
        f"{_when(int(datetime.now(timezone.utc).timestamp() * 1e9))} by value-guardrail {escape(__version__)}</p>",
        "<h2>Summary</h2>",
        f'<div class="cards"><div class="card"><b>{len(checks):,}</b>checks</div>{cards}'
        f'<div class="card"><b>{errors:,}</b>scoring errors</div>'
        f'<div class="card"><b>{audit.rechecks:,}</b>rewrite re-checks</div></div>',
        '<div class="row"><div>',
        "<h3>Final decisions by policy and deployment</h3>",
        _table(
            ["policy", "deployment", "checks", *DECISIONS, "altered"],
            [
                [
                    escape(p),
                    escape(d),
                    _n(sum(c.values())),
                    *(_n(c[x]) for x in DECISIONS),
                    f"{(c['block'] + c['rewrite']) / max(sum(c.values()), 1):.1%}",
                ]
                for p, d, c in audit.decisions_by()
            ],
            numeric=range(2, 8),
        ),
        "<h3>Most violated rules</h3>",
        _table(
            ["rule", "checks violating", "share of checks", "median margin"],
            [
                [f"<code>{escape(rule)}</code>", _n(n), f"{n / len(checks):.1%}", "n/a" if m is None else f"{m:.3f}"]
                for rule, n, m in audit.top_rules()
            ],
            numeric=range(1, 4),
            empty="no rule was violated",
        ),
        "<h3>Policies seen</h3>",
        _table(
            ["policy", "version", "content hash", "checks", "first seen", "last seen"],
            [
                [
                    escape(name),
                    escape(version),
                    f"<code>{escape(digest[:12])}</code>",
                    _n(n),
                    _when(lo, 16),
                    _when(hi, 16),
                ]
                for (name, version, digest), (n, lo, hi) in sorted(audit.policies.items())
            ],
            numeric=[3],
        ),
        "</div><div>",
        "<h3>Value profile per deployment</h3>",
        _img("radar", images["radar"], "Radar chart of the mean value profile per deployment"),
        "</div></div>",
        "<h2>Responses in value space</h2>",
        _img("pca", images["pca"], "PCA map of all checked responses, coloured by decision"),
        "<h2>Value drift</h2>",
        _img("drift", images["drift"], f"Mean score per value per {_duration(bucket_s)}"),
        *_shadows(audit),
        *_policy_change(diff),
        "<h2>Blocked responses</h2>",
        _blocked(checks),
        "</body></html>",
    ]
    return "\n".join(parts)


def _shadows(audit: Audit) -> list[str]:
    """The shadow-candidate section: how often each deployment's candidate would decide otherwise, and why."""
    rows = audit.disagreements()
    if not rows:
        return []
    body = []
    for deployment, candidate, n, differ, directions, rules in rows:
        ways = ", ".join(f"{escape(d)}: {_n(k)}" for d, k in directions.most_common()) or "none"
        why = ", ".join(f"<code>{escape(r)}</code> {_n(k)}" for r, k in rules.most_common(5)) or "n/a"
        body.append([escape(deployment), escape(candidate), _n(n), _n(differ), f"{differ / max(n, 1):.1%}", ways, why])
    header = ["deployment", "candidate", "checks", "disagreements", "rate", "directions", "rules behind them"]
    return [
        "<h2>Shadow candidates</h2>",
        '<p class="meta">Each candidate was decided on the same scores as the enforced policy and never applied. '
        "A direction reads enforced &rarr; candidate; a rule marked + fired under the candidate only, "
        "&minus; under the enforced policy only.</p>",
        _table(header, body, numeric=range(2, 5)),
    ]


def _policy_change(diff: PolicyDiff | None) -> list[str]:
    """The policy-change section: what re-deciding recorded answers under another policy changes."""
    if diff is None:
        return []

    def side(ref: Any) -> str:
        return f"<code>{escape(ref.source)}</code> ({escape(ref.name)} v{escape(ref.version)}, {escape(ref.hash[:12])})"

    def ids(values: Sequence[str]) -> str:
        return "<br>".join(f"<code>{escape(v)}</code>" for v in values) or '<span class="none">-</span>'

    notes = [f"{_n(diff.unscored)} without scores (decided by each policy's on_error or language rule)"]
    for which, count in (("old", diff.not_rescorable_old), ("new", diff.not_rescorable_new)):
        if count:
            notes.append(f"{_n(count)} not re-scorable under the {which} policy (other: score; never scored)")
    if diff.disagree_recorded:
        notes.append(f"{_n(diff.disagree_recorded)} recorded with another decision than the old policy gives them")
    moves = [[f"<code>{escape(t.change)}</code>", _n(t.rows), f"{t.rows / max(diff.rows, 1):.2%}", ids(t.examples)]
             for t in diff.transitions]  # fmt: skip
    rules = [[f"<code>{escape(r.rule)}</code>", _n(r.newly_fire), _n(r.no_longer_fire), ids(r.newly_fire_examples),
              ids(r.no_longer_fire_examples)] for r in diff.rules]  # fmt: skip
    rule_header = ["rule", "newly fire", "no longer fire", "newly firing (ids)", "no longer firing (ids)"]
    return [
        '<h2 id="policy-change">Policy change</h2>',
        f'<p class="meta">{_n(diff.rows)} recorded answers from {escape(diff.source)}, re-decided from their recorded '
        f"scores under {side(diff.old)} and {side(diff.new)}: <b>{_n(diff.changed)}</b> "
        f"({diff.changed / max(diff.rows, 1):.2%}) would be decided differently. {'; '.join(notes)}.</p>",
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_n(t.rows)}</b>{escape(t.change)}</div>' for t in diff.transitions[:6])
        + "</div>",
        "<h3>Decisions and actions that change</h3>",
        _table(["change", "answers", "share", "example ids"], moves, numeric=(1, 2), empty="no decision changes"),
        "<h3>Rules that fire on other answers</h3>",
        _table(rule_header, rules, numeric=(1, 2), empty="every rule fires on the same answers"),
    ]


def _blocked(checks: Sequence[Check]) -> str:
    blocked = [c for c in checks if c.final_decision == "block"][::-1]
    if not blocked:
        return '<p class="none">No response was blocked.</p>'
    note = ""
    if len(blocked) > MAX_BLOCKED_ROWS:
        note = f'<p class="meta">The {MAX_BLOCKED_ROWS} most recent of {len(blocked):,} blocked responses.</p>'
    rows = []
    for c in blocked[:MAX_BLOCKED_ROWS]:
        reasons = "<br>".join(
            f"<code>{escape(rule)}</code>" + ("" if m is None else f" by {m:.3f}") for rule, m in c.violations
        ) or escape(c.error or "")
        if c.rewrite:
            reasons += f"<br><i>{escape(c.rewrite)}</i>"
        rows.append([
            _when(c.time_ns), escape(c.deployment), escape(c.policy), reasons,
            _text(c.prompt), _text(c.response), _text(c.output),
        ])  # fmt: skip
    header = ["time (UTC)", "deployment", "policy", "violations (margin)", "prompt", "answer", "delivered"]
    return note + _table(header, rows, numeric=())


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Any, empty: str = "nothing") -> str:
    if not rows:
        return f'<p class="none">{escape(empty)}</p>'
    columns = set(numeric)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{v}</td>' if n in columns else f"<td>{v}</td>" for n, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, data: bytes, alt: str) -> str:
    source = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure id="fig-{name}"><img class="chart" alt="{escape(alt)}" src="{source}"></figure>'


def _text(value: str | None) -> str:
    return f'<div class="text">{escape(value)}</div>' if value else '<span class="none">not captured</span>'


def _n(value: int) -> str:
    return f"{value:,}"


def _when(ns: int, width: int = 19) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")[:width]


def _duration(seconds: int) -> str:
    for size, unit in ((604800, "week"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"
