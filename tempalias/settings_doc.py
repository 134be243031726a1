"""The one table of every setting (docs/configuration.md), written from ``config.SETTINGS`` so
that it cannot drift.

``python -m tempalias.settings_doc`` prints it; ``--write docs/configuration.md`` replaces the
block between the ``settings:start`` and ``settings:end`` markers.
"""

from __future__ import annotations

import dataclasses
import sys

from tempalias.config import SETTINGS, Config, env_name

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"


def _show(value) -> str:
    if value is None or value == ():
        return "(unset)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def settings_table() -> str:
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    rows = ["| variable (INI key) | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = _show(defaults[setting.name]).replace("|", "\\|")
        rows.append(f"| `{env_name(setting)}` (`{setting.name}`) | `{default}` | {setting.doc} |")
    return "\n".join(rows)


def replace_block(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        path = sys.argv[2]
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(replace_block(text))
    else:
        print(settings_table())
