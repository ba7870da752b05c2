"""The return-reasons page: recent returns with their reason and confidence, a one-click
correction per row (choosing another reason in its list saves it), and the root-cause
tables per warehouse, SKU and carrier.

Customer text is untrusted: every value is HTML-escaped; the script reads ids from
``data-`` attributes and sends JSON, never builds markup from text. The correction is
recorded under the logged-in person (the session), with the CSRF header trust asks for.
"""

from __future__ import annotations

from html import escape
from typing import Any

from coordinator.intel.classifier import REASONS

_SCRIPT = """
// the session's CSRF token (cookie bw_csrf) goes back as a header on every change
const csrf = (document.cookie.split('; ').find(c => c.startsWith('bw_csrf=')) || '')
  .slice('bw_csrf='.length);
document.querySelectorAll('select.reason').forEach(select => {
  select.addEventListener('change', async () => {
    const row = select.closest('tr');
    const status = row.querySelector('.saved');
    const r = await fetch('/returns/' + row.dataset.returnId + '/correction', {
      method: 'POST', credentials: 'same-origin',
      headers: {'content-type': 'application/json', 'X-CSRF-Token': decodeURIComponent(csrf)},
      body: JSON.stringify({reason: select.value})});
    status.textContent = r.ok ? '已纠正 saved' : '失败 failed ' + r.status;
    if (r.ok) { row.dataset.reason = select.value; } else { select.value = row.dataset.reason; }
  });
});
"""

def _options(current: str) -> str:
    return "".join(
        f'<option value="{code}"{" selected" if code == current else ""}>'
        f"{escape(zh)} {code}</option>" for code, zh in REASONS.items())


def _root_table(by: str, rows: list[dict[str, Any]]) -> str:
    """Per key: returns and every reason with its count, most first (a tie shows as one)."""
    body = "".join(
        f'<tr><td>{escape(str(r[by]) or "–")}</td><td>{r["returns"]}</td><td>'
        + " · ".join(f"{escape(REASONS[reason])} {n}" for reason, n in r["reasons"].items())
        + "</td></tr>" for r in rows)
    return (f'<table id="root-{by}"><tr><th>{by}</th><th>returns</th><th>reasons</th></tr>'
            f"{body}</table>")


def render(recent: list[dict[str, Any]], roots: dict[str, list[dict[str, Any]]]) -> str:
    rows = "".join(
        f'<tr data-return-id="{r["id"]}" data-reason="{r["reason"]}">'
        f'<td>{r["id"]}</td><td>{escape(r["order_id"])}</td><td>{escape(r["text"])}</td>'
        f'<td>{r["confidence"] * 100:.0f}%</td><td>v{r["model_version"]}</td>'
        f'<td><select class="reason">{_options(r["reason"])}</select>'
        f'<span class="saved"></span></td></tr>' for r in recent)
    roots_html = "".join(f"<section><h2>{escape(by)}</h2>{_root_table(by, table)}</section>"
                         for by, table in roots.items())
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>退货原因 Return reasons</title>
<style>body{{font-family:system-ui,"PingFang SC",sans-serif;margin:24px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:3px 8px}}
section{{display:inline-block;vertical-align:top;margin-right:24px}}</style></head><body>
<h1>退货原因 Return reasons</h1>
<p>改选原因即保存纠正(记录操作人)。
Picking another reason saves the correction, under your login.</p>
<table id="returns"><tr><th>#</th><th>order</th><th>text</th><th>confidence</th>
<th>model</th><th>reason</th></tr>{rows}</table>
<h1>根因 Root causes</h1>{roots_html}
<script>{_SCRIPT}</script></body></html>
"""
