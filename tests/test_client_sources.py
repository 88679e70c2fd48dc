"""Sources: folder, glob and CSV scanning; ids, labels, and rows reported instead of dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ris.client.sources import from_csv, from_folder, from_glob, load_source


def _image(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    _image(tmp_path / "cats" / "a.jpg")
    _image(tmp_path / "cats" / "b.png")
    _image(tmp_path / "dogs" / "deep" / "c.JPEG")
    _image(tmp_path / "top.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_ids_are_relative_paths_and_labels_parent_folders(tree: Path) -> None:
    source = from_folder(tree)
    got = {(i.id, i.label) for i in source.items}
    assert got == {
        ("cats/a.jpg", "cats"),
        ("cats/b.png", "cats"),
        ("dogs/deep/c.JPEG", "deep"),
        ("top.webp", ""),
    }
    assert all(i.path is not None and i.path.is_absolute() for i in source.items)
    assert source.problems == []


def test_folder_not_recursive_and_without_labels(tree: Path) -> None:
    assert [i.id for i in from_folder(tree, recursive=False).items] == ["top.webp"]
    assert {i.label for i in from_folder(tree, label_from_dir=False).items} == {""}


def test_glob_ids_relative_to_the_fixed_prefix(tree: Path) -> None:
    source = from_glob(f"{tree}/**/*.jpg")
    assert [i.id for i in source.items] == ["cats/a.jpg"]
    assert [i.id for i in load_source(f"{tree}/cats/*").items] == ["a.jpg", "b.png"]


def test_csv_like_the_seed_with_bad_rows_reported(tmp_path: Path) -> None:
    _image(tmp_path / "train" / "x" / "1.jpg")
    _image(tmp_path / "train" / "y" / "2.jpg")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "id,path,label,source\n"
        "0,train/x/1.jpg,x,cam1\n"
        "1,train/y/2.jpg,y,\n"
        "2,train/missing.jpg,z,\n"
        "0,train/y/2.jpg,dup,\n"
        "3,,empty,\n"
        ",train/y/2.jpg,noid,\n"
        "4,train/x/1.jpg,x,cam1,extra\n"
    )
    source = from_csv(csv_path)
    assert [(i.id, i.label, dict(i.metadata)) for i in source.items] == [
        ("0", "x", {"source": "cam1"}),
        ("1", "y", {}),
        ("train/y/2.jpg", "noid", {}),
    ]
    assert source.items[0].path == (tmp_path / "train" / "x" / "1.jpg").resolve()
    reasons = [(p.where.rsplit(":", 1)[1], p.message) for p in source.problems]
    assert [line for line, _ in reasons] == ["4", "5", "6", "8"]
    assert "file not found" in reasons[0][1]
    assert "duplicate id '0'" in reasons[1][1]
    assert "empty path" in reasons[2][1]
    assert "more fields" in reasons[3][1]


def test_csv_without_path_column_is_refused(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("id,file\n1,a.jpg\n")
    with pytest.raises(ValueError, match="'path' column"):
        from_csv(csv_path)


def test_seed_csv_parses_completely(caltech: Path) -> None:
    source = load_source(caltech / "reverse_image_search.csv")
    assert len(source.items) == 1000 and source.problems == []
    assert source.items[0].id == "0" and source.items[0].label == "Faces"


def test_load_source_guesses_and_refuses_nothing(tree: Path) -> None:
    assert len(load_source(tree).items) == 4
    assert [i.id for i in load_source(tree / "cats" / "a.jpg").items] == ["a.jpg"]
    with pytest.raises(FileNotFoundError):
        load_source(tree / "nowhere")
