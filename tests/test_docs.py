"""The project's documents cite only documents a clone of the project has."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
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


SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
DOCUMENTS = ["README.md", *sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))]


def _shell_lines(document: str) -> list[str]:
    """The commands of a document's ``sh`` blocks, continuation lines joined, comments dropped."""
    text = (REPO / document).read_text(encoding="utf-8")
    commands = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


# Parses each command line it is given (JSON, on stdin) with tempalias's own parser, in a process
# of its own: importing tempalias.cli monkey-patches the importer with gevent. Prints the ones
# that do not parse; --help and --version (exit 0) parse.
PARSE_ALL = """
import contextlib, io, json, sys
from tempalias.cli import build_parser
bad = []
for args in json.load(sys.stdin):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code:
            bad.append(args)
print(json.dumps(bad))
"""


def test_every_tempalias_command_in_the_docs_parses_as_written():
    """Issue 16: the docs' commands cannot go stale: each ``tempalias ...`` line of a document's
    ``sh`` blocks is one the command line still accepts, options and all."""
    found = []
    for document in DOCUMENTS:
        for line in _shell_lines(document):
            words = shlex.split(line)
            at = next((i for i, word in enumerate(words) if word.endswith("bin/tempalias")
                       or word == "tempalias"), None)
            if at is not None:
                found.append(words[at + 1:])
    assert len(found) >= 8  # README's administration commands and the custom domains' ones
    parsed = subprocess.run([sys.executable, "-c", PARSE_ALL], input=json.dumps(found),
                            capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    assert json.loads(parsed.stdout) == []


def test_every_setting_the_docs_name_exists():
    """A setting renamed or removed in the code leaves no document naming the old one."""
    from tempalias.config import SETTINGS, env_name

    known = {env_name(setting) for setting in SETTINGS}
    stale = {f"{document}: {name}" for document in DOCUMENTS
             for name in re.findall(r"\bTEMPALIAS_[A-Z0-9_]*[A-Z0-9]\b",
                                    (REPO / document).read_text(encoding="utf-8"))
             if name not in known}
    assert stale == set()


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
