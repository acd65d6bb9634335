"""Test-only mitmproxy script: resolve chosen host names to 127.0.0.1 addresses.

`--set test_resolve=name=127.0.0.1:port` (repeatable) makes mitmproxy connect to that
address for `name`, keeping `name` as the SNI and Host, so end-to-end tests can use many
distinct host names without touching /etc/hosts or DNS.
"""

from collections.abc import Sequence

from mitmproxy import ctx


class Resolve:
    def load(self, loader):
        loader.add_option("test_resolve", Sequence[str], [], "name=ip:port mappings for tests")

    def server_connect(self, data):
        mapping = {}
        for item in ctx.options.test_resolve:
            name, _, target = item.partition("=")
            ip, _, port = target.rpartition(":")
            mapping[name.lower()] = (ip, int(port))
        host = data.server.address[0] if data.server.address else None
        if isinstance(host, str) and host.lower() in mapping:
            if data.server.sni is None:
                data.server.sni = host
            data.server.address = mapping[host.lower()]


addons = [Resolve()]
