"""Self-contained HTML pages: sections of text, tables and plots, with the plots embedded as PNG
data URIs and the style inline, so a page opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Section", "figure_tag", "table_tag", "render_page"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1f2933; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d9e2ec; padding-bottom: .3rem; }
p.meta { color: #52606d; margin-top: 0; } p.note { color: #52606d; font-size: .9rem; }
p.warning { background: #fff4e5; border-left: 4px solid #f0a202; padding: .5rem .8rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .6rem 0; }
th, td { border: 1px solid #d9e2ec; padding: .2rem .45rem; text-align: right; }
th { background: #f0f4f8; } td:first-child, th:first-child { text-align: left; }
nav a { margin-right: .8rem; } img { max-width: 100%; height: auto; margin: .4rem 0; }
.scroll { overflow-x: auto; }
"""


@dataclass
class Section:
    """One part of a page: an anchor id, a title and its HTML body parts, in order."""

    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, words: str, cls: str | None = None) -> Section:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(words)}</p>")
        return self

    def add(self, fragment: str) -> Section:
        self.parts.append(fragment)
        return self


def figure_tag(ax, alt: str, dpi: int = 100) -> str:
    """An ``<img>`` with the axes' figure as an embedded PNG."""
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_tag(frame: pd.DataFrame, percent: tuple[str, ...] = (), digits: int = 2) -> str:
    """A frame as an HTML table: ``percent`` columns as percentages, other floats rounded,
    missing values as empty cells."""
    shown = frame.copy()
    for c in shown.columns:
        col = shown[c]
        if c in percent:
            shown[c] = [f"{v:.1%}" if pd.notna(v) else "" for v in col]
        elif pd.api.types.is_float_dtype(col):
            shown[c] = [f"{v:,.{digits}f}" if pd.notna(v) else "" for v in col]
        elif pd.api.types.is_integer_dtype(col):
            shown[c] = [f"{v:,}" for v in col]
        elif pd.api.types.is_datetime64_any_dtype(col):
            shown[c] = [f"{v:%Y-%m-%d}" if pd.notna(v) else "" for v in col]
    body = shown.to_html(index=False, escape=True, na_rep="", border=0)
    return f'<div class="scroll">{body}</div>'


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page, with a table of contents linking each section."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n'
        + "\n".join(s.parts)
        + "\n</section>"
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<p class="meta">{html.escape(subtitle)}</p>\n'
        f"<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )
