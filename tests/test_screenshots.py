"""`make screenshots` (tools/screenshots.py): its entry point and arguments, cheaply.

Taking the screenshots starts every process of `make run` and a browser, which is too slow for the
suite: `make screenshots` does that, and the README shows what it made.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import screenshots

ROOT = Path(__file__).resolve().parent.parent


def test_the_defaults_are_docs_at_1280_and_390_pixels() -> None:
    args = screenshots.parse_args([])
    assert args.out == ROOT / "docs"
    assert args.widths == (1280, 390)
    assert args.keep is False


def test_widths_and_folder_can_be_chosen() -> None:
    args = screenshots.parse_args(["--out", "shots/here", "--widths", "1440, 360", "--keep"])
    assert (args.out, args.widths, args.keep) == (Path("shots/here"), (1440, 360), True)


@pytest.mark.parametrize("widths", ["", "wide", "0", "1280,99999"])
def test_nonsense_widths_are_refused(widths: str) -> None:
    with pytest.raises(SystemExit):
        screenshots.parse_args(["--widths", widths])


def test_the_readme_shows_every_screenshot_the_script_makes_and_make_runs_it() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in screenshots.PAGES:
        for width in (1280, 390):
            name = screenshots.shot_name(page, width)
            assert f"docs/{name}" in readme
            assert (ROOT / "docs" / name).is_file()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^screenshots:.*\n\t\$\(BIN\)/python -m tools\.screenshots", makefile, re.MULTILINE)
