"""The proxy's own listening addresses, for the report loop guard (issue 17, attack 8).

A report-uri comes from any server's response header; it must never make the proxy POST to
itself, whatever the spelling: ``[::ffff:127.0.0.1]`` (IPv4-mapped), ``0.0.0.0`` or ``::``
(which reach local listeners on Linux), ``localhost``, or any address of this host when the
proxy listens on an unspecified address. Pure: standard library only, no mitmproxy import.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("expect_ct.report")  # the sender's log: these are its messages

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


def canonical_address(address: str | IPAddress) -> IPAddress:
    """One spelling per address: brackets and IPv6 zone dropped, IPv4-mapped IPv6
    (``::ffff:127.0.0.1``, which a dual-stack socket delivers to the IPv4 listener) as the
    IPv4 address. Raises ValueError for a non-address."""
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def is_local_address(address: IPAddress) -> bool:
    """True if a connection to ``address`` stays on this host: unspecified (``0.0.0.0`` and
    ``::`` reach local listeners on Linux), loopback, or an address of one of this host's
    interfaces (a socket can be bound to it). Errs towards True: a host that lets programs
    bind non-local addresses (ip_nonlocal_bind) makes every address look local."""
    ip = canonical_address(address)
    if ip.is_unspecified or ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


class ProxyListeners:
    """Where the proxy listens, for the report loop guard: does an address reach the proxy?

    ``listeners`` are (host, port) pairs as configured or as bound: an IP address in any
    spelling, a name (``localhost``; resolved once here, every address kept), or an
    unspecified address (``""``, ``0.0.0.0``, ``::``), which listens on every local address.
    """

    def __init__(
        self, listeners: Collection[tuple[str, int]], resolver: Resolver = socket.getaddrinfo
    ) -> None:
        self.exact: set[tuple[IPAddress, int]] = set()
        self.every_local_address: set[int] = set()  # ports bound to an unspecified address
        self.ports: set[int] = set()
        for host, port in listeners:
            self._add(host, int(port), resolver)

    def _add(self, host: str, port: int, resolver: Resolver) -> None:
        self.ports.add(port)
        if host.strip() in ("", "*"):
            self.every_local_address.add(port)
            return
        try:
            addresses = [canonical_address(host)]
        except ValueError:
            try:
                infos = resolver(host, port, 0, socket.SOCK_STREAM)
                addresses = [canonical_address(str(info[4][0])) for info in infos]
            except (OSError, UnicodeError, ValueError) as e:
                # Unknown where a name listens: the port is refused on every local address.
                logger.warning(f"Expect-CT reports: cannot resolve the proxy address {host}: {e}")
                self.every_local_address.add(port)
                return
        for ip in addresses:
            if ip.is_unspecified:
                self.every_local_address.add(port)
            else:
                self.exact.add((ip, port))

    def reaches_proxy(self, address: str | IPAddress, port: int) -> bool:
        """True if connecting to ``address``:``port`` may reach one of the listeners."""
        if port not in self.ports:
            return False
        ip = canonical_address(address)
        if ip.is_unspecified:
            return True  # "this host": whichever local listener has the port
        if (ip, port) in self.exact:
            return True
        return port in self.every_local_address and is_local_address(ip)
