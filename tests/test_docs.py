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
    assert len(found) >= 8  # the administration commands and the custom domains' ones
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


# --- The docs' examples, run as written against a service started as `make run` starts it

# The documents whose curl, swaks, cat and tempalias lines are walked, in this order, against one
# service: the README's first alias and message, the API's create/look-up/revoke, a custom domain
# from registration to an alias, the administration commands on the same store, and the by-hand
# scrape that counts the README's message.
WALKED = ["README.md", "docs/api.md", "docs/custom-domains.md", "docs/administration.md",
          "docs/monitoring.md"]
DOCUMENTED_STATUS = re.compile(r"#\s+(\d{3})\b(.*)")
DOCUMENTED_EXIT = re.compile(r"#\s+exit (\d+)\b")
TEMPALIAS = str(Path(sys.executable).with_name("tempalias"))  # the Makefile's $(BIN)/tempalias
WALK_BUDGET = 30.0


def _examples(document: str) -> list[tuple[str, list[str]]]:
    """Each curl, swaks, cat or tempalias command (but ``serve``) of a document's ``sh`` blocks
    with the comment lines after it (where the docs show the answer: ``# 201 {...}``, ``# exit
    1``), continuation lines joined."""
    text = (REPO / document).read_text(encoding="utf-8")
    examples: list[tuple[str, list[str]]] = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("#"):
                if examples and examples[-1][1] is not None:
                    examples[-1][1].append(line)
                continue
            command = line.split(" #", 1)[0].strip()
            words = command.split()
            if words and (words[0] in ("curl", "swaks", "cat") or (
                    words[0].endswith("bin/tempalias") and "serve" not in words)):
                examples.append((command, []))
            elif command:
                examples.append((command, None))  # make, tempalias...: parsed above, not run
    return [(command, comments) for command, comments in examples if comments is not None]


def _documented(comments: list[str]) -> tuple[int | None, str]:
    """The first status a command's comments show, and the text shown with it (up to the next
    status, as for a verification's 200 / 409 / 503)."""
    status, shown = None, []
    for line in comments:
        match = DOCUMENTED_STATUS.match(line)
        if match and status is not None:
            break
        if match:
            status, rest = int(match.group(1)), match.group(2)
        else:
            rest = line.lstrip("#")
        if status is not None:
            shown.append(rest)
    return status, " ".join(shown)


# A record `tempalias domain add` prints for the operator to publish: "  NAME. TYPE VALUE"
PRINTED_RECORD = re.compile(r"^  (\S+)\. (MX|TXT) (.+)$", re.MULTILINE)


def _publish(dns_zone, name: str, rtype: str, value: str) -> None:
    """What a domain's owner does with the records the service shows: publish them."""
    dns_zone.publish(f'{name}. IN {rtype} ' + (f'"{value}"' if rtype == "TXT" else f"{value}."))


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_the_docs_examples_run_as_written(tmp_path, dns_zone):
    """Issue 16: every curl, swaks, cat and tempalias line of the README's first steps, the API,
    custom domains, administration and monitoring runs, in order, against `tempalias serve` with
    no settings (only free ports and the test's DNS server), with the example's id and tokens
    replaced by the ones the service answered: each answers the status the docs show (2xx where
    they show none), with every field the docs show, and the text the docs quote; a command
    exits as the docs say (0 where they say nothing); the message lands in the Maildir the
    README names and the scrape counts it."""
    import requests

    from harness.processes import ServiceProcess, environment_without_tempalias, wait_for

    service = ServiceProcess(tmp_path, {"TEMPALIAS_DNS_SERVERS": dns_zone.address},
                             command=(str(Path(sys.executable).with_name("tempalias")),),
                             test_settings=False).start()
    found = {"k3x9qa@tempalias.localhost": None, "k3x9qa": None, "DOMAIN_TOKEN": None,
             "TOKEN": None}
    tokens: dict[str, str] = {}  # every alias the walk made: id -> token
    ran = []
    try:
        for document in WALKED:
            for command, comments in _examples(document):
                line = (command.replace("http://127.0.0.1:8080", service.http_url)
                        .replace("127.0.0.1:2525", f"127.0.0.1:{service.smtp_port}")
                        .replace("127.0.0.1:9325", f"127.0.0.1:{service.ports['metrics']}"))
                for example, actual in found.items():
                    if actual is not None:
                        line = line.replace(example, actual)
                status, shown = _documented(comments)
                where = f"{document}: {command}"
                if line.startswith("curl"):
                    answer = subprocess.run(line.replace("curl", "curl -w '\\n%{http_code}'", 1),
                                            shell=True, capture_output=True, text=True,
                                            cwd=tmp_path, timeout=WALK_BUDGET)
                    body, _, code = answer.stdout.rpartition("\n")
                    if status is None:
                        assert code.startswith("2"), f"{where} answered {code}: {body}"
                    else:
                        assert code == str(status), f"{where} answered {code}: {body}"
                    try:
                        answered = json.loads(body) if body.strip() else None
                    except json.JSONDecodeError:
                        answered = None
                    if answered is not None:
                        missing = set(re.findall(r'"(\w+)":', shown)) - _keys(answered)
                        assert missing == set(), f"{where}: the docs show {missing}: {body}"
                        if "records" in answered and "token" in answered:  # a registration
                            found["DOMAIN_TOKEN"] = answered["token"]
                            for record in answered["records"]:  # its owner publishes them
                                _publish(dns_zone, record["name"], record["type"], record["value"])
                        elif "token" in answered:  # an alias
                            if "@tempalias.localhost" in answered["address"]:
                                found["k3x9qa@tempalias.localhost"] = answered["address"]
                                found["k3x9qa"] = answered["id"]
                            found["TOKEN"] = tokens[answered["id"]] = answered["token"]
                    else:
                        quoted = [part.strip() for part in shown.split("...") if part.strip()]
                        absent = [part for part in quoted if part not in body]
                        assert absent == [], f"{where}: the docs quote {absent}"
                elif line.startswith("cat"):
                    # The message went through SMTP a moment ago; the glob matches once it is in.
                    def shown_by_cat():
                        out = subprocess.run(line, shell=True, capture_output=True, text=True,
                                             cwd=tmp_path, timeout=WALK_BUDGET)
                        return out.stdout if out.returncode == 0 and out.stdout else None

                    out = wait_for(shown_by_cat, WALK_BUDGET, f"{where} to show the message")
                    assert "Delivered-To: me@example.org" in out  # the README says so
                elif line.startswith("swaks"):
                    sent = subprocess.run(line + " --timeout 20", shell=True, capture_output=True,
                                          text=True, cwd=tmp_path, timeout=WALK_BUDGET)
                    assert sent.returncode == 0, f"{where}: {sent.stdout}{sent.stderr}"
                else:  # tempalias, on the service's store (the embedded Redis under ./var)
                    words = shlex.split(line)
                    done = subprocess.run([TEMPALIAS, *words[1:]], capture_output=True, text=True,
                                          cwd=tmp_path, timeout=WALK_BUDGET,
                                          env=environment_without_tempalias(
                                              TEMPALIAS_DNS_SERVERS=dns_zone.address))
                    exits = [int(match.group(1)) for match in map(DOCUMENTED_EXIT.match, comments)
                             if match]
                    assert done.returncode == (exits[0] if exits else 0), \
                        f"{where} exited {done.returncode}: {done.stdout}{done.stderr}"
                    made = re.search(r"\b([a-z0-9]+)@tempalias\.localhost\b", done.stdout)
                    if words[1] == "create" and made:
                        found["k3x9qa"] = made.group(1)
                    for name, rtype, value in PRINTED_RECORD.findall(done.stdout):  # domain add
                        _publish(dns_zone, name, rtype, value)
                ran.append(where)
        # The walk reached every kind of example; docs/api.md's DELETE revoked the alias it made
        # and nothing else (the README's and the custom domain's are still there), and the
        # administration's revoke the one its create made.
        assert len(ran) >= 20 and {where.split(": ")[0] for where in ran} == set(WALKED), ran
        answers = [requests.get(f"{service.http_url}/api/v1/aliases/{alias_id}",
                                headers={"Authorization": f"Bearer {token}"},
                                timeout=10).status_code for alias_id, token in tokens.items()]
        assert answers == [200, 404, 200], tokens  # the README's, the API's, the custom domain's
        shown = subprocess.run([TEMPALIAS, "show", found["k3x9qa"]], capture_output=True,
                               cwd=tmp_path, timeout=WALK_BUDGET, env=environment_without_tempalias())
        assert shown.returncode != 0 and found["k3x9qa"] not in tokens
    finally:
        assert service.stop() == 0
