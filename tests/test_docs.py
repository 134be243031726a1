"""The project's documents cite only documents a clone of the project has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A relative path to a Markdown file, as prose, comments and links cite one; not the tail of an
# absolute path or of a shell variable ($src/README.md).
CITED_DOCUMENT = re.compile(r"(?<![\w/$.-])((?:\.\./)*(?:[\w-]+/)*[\w.-]+\.md)\b")


def project_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
    return [REPO / name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


def test_every_cited_document_is_part_of_the_project():
    missing = []
    for path in project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for cited in set(CITED_DOCUMENT.findall(text)):
            if not ((path.parent / cited).is_file() or (REPO / cited).is_file()):
                missing.append(f"{path.relative_to(REPO)} cites {cited}")
    assert missing == []


# A Markdown image, ![text](path), whose path is relative (not a URL)
SHOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((?![a-z]+:)([^)\s]+)\)")


def test_every_image_a_document_shows_is_part_of_the_project():
    """The README's charts are committed files (docs/images/); a renamed or unadded one would show
    as a broken image only on the rendered page."""
    documents = [path for path in project_files() if path.suffix == ".md"]
    shown = [(path, image) for path in documents
             for image in SHOWN_IMAGE.findall(path.read_text(encoding="utf-8"))]
    assert any(image.endswith(".png") for _, image in shown)  # the pattern finds the README's
    missing = [f"{path.relative_to(REPO)} shows {image}" for path, image in shown
               if not (path.parent / image).is_file()]
    assert missing == []
