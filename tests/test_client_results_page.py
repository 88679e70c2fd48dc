"""The results page and contact sheet: files written, names shown, page survives a move."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from ris.cli.results_page import ShownQuery, write_results_page
from ris.client.types import Hit, ItemError, QueryResult


def _photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _rgb(image: Image.Image) -> tuple[int, ...]:
    pixel = image.convert("RGB").getpixel((5, 5))
    assert isinstance(pixel, tuple)
    return pixel


def test_page_and_sheet_show_query_and_hits(tmp_path: Path) -> None:
    query = _photo(tmp_path / "query.jpg", (255, 0, 0))
    red = _photo(tmp_path / "red_car.jpg", (250, 5, 5), (300, 100))
    blue = _photo(tmp_path / "blue<sky>.png", (0, 0, 250))
    hits = [
        Hit(id="r1", score=0.97, label="car", uri=str(red)),
        Hit(id="b1", score=0.41, label="sky & sea", uri=str(blue)),
        Hit(id="gone", score=0.2, label="lost", uri=str(tmp_path / "deleted.jpg")),
    ]
    failed = QueryResult(hits=[], error=ItemError(3, "not an image: truncated"))
    page = write_results_page(
        tmp_path / "out",
        [ShownQuery("query.jpg", query, QueryResult(hits)), ShownQuery("junk", b"junk", failed)],
    )
    text = page.html_path.read_text()
    assert "red_car.jpg" in text and "blue&lt;sky&gt;.png" in text and "<sky>" not in text
    assert "score 0.9700" in text and "sky &amp; sea" in text
    assert "not an image: truncated" in text
    assert text.index("red_car.jpg") < text.index("blue&lt;sky&gt;.png")  # best first
    thumbs = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert thumbs == ["q000.jpg", "q000_001.jpg", "q000_002.jpg", "q000_003.jpg", "q001.jpg"]
    with Image.open(tmp_path / "out" / "images" / "q000_001.jpg") as thumb:
        assert max(thumb.size) <= 160 and _rgb(thumb)[0] > 200  # the red photo
    with Image.open(tmp_path / "out" / "images" / "q000_003.jpg") as placeholder:
        assert _rgb(placeholder) == (200, 200, 200)  # missing file: grey square
    with Image.open(page.png_path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.width >= 4 * 160 and sheet.height >= 2 * 160


def test_page_works_after_the_folder_moves(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "a.jpg", (0, 200, 0))
    page = write_results_page(
        tmp_path / "out", [ShownQuery("a.jpg", photo, QueryResult([Hit("a", 1.0, uri=str(photo))]))]
    )
    moved = Path(shutil.move(str(page.html_path.parent), str(tmp_path / "moved")))
    photo.unlink()
    text = (moved / "index.html").read_text()
    sources = [part.split('"')[0] for part in text.split('src="')[1:]]
    assert sources and all((moved / src).is_file() for src in sources)


def test_relative_uris_resolve_against_image_root(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    _photo(tmp_path / "lib" / "x.jpg", (0, 0, 255))
    result = QueryResult([Hit("x", 0.9, uri="x.jpg")])
    write_results_page(
        tmp_path / "out", [ShownQuery("q", None, result)], image_root=tmp_path / "lib"
    )
    with Image.open(tmp_path / "out" / "images" / "q000_001.jpg") as thumb:
        assert _rgb(thumb)[2] > 200
