"""The engine's inputs from the addon's options: the log list and the chain classifier,
loaded by the same engine functions as the command line's flags, errors as OptionsError."""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import exceptions

from expect_ct import chain as chainmod
from expect_ct import engine as enginemod
from expect_ct.mitm.loglists import LogLists

logger = logging.getLogger("expect_ct")


def load_log_list(opts: Any, log_lists: LogLists) -> enginemod.LoadedLogList:
    """expect_ct_log_list, else the installed list when it is fresher than the bundled
    snapshot (loglist_update.choose_start_list); its age is logged against the limit."""
    return log_lists.load(opts)


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
