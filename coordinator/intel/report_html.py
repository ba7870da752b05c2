"""The health report as one self-contained HTML file: inline SVG radar and heat map, inline
CSS, no script and nothing fetched (a franchisee opens it from an e-mail, offline).

Every text that came from an export (channel, store names) is HTML-escaped.
"""

from __future__ import annotations

import math
from html import escape

from coordinator.intel.health import AXES, AXIS_LABELS, HealthReport, HeatMap

_WIDTH = 520  # wide enough for the side labels (Chinese and English)
_HEIGHT = 360
_R = 120


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def radar_svg(radar: dict[str, float | None]) -> str:
    cx, cy = _WIDTH / 2, _HEIGHT / 2
    n = len(AXES)
    parts = [f'<svg id="radar" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
             'role="img" aria-label="health radar">']
    for ring in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(
            f"{cx + _R * ring * math.sin(2 * math.pi * i / n):.1f},"
            f"{cy - _R * ring * math.cos(2 * math.pi * i / n):.1f}" for i in range(n))
        parts.append(f'<polygon points="{pts}" fill="none" stroke="#ccc"/>')
    shape = []
    for i, axis in enumerate(AXES):
        angle = 2 * math.pi * i / n
        x, y = cx + _R * math.sin(angle), cy - _R * math.cos(angle)
        parts.append(f'<line x1="{cx}" y1="{cy}" x2="{x:.1f}" y2="{y:.1f}" stroke="#bbb"/>')
        value = radar.get(axis)
        v = 0.0 if value is None else max(0.0, min(1.0, value))
        shape.append(f"{cx + _R * v * math.sin(angle):.1f},{cy - _R * v * math.cos(angle):.1f}")
        lx, ly = cx + (_R + 28) * math.sin(angle), cy - (_R + 28) * math.cos(angle)
        anchor = "middle" if abs(lx - cx) < 5 else ("start" if lx > cx else "end")
        parts.append(
            f'<text class="axis" data-axis="{axis}" data-value="{_pct(value)}" x="{lx:.1f}" '
            f'y="{ly:.1f}" text-anchor="{anchor}" font-size="11">'
            f'<tspan x="{lx:.1f}">{escape(AXIS_LABELS[axis])}</tspan>'
            f'<tspan x="{lx:.1f}" dy="13" font-weight="bold">{_pct(value)}</tspan></text>')
    parts.append(f'<polygon id="radar-shape" points="{" ".join(shape)}" '
                 'fill="rgba(30,120,200,0.35)" stroke="#1e78c8" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def heat_svg(heat: HeatMap | None) -> str:
    if heat is None:
        return '<p id="heatmap">no destinations with coordinates</p>'
    cell = 20
    side = heat.cells * cell
    top = max((c for row in heat.counts for c in row), default=0) or 1
    parts = [f'<svg id="heatmap" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}"'
             f' width="{side}" height="{side}" role="img" aria-label="destination heat map">']
    for r, row in enumerate(heat.counts):
        for c, count in enumerate(row):
            if not count:
                continue
            alpha = 0.12 + 0.88 * count / top
            parts.append(f'<rect class="cell" data-count="{count}" x="{c * cell}" '
                         f'y="{r * cell}" width="{cell}" height="{cell}" '
                         f'fill="rgba(220,60,30,{alpha:.2f})"><title>{count}</title></rect>')
    parts.append(f'<rect x="0" y="0" width="{side}" height="{side}" fill="none" '
                 'stroke="#999"/></svg>')
    caption = (f"<figcaption>lat {heat.lat_min:.3f}–{heat.lat_max:.3f}, "
               f"lng {heat.lon_min:.3f}–{heat.lon_max:.3f}; darkest cell {top} orders"
               "</figcaption>")
    return "<figure>" + "".join(parts) + caption + "</figure>"


def _rows(cells: list[list[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)


def render(report: HealthReport, *, title: str = "订单健康报告 Order health report") -> str:
    near = report.near_store
    shares = _rows([[escape(ch), _pct(s)] for ch, s in report.channel_shares.items()])
    delays = _rows([[escape(ch), f"{d['orders']:.0f}", f"{d['mean']:.1f}", f"{d['p50']:.1f}",
                     f"{d['p90']:.1f}"] for ch, d in report.entry_delay_min.items()])
    cycles = _rows([[escape(c.store), str(c.orders), f"{c.period_days:g}", f"{c.spread_days:g}"]
                    for c in report.cycles]) or '<tr><td colspan="4">none</td></tr>'
    healing = _rows([[escape(kind), str(k["exceptions"]), str(k["resolved_automatically"])]
                     for kind, k in report.self_healing.get("by_kind", {}).items()])
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body{{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:24px;color:#222}}
section{{display:inline-block;vertical-align:top;margin:0 24px 24px 0}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}} .big{{font-size:28px;font-weight:bold}}
</style></head><body>
<h1>{escape(title)}</h1>
<p>{report.since:%Y-%m-%d} – {report.until:%Y-%m-%d} · <span id="orders">{report.orders}</span>
 orders</p>
<section><h2>雷达 Radar</h2>{radar_svg(report.radar)}</section>
<section><h2>5 km 内 Near a store</h2>
<p class="big" id="near-share">{_pct(near["share"])}</p>
<p>{near["within"]} of {near["with_coordinates"]} destinations within {near["km"]:g} km of one
 of {near["stores"]} stores</p>
<h2>渠道 Channel mix</h2><table id="channels"><tr><th>channel</th><th>share</th></tr>
{shares}</table></section>
<section><h2>入系统延迟 Entry delay (minutes)</h2>
<table id="entry-delay"><tr><th>channel</th><th>orders</th><th>mean</th><th>p50</th><th>p90</th>
</tr>{delays}</table><p>basis: {escape(report.entry_delay_basis)}</p>
<h2>固定补货周期 Fixed reorder cycles</h2>
<table id="cycles"><tr><th>store</th><th>order days</th><th>period (days)</th>
<th>spread (days)</th></tr>{cycles}</table>
<h2>自愈 Self-healing</h2><table id="healing"><tr><th>kind</th><th>exceptions</th>
<th>handled alone</th></tr>{healing}</table></section>
<section><h2>目的地热力图 Destination heat map</h2>{heat_svg(report.heat_map)}</section>
</body></html>
"""
