"""docs/configuration.md is generated from the config dataclasses and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_page_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_config_docs.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_documented() -> None:
    import dataclasses

    from ris.embedder.config import EmbedderConfig
    from ris.search.config import SearchConfig
    from ris.tools.config_docs import field_comments

    text = (ROOT / "docs" / "configuration.md").read_text()
    for cls in (EmbedderConfig, SearchConfig):
        for field in dataclasses.fields(cls):
            assert f"`--{field.name.replace('_', '-')}`" in text, field.name
    assert field_comments(SearchConfig)["port"] == "0 = pick a free port"
