"""The addon's own CPU cost per keep-alive request, in-process, through mitmproxy's dispatch.

    python benchmarks/hooks.py [--flows 1000] [--runs 5] [OTHER_ADDON_DIR ...]

A diagnostic beside bench.py (whose proxy rows are what README's targets are about): it
isolates the per-request part of the keep-alive cost. Each measurement is a fresh process
with a taddons master, the test world's compliant site on one already evaluated upstream
connection, and flows sent through ``AddonManager.handle_lifecycle`` for requestheaders,
request, responseheaders and response (each followed by mitmproxy's update event), the
response carrying ``Expect-CT: max-age=86400, enforce`` as benchmarks/servers.py's origin
does. It prints the CPU time per request with the addon built in, as a ``-s`` script (one
module level above it, as mitmproxy's script loader adds it), and without the addon, the
minimum over 15 repetitions of ``--flows`` flows.

``OTHER_ADDON_DIR``: the ``addon`` directory of another checkout (e.g. a ``git worktree`` of
an older commit), measured the same way with this checkout's test world; the processes of all
checkouts alternate ``--runs`` times so they see the same machine load, and the table shows
each figure's median over runs. Only differences measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from typing import cast

from cryptography import x509

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODES = ("builtin", "script", "none")
REPETITIONS = 15


def measure(addon_dir: str, mode: str, flows: int) -> float:
    """CPU µs per request, in this process, for one addon checkout and launch mode."""
    sys.path[:0] = [addon_dir, str(REPO / "tests")]
    from mitmproxy import certs
    from mitmproxy.proxy.layers import http as httplayer
    from mitmproxy.test import taddons
    from mitmproxy.test import tflow

    import expect_ct
    from expect_ct.addon import ExpectCT
    from support.world import make_world

    assert expect_ct.__file__ is not None and expect_ct.__file__.startswith(addon_dir)
    tmp = Path(tempfile.mkdtemp(prefix="expect-ct-hooks-"))
    world = make_world(tmp)

    class Script:
        """What mitmproxy's script loader puts in the chain: the module, holding ``addons``."""

        def __init__(self, addon: object) -> None:
            self.addons = [addon]

    async def run() -> float:
        addon = ExpectCT()
        with taddons.context() as tctx:
            if mode == "script":
                tctx.master.addons.add(Script(addon))
            elif mode == "builtin":
                tctx.master.addons.add(addon)
            tctx.configure(
                addon,
                confdir=str(tmp / "confdir"),
                ssl_verify_upstream_trusted_ca=str(world.upstream_trust_pem),
                expect_ct_public_roots=str(world.public_roots_pem),
                expect_ct_log_list=str(world.log_list),
                expect_ct_store=str(tmp / "known.sqlite3"),
            )
            server = tflow.tflow().server_conn
            server.certificate_list = [
                certs.Cert(cast(x509.Certificate, world.compliant.cert)),
                certs.Cert(world.public_inter.cert),
            ]
            server.sni = "compliant.test"
            server.address = ("127.0.0.1", 443)
            server.tls_version = "TLSv1.3"
            manager = tctx.master.addons

            def make() -> tuple[Any, Any]:
                flow = tflow.tflow(resp=True)
                flow.server_conn = server
                flow.request.scheme = "https"
                flow.request.host = "compliant.test"
                flow.request.port = 443
                flow.live = True
                response = flow.response
                assert response is not None
                response.headers["Expect-CT"] = "max-age=86400, enforce"
                flow.response = None
                return flow, response

            async def one(flow: Any, response: Any) -> None:
                await manager.handle_lifecycle(httplayer.HttpRequestHeadersHook(flow))
                await manager.handle_lifecycle(httplayer.HttpRequestHook(flow))
                flow.response = response
                await manager.handle_lifecycle(httplayer.HttpResponseHeadersHook(flow))
                await manager.handle_lifecycle(httplayer.HttpResponseHook(flow))

            for pair in [make() for _ in range(50)]:
                await one(*pair)
            results = []
            for _ in range(REPETITIONS):
                batch = [make() for _ in range(flows)]
                start = time.process_time()
                for pair in batch:
                    await one(*pair)
                results.append((time.process_time() - start) / flows * 1e6)
            if mode != "none":
                meta = batch[-1][0].metadata["expect_ct"]
                assert meta["host"] == "compliant.test" and meta["header"]["action"], meta
            addon.done()
            return min(results)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("ADDON_DIR", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("others", nargs="*", metavar="OTHER_ADDON_DIR")
    args = parser.parse_args()
    if args.child:
        print(f"{measure(args.child[0], args.child[1], args.flows):.3f}")
        return
    checkouts = [str(REPO / "addon"), *(str(Path(d).resolve()) for d in args.others)]
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for checkout in checkouts:
            for mode in MODES:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--flows",
                        str(args.flows),
                        "--child",
                        checkout,
                        mode,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                figures.setdefault((checkout, mode), []).append(float(out.split()[-1]))
    print("| checkout | built in | -s script | without | addon's cost built in / -s (µs) |")
    print("|---|---|---|---|---|")
    for checkout in checkouts:
        builtin, script, none = (statistics.median(figures[checkout, m]) for m in MODES)
        print(
            f"| {checkout} | {builtin:.1f} | {script:.1f} | {none:.1f} | "
            f"{builtin - none:.1f} / {script - none:.1f} |"
        )
    print(
        f"CPU µs per request; median over {args.runs} runs of the min of {REPETITIONS} x {args.flows} flows"
    )


if __name__ == "__main__":
    main()
