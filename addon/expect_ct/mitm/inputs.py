"""The engine's inputs from the addon's options: the log list and the chain classifier,
loaded by the same engine functions as the command line's flags, errors as OptionsError."""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import exceptions

from expect_ct import chain as chainmod
from expect_ct import engine as enginemod

logger = logging.getLogger("expect_ct")


def load_log_list(opts: Any) -> enginemod.LoadedLogList:
    """expect_ct_log_list (or the installed or bundled list), its age checked against
    expect_ct_log_list_max_age."""
    try:
        loaded = enginemod.load_log_list(opts.expect_ct_log_list, opts.confdir)
    except enginemod.LoadError as e:
        raise exceptions.OptionsError(f"Cannot load expect_ct_log_list {e}") from e
    max_age = opts.expect_ct_log_list_max_age
    if loaded.stale(max_age):
        timestamp = loaded.timestamp
        logger.warning(
            f"Expect-CT: the CT log list ({loaded.log_list.source}) is from "
            f"{timestamp.date() if timestamp else 'an unknown date'}, older than "
            f"expect_ct_log_list_max_age={max_age} days: blocking is SUSPENDED (fail open, as "
            f"Chrome does). Run `python -m expect_ct update-log-list` or set "
            f"expect_ct_log_list_max_age=0."
        )
    else:
        logger.info(
            f"Expect-CT: {len(loaded.log_list)} CT logs from {loaded.log_list.source}"
            + (f", dated {loaded.timestamp.date()}" if loaded.timestamp else "")
        )
    return loaded


def load_classifier(opts: Any) -> chainmod.ChainClassifier:
    """Public roots from expect_ct_public_roots (or certifi); private ones from mitmproxy's
    upstream trust options."""
    try:
        public = enginemod.load_public_roots(opts.expect_ct_public_roots)
    except enginemod.LoadError as e:
        raise exceptions.OptionsError(f"Cannot load expect_ct_public_roots {e}") from e
    try:
        private = enginemod.load_private_roots(
            opts.ssl_verify_upstream_trusted_ca, opts.ssl_verify_upstream_trusted_confdir
        )
    except enginemod.LoadError as e:
        # mitmproxy's own TlsConfig reports bad upstream trust settings; we only lose the
        # private/untrusted distinction.
        logger.warning(f"Expect-CT: cannot read the upstream trust roots: {e}")
        private = []
    return chainmod.ChainClassifier(public, private)
