"""README's option table and the options' help agree with the options the addon declares.

The table ("## Options") must list every ``expect_ct_*`` option, no other, with the declared
default where there is one; an option with choices names each choice in its README row and
in its help text (what ``--options`` and the ``O`` editor show).
"""

from __future__ import annotations

import re

from mitmproxy import optmanager

from expect_ct.mitm import options as optionsmod
from support import REPO

ROW = re.compile(r"^\| `(expect_ct_\w+)` \| ([^|]+) \| (.+) \|$", re.MULTILINE)


def declared() -> optmanager.OptManager:
    opts = optmanager.OptManager()
    optionsmod.add_options(opts)
    return opts


def readme_rows() -> dict[str, tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): (m.group(2).strip(), m.group(3)) for m in ROW.finditer(section)}


def shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_readme_lists_exactly_the_declared_options() -> None:
    assert sorted(readme_rows()) == sorted(declared().keys())


def test_readme_shows_each_declared_default() -> None:
    opts = declared()
    rows = readme_rows()
    for name in opts.keys():
        default = opts.default(name)
        if default is not None:  # None defaults are described in words ("unset", "certifi")
            assert rows[name][0] == f"`{shown(default)}`", name


def test_readme_and_help_name_every_choice() -> None:
    opts = declared()
    rows = readme_rows()
    for name in opts.keys():
        choices = opts._options[name].choices
        for choice in choices or ():
            assert f"`{choice}`" in rows[name][1], (name, choice)
            assert re.search(
                rf"(?<![\w-]){re.escape(choice)}(?![\w-])", opts._options[name].help
            ), (
                name,
                choice,
            )
