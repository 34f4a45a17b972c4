"""`kaizen eval report`: quality over time, from SQL (eval_runs, eval_scores through the `quality_trend` view,
quality_alerts, the job queue), as plain data (the CLI prints it as tables) and as an HTML page with an inline
SVG chart (no extra dependency, opens in any browser)."""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

CHART_METRICS = ("recall@1", "recall@5", "mrr@10")
COLORS = ("#4c6ef5", "#2f9e44", "#e8590c", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c940d")


def _rows(session, sql: str, **params) -> list[dict]:
    return [dict(r) for r in session.execute(sa.text(sql), params).mappings().all()]


def build_report(store, *, runs: int = 15) -> dict:
    """Everything the table and the chart show, as plain data (also the --json output)."""
    from eval.worker.drift import evaluate_drift

    with store.session() as s:
        recent = _rows(s, """
            SELECT id, kind, kb_version, status, items, summary, error, started_at, finished_at,
                   extract(epoch FROM finished_at - started_at)::float8 AS seconds
            FROM eval_runs ORDER BY id DESC LIMIT :n""", n=runs)
        probe_series = _rows(s, """
            SELECT id, kb_version, finished_at, summary FROM eval_runs
            WHERE kind = 'probe' AND status = 'done' AND items > 0 ORDER BY finished_at""")
        versions = _rows(s, """
            SELECT DISTINCT ON (r.kb_version) r.kb_version, v.status AS version_status, r.id AS latest_run,
                   r.items, r.summary, count(*) OVER (PARTITION BY r.kb_version) AS runs
            FROM eval_runs r LEFT JOIN kb_versions v ON v.id = r.kb_version
            WHERE r.kind = 'probe' AND r.status = 'done' ORDER BY r.kb_version, r.id DESC""")
        trend = _rows(s, """
            SELECT hour, kb_version, metric, subject, items, scored, mean FROM quality_trend
            WHERE subject = 'interaction' ORDER BY hour, metric""")
        alerts = _rows(s, """
            SELECT id, kb_version, metric, baseline, observed, window_size, tolerance, status, created_at
            FROM quality_alerts ORDER BY id DESC LIMIT 20""")
        queue = _rows(s, """
            SELECT task_name, status::text AS status, count(*) AS jobs FROM procrastinate_jobs
            GROUP BY 1, 2 ORDER BY 1, 2""")
    for row in recent + probe_series + versions:
        summary = row.pop("summary") or {}
        for metric in CHART_METRICS:
            row[metric] = summary.get(metric)
        row["baseline"] = bool(summary.get("baseline"))
    return {"runs": recent, "probe_series": probe_series, "versions": versions, "interaction_trend": trend,
            "alerts": alerts, "queue": queue, "drift": [c.as_dict() for c in evaluate_drift(store)]}


def default_chart_path(store) -> Path:
    return Path(store.settings.home) / "reports" / "quality.html"


def _series(report: dict) -> dict[str, list[tuple[datetime, float]]]:
    series: dict[str, list[tuple[datetime, float]]] = {}
    for run in report["probe_series"]:
        for metric in CHART_METRICS:
            if run.get(metric) is not None and run["finished_at"] is not None:
                series.setdefault(f"probes {metric}", []).append((run["finished_at"], float(run[metric])))
    for point in report["interaction_trend"]:
        if point["mean"] is not None:
            series.setdefault(f"answers {point['metric']}", []).append((point["hour"], float(point["mean"])))
    return series


def chart_svg(report: dict, width: int = 900, height: int = 360) -> str:
    """Metrics (0..1) over time: one line per metric, KB version changes as dashed lines, alerts as red marks."""
    left, right, top, bottom = 50, 200, 20, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    series = _series(report)
    times = [t for points in series.values() for t, _ in points] + [a["created_at"] for a in report["alerts"]]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    if not times:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
                     "no evaluations yet</text></svg>")
        return "".join(parts)
    t0, t1 = min(times).timestamp(), max(times).timestamp()
    span = max(t1 - t0, 1.0)

    def x(t: datetime) -> float:
        return left + plot_w * ((t.timestamp() - t0) / span if t1 > t0 else 0.5)

    def y(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, v)))

    previous = None
    for run in report["probe_series"]:
        if previous is not None and run["kb_version"] != previous and run["finished_at"] is not None:
            px = x(run["finished_at"])
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#888" '
                         f'stroke-dasharray="4 3"/><text x="{px + 3:.1f}" y="{top + 12}">KB v{run["kb_version"]}'
                         "</text>")
        previous = run["kb_version"]
    for i, (name, points) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>{html.escape(name)} '
                     f'{v:.3f} at {t:%Y-%m-%d %H:%M}</title></circle>' for t, v in points)
        ly = top + 14 + 16 * i
        parts.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="3"/><text x="{left + plot_w + 36}" y="{ly}">'
                     f"{html.escape(name)}</text>")
    for alert in report["alerts"]:
        ax = x(alert["created_at"])
        parts.append(f'<path d="M{ax - 6:.1f},{top + plot_h + 14} l6,-10 l6,10 z" fill="#e03131">'
                     f'<title>alert {alert["id"]}: {html.escape(alert["metric"])} {alert["baseline"]:.3f} → '
                     f'{alert["observed"]:.3f} ({alert["status"]})</title></path>')
    parts.append(f'<text x="{left}" y="{height - 6}">{datetime.fromtimestamp(t0):%Y-%m-%d %H:%M}</text>'
                 f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">'
                 f"{datetime.fromtimestamp(t1):%Y-%m-%d %H:%M}</text></svg>")
    return "".join(parts)


def write_chart(report: dict, path: str | Path) -> Path:
    """The chart as a standalone HTML page (inline SVG and the data as JSON); returns its path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({k: report[k] for k in ("probe_series", "alerts")}, default=str, ensure_ascii=False)
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Kaizen quality over time</title></head>"
            "<body style=\"font-family:sans-serif\"><h1>Kaizen quality over time</h1>"
            "<p>Gold-id probe metrics per probe run and answer metrics per hour; dashed lines are KB version "
            "changes, red marks are quality alerts.</p>"
            f"{chart_svg(report)}<script type=\"application/json\" id=\"data\">"
            f"{html.escape(data, quote=False)}</script></body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path.resolve()
