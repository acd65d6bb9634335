"""``python -m expect_ct mitmdump|mitmweb|mitmproxy ARGS``: mitmproxy's tool with the addon built in.

Kept apart from expect_ct.mitm.launch (which imports mitmproxy) so that the other
subcommands never import mitmproxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LAUNCHED_TOOLS = ("mitmdump", "mitmweb", "mitmproxy")


def add_parsers(commands: Any) -> None:
    for tool in LAUNCHED_TOOLS:
        commands.add_parser(
            tool,
            help=f"run {tool} with the addon built in (no -s needed; cheaper per request); "
            f"the arguments are {tool}'s own",
            add_help=False,
        )


def run(tool: str, arguments: Sequence[str]) -> int:
    # Everything after the tool's name is mitmproxy's command line, untouched.
    from expect_ct.mitm import launch  # imports mitmproxy: only on this path

    launch.run_tool(tool, arguments)
    return 0
