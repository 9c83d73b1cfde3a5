"""The generated reference pages under docs/ are current, and the README stays a short front page."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxrewrite.docs import pages

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("relative, text", pages().items())
def test_generated_pages_are_current(relative, text):
    path = ROOT / "docs" / relative
    assert path.is_file() and path.read_text() == text, f"docs/{relative} is stale: run `make docs`"


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 80
    links = [part.split(")")[0] for part in readme.split("](")[1:]]
    assert links and all((ROOT / link).exists() for link in links), links
