"""Both pages from one :class:`~uaafusion.report.context.ReportContext`, with Jinja2 templates
(``templates/index.html.j2``, autoescaped, and ``templates/README.md.j2``); the discussion and the
legends are Markdown, rendered for the HTML page by markdown-it-py (CommonMark with tables, raw HTML
shown as text).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from uaafusion.report.context import ReportContext
from uaafusion.report.tables import Cell
from uaafusion.integrity import write_text_atomically

PAGES: tuple[tuple[str, str], ...] = (("index.html.j2", "index.html"), ("README.md.j2", "README.md"))
"""``(template, file written in the report folder)``; the first is the page :func:`write_pages` returns."""


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_html(text: str) -> Markup:
    """Markdown blocks (paragraphs, headings, lists, code, tables) as HTML."""
    return Markup(_markdown().render(text))


def markdown_inline_html(text: str) -> Markup:
    """One line of Markdown (emphasis, code) as HTML, without a paragraph around it."""
    return Markup(_markdown().renderInline(text))


def markdown_escape(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def markdown_cell(cell: Cell) -> str:
    """A cell as Markdown: bold when ``strong``, its mark after it."""
    text = markdown_escape(cell.text)
    return f"{f'**{text}**' if cell.strong else text} {cell.mark}".rstrip()


@cache
def environment() -> Environment:
    """The Jinja2 environment of the package's templates (HTML autoescaped; undefined names are errors)."""
    env = Environment(loader=PackageLoader("uaafusion.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(markdown=markdown_html, markdown_inline=markdown_inline_html, md_escape=markdown_escape,
                       md_cell=markdown_cell)
    return env


def render_page(template: str, context: ReportContext) -> str:
    """The text of one page (``template`` of :data:`PAGES`)."""
    return environment().get_template(template).render(report=context)


def write_pages(context: ReportContext, folder: Path) -> Path:
    """Write every page of :data:`PAGES` into ``folder``; return the HTML page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for template, name in PAGES:
        write_text_atomically(folder / name, render_page(template, context))
    return folder / PAGES[0][1]
