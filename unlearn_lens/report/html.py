"""One self-contained HTML file: inline CSS, figures embedded as base64 PNG, no external requests."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #334; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0 1.2rem; font-size: .9rem; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccd; padding: .25rem .6rem; text-align: right; }
th { background: #eef0f6; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { font-size: .85rem; color: #555; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; }
details { margin: .6rem 0; } summary { cursor: pointer; color: #334; }
.verdict { background: #f5f7ff; border-left: 4px solid #4456aa; padding: .5rem .8rem; margin: .6rem 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 1rem; }
.card { border: 1px solid #ccd; border-radius: 6px; padding: .6rem 1rem; background: #fbfbfe; }
.card h3 { margin: .2rem 0 .6rem; font-size: 1.15rem; }
.badge { font-size: .85rem; font-weight: normal; background: #4456aa; color: #fff; border-radius: 4px;
         padding: .1rem .45rem; margin-left: .5rem; }
.answer { display: grid; grid-template-columns: 8.5rem 1fr; gap: .1rem .6rem; margin: .35rem 0; }
.answer .q { color: #555; } .answer .a { font-weight: 600; }
.answer details { grid-column: 2; margin: 0; font-size: .85rem; color: #444; }
pre { background: #f6f6f8; padding: .6rem; overflow-x: auto; font-size: .8rem; }
"""


@dataclass
class Table:
    """A titled table of already formatted cells."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    collapsed: bool = False


@dataclass
class Card:
    """A compact box of short answers, each with its evidence one click away.

    `answers` holds (question, answer, evidence) triples; the card and each answer carry data
    attributes (`data-card`, `data-question`) so that a script can read them back."""

    title: str
    badge: str
    answers: Sequence[tuple[str, str, str]]


@dataclass
class Section:
    """A heading followed by verdict boxes, paragraphs, tables, figures (side by side when
    `figure_columns` > 1, as space allows) and preformatted text; `cards` come first, side by side,
    and `evidence` paragraphs last, collapsed under one summary line."""

    heading: str
    cards: list[Card] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)
    preformatted: str = ""
    figure_columns: int = 1
    evidence: list[str] = field(default_factory=list)


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    caption = (
        f"<caption>{html.escape(table.caption)}</caption>"
        if table.caption and not table.collapsed
        else ""
    )
    markup = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if table.collapsed:
        summary = f"{html.escape(table.caption or 'table')} ({len(table.rows)} rows)"
        return f"<details><summary>{summary}</summary>{markup}</details>"
    return markup


def _card(card: Card) -> str:
    answers = "".join(
        f"<div class='answer' data-question='{html.escape(question, quote=True)}'>"
        f"<span class='q'>{html.escape(question)}?</span><span class='a'>{html.escape(answer)}</span>"
        f"<details><summary>evidence</summary>{html.escape(evidence)}</details></div>"
        for question, answer, evidence in card.answers
    )
    return (
        f"<div class='card' data-card='{html.escape(card.title, quote=True)}'><h3>"
        f"{html.escape(card.title)}<span class='badge'>{html.escape(card.badge)}</span></h3>"
        f"{answers}</div>"
    )


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption or Path(path).stem)
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML string; figures are read from disk and embedded."""
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.cards:
            parts.append(f"<div class='cards'>{''.join(_card(c) for c in section.cards)}</div>")
        parts.extend(f"<div class='verdict'>{html.escape(v)}</div>" for v in section.verdicts)
        parts.extend(f"<p>{html.escape(p)}</p>" for p in section.paragraphs)
        parts.extend(_table(t) for t in section.tables)
        figures = "".join(_figure(path, caption) for path, caption in section.figures)
        parts.append(
            f"<div class='pair'>{figures}</div>"
            if section.figure_columns > 1 and figures
            else figures
        )
        if section.evidence:
            paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in section.evidence)
            parts.append(
                f"<details><summary>Evidence and thresholds</summary>{paragraphs}</details>"
            )
        if section.preformatted:
            parts.append(f"<pre>{html.escape(section.preformatted)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)
