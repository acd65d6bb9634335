"""``python -m expect_ct mitmdump|mitmweb|mitmproxy ...``: mitmproxy's tools with ExpectCT built in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def run_tool(tool: str, arguments: Sequence[str]) -> None:
    """Run mitmdump, mitmweb or mitmproxy with ExpectCT built in: ``python -m expect_ct mitmdump``.

    The addon then sits in mitmproxy's addon chain like mitmproxy's own addons. Loaded with
    ``-s``, every event of every flow also passes through the script loader, the script and
    its module before reaching it, which costs mitmproxy a few per cent per request even for
    an empty script (benchmarks/bench.py measures both ways). Arguments are mitmproxy's own.
    """
    from mitmproxy import hooks
    from mitmproxy.tools import cmdline
    from mitmproxy.tools import main as mitmproxy_main

    from expect_ct.addon import ExpectCT

    base: type[Any]
    extra: Any = None
    if tool == "mitmdump":
        from mitmproxy.tools.dump import DumpMaster

        base, make_parser = DumpMaster, cmdline.mitmdump

        def extra(args: Any) -> dict[str, Any]:
            # As mitmproxy.tools.main.mitmdump does: a filter expression limits all output.
            if args.filter_args:
                expression = " ".join(args.filter_args)
                return {
                    "save_stream_filter": expression,
                    "readfile_filter": expression,
                    "dumper_filter": expression,
                }
            return {}

    elif tool == "mitmweb":
        from mitmproxy.tools.web.master import WebMaster

        base, make_parser = WebMaster, cmdline.mitmweb
    elif tool == "mitmproxy":
        from mitmproxy.tools.console.master import ConsoleMaster

        base, make_parser = ConsoleMaster, cmdline.mitmproxy
    else:
        raise ValueError(f"tool must be mitmdump, mitmweb or mitmproxy, not {tool!r}")

    class WithExpectCT(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Registered now, so that its options exist for --set, config.yaml and --options;
            # put in the addon chain only in run(), once all of them are applied, so that its
            # first configure sees every option (as a -s script's does), not only the first
            # keys the command line happens to change.
            self.expect_ct = self.addons.register(ExpectCT())

        async def run(self) -> None:
            # Placed where -s scripts run (right after the script loader, before save,
            # tlsconfig and the rest): hooks see flows in the same order either way.
            manager = self.addons
            loader = manager.get("scriptloader")
            index = manager.chain.index(loader) + 1 if loader in manager.chain else 0
            manager.chain.insert(index, self.expect_ct)
            # An option error is logged as one line; mitmproxy's errorcheck (in run) then
            # exits non-zero before the proxy serves anything.
            manager.invoke_addon_sync(self.expect_ct, hooks.ConfigureHook(set(self.options.keys())))
            await super().run()

    mitmproxy_main.run(WithExpectCT, make_parser, list(arguments), extra)
