"""HTML pages of the reports: Jinja2 templates (`pianolab/report_templates/`) around Markdown rendered by
markdown-it-py (CommonMark + tables), with every local PNG embedded as a data URI so that one file is the
whole report."""

from __future__ import annotations

import base64
import mimetypes
from functools import cache
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pianolab", "report_templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _parser(folder: Path | None) -> MarkdownIt:
    """CommonMark with GFM tables, raw HTML off; images under `folder` become data URIs."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules["image"]

    def image(renderer, tokens, idx, options, env):
        src = tokens[idx].attrGet("src") or ""
        path = folder / src if folder is not None and "://" not in src and not src.startswith("data:") else None
        if path is not None and path.is_file():
            tokens[idx].attrSet("src", data_uri(path))
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    # long snake_case names (dimensions, metrics) may wrap after an underscore, so tables fit narrow windows
    md.add_render_rule("text", lambda renderer, tokens, idx, options, env:
                       escapeHtml(tokens[idx].content).replace("_", "_<wbr>"))
    return md


def data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_html(text: str, folder: Path | None = None) -> Markup:
    """Markdown to safe HTML; relative image paths are resolved (and embedded) against `folder`."""
    return Markup(_parser(Path(folder) if folder is not None else None).render(text))


def render(template: str, **context) -> str:
    """Render `report_templates/<template>` with `context` (autoescaped; pass Markup for HTML)."""
    return _environment().get_template(template).render(**context)
