"""Certificate Transparency checking and Expect-CT (RFC 9163) enforcement for mitmproxy.

The core modules (header, sct, loglist, policy, chain, store, report) never import
mitmproxy; only ``tls`` and ``addon`` do.
"""

__version__ = "0.1.0"
