"""``python -m expect_ct forget HOST``: remove a host from the Known Expect-CT Hosts."""

from __future__ import annotations

import argparse
from typing import Any

from expect_ct import store as storemod
from expect_ct.cli.hosts import STORE_HELP
from expect_ct.cli.hosts import open_store


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("forget", help="remove a host from the Known Expect-CT Hosts")
    parser.add_argument("host")
    parser.add_argument("--store", help=STORE_HELP)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        removed = store.forget(args.host)
    except storemod.StoreUnavailable as e:
        # The store queued it, but this process ends now: nothing was changed.
        raise storemod.StoreError(f"{e}; {args.host} was not forgotten, try again") from None
    finally:
        store.close()
    print(f"{args.host}: {'forgotten' if removed else 'was not a Known Expect-CT Host'}")
    return 0 if removed else 1
