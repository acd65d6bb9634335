"""Command line of ``python -m expect_ct``, one module per subcommand, each a thin layer over
the engine (expect_ct.engine) and the decisions (expect_ct.decisions) the addon uses:

* no command: print the path of the mitmproxy script (script.py);
* ``mitmdump`` / ``mitmweb`` / ``mitmproxy``: run the tool with the addon built in (launch.py);
* ``hosts`` / ``forget``: the Known Expect-CT Hosts store (hosts.py, forget.py);
* ``check``: offline CT analysis of saved flows (check.py);
* ``inspect``: CT analysis of certificate files, without a connection (inspect.py);
* ``update-log-list``: fetch, validate and atomically install a CT log list (update_log_list.py).

Exit codes of ``check`` and ``inspect``: 0 when everything evaluated is compliant or exempt,
1 when a publicly trusted chain is not CT-compliant, 2 on unusable input.
``update-log-list``: 0 installed or unchanged, 1 could not fetch or refused the list (the old
file is kept), 2 usage errors. ``forget``: 0 removed, 1 the host was not known. Only ``check`` and the launched tools import mitmproxy, and only when they run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from expect_ct import store as storemod
from expect_ct.cli import check
from expect_ct.cli import common
from expect_ct.cli import forget
from expect_ct.cli import hosts
from expect_ct.cli import inspect
from expect_ct.cli import launch
from expect_ct.cli import script
from expect_ct.cli import update_log_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expect_ct",
        description="Certificate Transparency and Expect-CT for mitmproxy. "
        "With no command, print the path of the mitmproxy script, for "
        'mitmdump -s "$(python -m expect_ct)".',
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    launch.add_parsers(commands)
    for module in (hosts, forget, check, inspect, update_log_list):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in launch.LAUNCHED_TOOLS:
        return launch.run(arguments[0], arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command is None:
        return script.run()
    try:
        result: int = args.run(args)
        return result
    except common.FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (common.UsageError, storemod.StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return common.EXIT_USAGE
    except BrokenPipeError:
        # `python -m expect_ct check ... | head`: stop quietly.
        sys.stderr.close()
        return common.EXIT_OK
