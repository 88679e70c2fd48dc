"""Show search results: an HTML page and a PNG contact sheet, each query beside its top-k hits.

The page's thumbnails are written next to it (images/), so the folder can be moved or zipped
and still shows everything. Hit images are found through the hit's uri (the client path sent
at ingest); a hit whose file is not on this machine gets a grey placeholder.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ris.client.types import Hit, QueryResult

THUMB = 160
CAPTION = 40
PAD = 8


@dataclass(frozen=True)
class ShownQuery:
    """One query to show: a name, its image (path or bytes, None for vector/id/text queries)
    and what the search returned."""

    name: str
    image: Path | bytes | None
    result: QueryResult


@dataclass(frozen=True)
class ResultsPage:
    html_path: Path
    png_path: Path


def write_results_page(
    out_dir: Path,
    queries: Sequence[ShownQuery],
    *,
    title: str = "Reverse image search results",
    image_root: Path | None = None,
) -> ResultsPage:
    """Write out_dir/index.html, out_dir/contact_sheet.png and out_dir/images/*.jpg."""
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows: list[list[tuple[Image.Image, str]]] = []
    sections: list[str] = []
    for q_index, query in enumerate(queries):
        query_thumb = thumbnail(query.image)
        query_file = f"q{q_index:03d}.jpg"
        query_thumb.save(images_dir / query_file, quality=85)
        row = [(query_thumb, _short(query.name, 26))]  # the blue frame marks the query
        figures = [_figure(f"images/{query_file}", "query", query.name, "query")]
        if query.result.error is not None:
            figures.append(
                f'<p class="error">failed: {html.escape(query.result.error.message)}</p>'
            )
        for rank, hit in enumerate(query.result.hits, start=1):
            hit_thumb = thumbnail(resolve_hit_image(hit, image_root))
            hit_file = f"q{q_index:03d}_{rank:03d}.jpg"
            hit_thumb.save(images_dir / hit_file, quality=85)
            row.append((hit_thumb, f"#{rank} {hit.score:.3f} {_short(hit.label)}"))
            caption = f"#{rank} score {hit.score:.4f}<br>{html.escape(hit.label or '-')}"
            figures.append(_figure(f"images/{hit_file}", caption, hit.uri or hit.id, hit.id))
        rows.append(row)
        flag = " (low confidence)" if query.result.low_confidence else ""
        sections.append(
            f"<section><h2>{html.escape(query.name)}{flag}</h2>"
            f'<div class="row">{"".join(figures)}</div></section>'
        )
    html_path = out_dir / "index.html"
    html_path.write_text(_page(title, sections), encoding="utf-8")
    png_path = out_dir / "contact_sheet.png"
    contact_sheet(rows).save(png_path)
    return ResultsPage(html_path, png_path)


def resolve_hit_image(hit: Hit, image_root: Path | None) -> Path | None:
    """The local file behind a hit's uri, when there is one on this machine."""
    if not hit.uri or "://" in hit.uri:
        return None
    path = Path(hit.uri)
    if not path.is_absolute() and image_root is not None:
        path = image_root / path
    return path if path.is_file() else None


def thumbnail(image: Path | bytes | None, size: int = THUMB) -> Image.Image:
    """An RGB thumbnail that fits size x size; a grey square when there is no readable image."""
    try:
        if image is None:
            raise OSError("no image")
        source = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image)
        with source:
            source.seek(0)
            picture = ImageOps.exif_transpose(source).convert("RGB")
        picture.thumbnail((size, size))
        return picture
    except (OSError, ValueError, Image.DecompressionBombError):
        return Image.new("RGB", (size, size), (200, 200, 200))


def contact_sheet(rows: Sequence[Sequence[tuple[Image.Image, str]]]) -> Image.Image:
    """One row per query: the query (outlined in blue) then its hits, captions underneath."""
    columns = max((len(r) for r in rows), default=1)
    cell_w, cell_h = THUMB + PAD, THUMB + CAPTION + PAD
    sheet = Image.new("RGB", (columns * cell_w + PAD, max(1, len(rows)) * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        for c, (picture, caption) in enumerate(row):
            x, y = PAD + c * cell_w, PAD + r * cell_h
            offset = ((THUMB - picture.width) // 2, (THUMB - picture.height) // 2)
            sheet.paste(picture, (x + offset[0], y + offset[1]))
            if c == 0:
                draw.rectangle(
                    (x - 2, y - 2, x + THUMB + 1, y + THUMB + 1), outline="blue", width=3
                )
            draw.text((x, y + THUMB + 4), caption[:26], fill="black", font=font)
    return sheet


def _short(text: str, limit: int = 18) -> str:
    """The tail of a path (folder/file), cut from the left to fit under a thumbnail."""
    name = "/".join(text.replace("\\", "/").split("/")[-2:])
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _figure(src: str, caption: str, title: str, alt: str) -> str:
    return (
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}" '
        f'title="{html.escape(title)}"><figcaption>{caption}'
        f"<br><small>{html.escape(title)}</small></figcaption></figure>"
    )


def _page(title: str, sections: Sequence[str]) -> str:
    style = (
        "body{font-family:sans-serif;margin:1em}"
        ".row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}"
        f"figure{{margin:0;width:{THUMB}px;font-size:12px;word-break:break-all}}"
        "figure:first-child img{outline:3px solid #36c}"
        f"img{{max-width:{THUMB}px;max-height:{THUMB}px}}"
        ".error{color:#b00}"
    )
    body = "\n".join(sections)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
