"""A batch job's rows as an HTML table: a thumbnail of each overlay, the
index's columns as they are, a row per image; clicking a row picks it."""
from __future__ import annotations

import html

from . import job_folder

PAGE = 50  # rows per page: a 10,000-image job is browsed, not sent whole


def _cell(table: job_folder.JobTable, column: str, value) -> str:
    if value is None or value == "":
        return "<td class='ns-none'>-</td>"
    if column in table.numeric:
        return f"<td class='ns-num'>{value:.4g}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def table_html(table: job_folder.JobTable, rows: list[dict], page: int = 0) -> str:
    shown = rows[page * PAGE:(page + 1) * PAGE]
    columns = [c for c in table.columns if c not in ("overlay",)]
    head = "<th>overlay</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in shown:
        thumb = job_folder.thumbnail(job_folder.overlay_path(table, r))
        img = f"<img src='{thumb}' alt=''>" if thumb else ""
        cls = "ns-failed" if r.get("status") != "ok" else ("ns-wrong" if job_folder.misclassified(r) else "")
        body.append(f"<tr class='{cls}' data-id='{html.escape(r['id'])}'><td class='ns-thumb'>{img}</td>"
                    + "".join(_cell(table, c, r.get(c)) for c in columns) + "</tr>")
    pages = max(1, -(-len(rows) // PAGE))
    return (f"<div class='ns-job-meta'>{len(rows)} of {len(table.rows)} images; page {page + 1} of {pages}; "
            "click a row for its large view</div>"
            f"<table class='ns-job'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


CSS = """
.ns-job { border-collapse: collapse; font-size: 0.85em; width: 100%; }
.ns-job th { text-align: left; position: sticky; top: 0; background: var(--background-fill-secondary); }
.ns-job td, .ns-job th { padding: 2px 6px; border-bottom: 1px solid var(--border-color-primary); }
.ns-job tbody tr { cursor: pointer; }
.ns-job tbody tr:hover { background: var(--background-fill-secondary); }
.ns-job tr.ns-failed td { color: #b91c1c; }
.ns-job tr.ns-wrong td { color: #b45309; }
.ns-job tr.ns-picked { outline: 2px solid var(--color-accent); }
.ns-job .ns-num { font-family: var(--font-mono); text-align: right; }
.ns-job .ns-thumb img { height: 48px; display: block; }
.ns-job-meta { font-size: 0.85em; margin: 4px 0; }
"""

# A click on a row puts its image id in the "image id" box (#job-pick), whose change loads the large view.
CLICK_JS = """
element.addEventListener('click', (e) => {
  const tr = e.target.closest && e.target.closest('tr[data-id]');
  if (!tr) return;
  element.querySelectorAll('tr.ns-picked').forEach(t => t.classList.remove('ns-picked'));
  tr.classList.add('ns-picked');
  const box = document.querySelector('#job-pick textarea, #job-pick input');
  if (!box) return;
  box.value = tr.dataset.id;
  box.dispatchEvent(new Event('input', {bubbles: true}));
});
"""
