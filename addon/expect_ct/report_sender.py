"""Delivery of Expect-CT violation reports (RFC 9163 section 3) to report-uris.

Pure of mitmproxy. Delivery runs on one daemon worker thread so that the proxy's event loop
never waits for a collector; everything the worker does is bounded in time and size and
ends in exactly one ``ReportOutcome``.

The RFC does not discuss a proxy POSTing to attacker-chosen URIs (rfc9163.md G.66, "report-uri
SSRF"). A report-uri comes from any server's response header, so the sender only talks https,
checks every resolved address before connecting (no private, loopback, link-local ... targets
unless explicitly allowed), connects to the checked address itself (no second DNS lookup, so no
DNS rebinding), never goes through a proxy, sends no cookies or credentials, follows no
redirects, and requires the collector to opt in through a CORS preflight as Chromium did.

The public names are also importable from ``expect_ct.report``.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Sequence
from dataclasses import dataclass

import certifi
import h11

from expect_ct.listeners import ProxyListeners
from expect_ct.listeners import Resolver
from expect_ct.store import canonical_host

# The sender's messages keep the logger name they always had (users filter on it).
logger = logging.getLogger("expect_ct.report")

REPORT_CONTENT_TYPE = "application/expect-ct-report+json"
ALLOW_PRIVATE_HINT = "set expect_ct_report_allow_private to allow"
# A collector's answer is only looked at for its status and CORS headers.
MAX_RESPONSE_HEADER_BYTES = 16 * 1024
MAX_RESPONSE_BODY_BYTES = 64 * 1024
USER_AGENT = "mitmproxy-expect-ct"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -------------------------------------------------------------------- address classification

# IANA IPv4/IPv6 Special-Purpose Address Registries (RFC 6890 and updates). Written out rather
# than taken from ipaddress.is_global/is_private, whose tables differ between Python releases.
_V4_SPECIAL: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), kind)
    for net, kind in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "this-network"),  # RFC 791
        ("10.0.0.0/8", "private"),  # RFC 1918
        ("100.64.0.0/10", "shared (CGNAT)"),  # RFC 6598
        ("127.0.0.0/8", "loopback"),  # RFC 1122
        ("169.254.0.0/16", "link-local"),  # RFC 3927
        ("172.16.0.0/12", "private"),  # RFC 1918
        ("192.0.0.0/24", "reserved"),  # RFC 6890 IETF protocol assignments
        ("192.0.2.0/24", "documentation"),  # RFC 5737
        ("192.88.99.0/24", "reserved"),  # RFC 7526 deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),  # RFC 1918
        ("198.18.0.0/15", "benchmarking"),  # RFC 2544
        ("198.51.100.0/24", "documentation"),  # RFC 5737
        ("203.0.113.0/24", "documentation"),  # RFC 5737
        ("224.0.0.0/4", "multicast"),  # RFC 5771
        ("255.255.255.255/32", "broadcast"),  # RFC 919
        ("240.0.0.0/4", "reserved"),  # RFC 1112
    )
)
_V6_SPECIAL: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/128", "unspecified"),  # RFC 4291
        ("::1/128", "loopback"),  # RFC 4291
        ("64:ff9b:1::/48", "private"),  # RFC 8215 local-use IPv4/IPv6 translation
        ("100::/64", "reserved"),  # RFC 6666 discard-only
        ("2001::/23", "reserved"),  # RFC 2928 IETF protocol assignments (Teredo, ORCHID, ...)
        ("2001:db8::/32", "documentation"),  # RFC 3849
        ("3fff::/20", "documentation"),  # RFC 9637
        ("5f00::/16", "reserved"),  # RFC 9602 SRv6 SIDs
        ("fc00::/7", "private"),  # RFC 4193 unique local
        ("fe80::/10", "link-local"),  # RFC 4291
        ("fec0::/10", "private"),  # RFC 3879 deprecated site-local
        ("ff00::/8", "multicast"),  # RFC 4291
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # RFC 4291 IPv4-mapped
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known NAT64 prefix
_V6_6TO4 = ipaddress.IPv6Network("2002::/16")  # RFC 3056


def _v4_kind(address: ipaddress.IPv4Address) -> str | None:
    for network, kind in _V4_SPECIAL:
        if address in network:
            return kind
    return None


def address_kind(address: str | IPAddress) -> str | None:
    """Why a report must not be sent to ``address``, or None for a public unicast address.

    Returns "loopback", "private", "link-local", "unspecified", "multicast", "reserved",
    "shared (CGNAT)", "documentation", ... IPv6 forms that embed an IPv4 address (IPv4-mapped,
    NAT64, 6to4) are judged by the embedded address: "IPv4-mapped loopback" and so on. IPv6
    outside 2000::/3 (global unicast) is "reserved". Raises ValueError for a non-address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_kind(ip)
    embedded: tuple[str, ipaddress.IPv4Address] | None = None
    if ip in _V6_MAPPED:
        embedded = ("IPv4-mapped", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    elif ip in _V6_NAT64:
        embedded = ("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    elif ip in _V6_6TO4:
        embedded = ("6to4", ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))
    if embedded is not None:
        form, v4 = embedded
        kind = _v4_kind(v4)
        return None if kind is None else f"{form} {kind}"
    for network, kind in _V6_SPECIAL:
        if ip in network:
            return kind
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None


def _with_article(kind: str) -> str:
    return ("an " if kind[0].lower() in "aeiou" else "a ") + kind


# ------------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class ReportOutcome:
    """What became of one submitted report.

    ``delivery`` is "sent" (the POST got a 2xx) or "failed"; ``detail`` says why, e.g.
    "HTTP 204", "refused: not https", "preflight: Access-Control-Allow-Origin missing",
    "timeout after 10.0s", "queue full", "shut down". ``status`` is the HTTP status of the
    last response received (preflight or POST), None if there was none.
    """

    report_uri: str
    delivery: str
    detail: str
    status: int | None
    context: object


class _Refused(Exception):
    """Delivery ends here; the message is the outcome's detail."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class _Target:
    host: str  # as in the URI, lower case, without IPv6 brackets
    port: int
    host_header: str
    request_target: str


def _parse_report_uri(uri: str) -> _Target:
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port or 443
    except ValueError as e:
        raise _Refused(f"refused: invalid report-uri: {e}") from e
    if parts.scheme.lower() != "https":
        # RFC 9163 section 2.1.1: UAs MUST ignore report-uris that do not use HTTPS.
        raise _Refused("refused: not https")
    host = parts.hostname
    if not host:
        raise _Refused("refused: invalid report-uri: no host")
    try:
        # The same IDNA 2008 / UTS #46 conversion as every other host name (store keys), and
        # IP literals in one canonical form.
        ascii_host = canonical_host(host)
    except ValueError as e:
        raise _Refused(f"refused: invalid host name {host!r}: {e}") from e
    authority = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    host_header = authority if port == 443 else f"{authority}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    # userinfo and fragment are deliberately dropped: no credentials go to a collector.
    return _Target(host=ascii_host, port=port, host_header=host_header, request_target=target)


def _header_tokens(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str] | None:
    """Comma-separated values of every ``name`` field, trimmed and lower-cased; None if absent."""
    values = [value for key, value in headers if key.lower() == name]
    if not values:
        return None
    tokens = []
    for value in values:
        tokens += [t.strip().lower() for t in value.decode("latin-1").split(",")]
    return [t for t in tokens if t]


def check_preflight(status: int, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """Why a CORS preflight answer does not allow the report, or None if it does.

    Chromium's final behaviour (chromium-expect-ct.md section 7): a 2xx status,
    Access-Control-Allow-Origin listing ``*`` or ``null``, and Access-Control-Allow-Headers
    listing ``content-type`` or ``*``; compared case-insensitively after splitting on commas.
    Access-Control-Allow-Methods is not required (Chromium relaxed that check).
    """
    if not 200 <= status < 300:
        return f"preflight: HTTP {status}"
    origins = _header_tokens(headers, b"access-control-allow-origin")
    if origins is None:
        return "preflight: Access-Control-Allow-Origin missing"
    if not {"*", "null"} & set(origins):
        return f"preflight: Access-Control-Allow-Origin {', '.join(origins)!r} allows neither * nor null"
    allowed = _header_tokens(headers, b"access-control-allow-headers")
    if allowed is None:
        return "preflight: Access-Control-Allow-Headers missing"
    if not {"*", "content-type"} & set(allowed):
        return f"preflight: Access-Control-Allow-Headers {', '.join(allowed)!r} does not allow content-type"
    return None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


class ReportSender:
    """Delivers serialized reports to report-uris from one daemon worker thread.

    ``submit`` never blocks: the queue is bounded and a full queue drops the report. Every
    submitted report ends in exactly one ``ReportOutcome`` passed to ``on_result`` (on the
    worker thread, or on the caller's thread for "queue full" and "shut down"). ``timeout``
    bounds the whole delivery of one report (resolution excluded: getaddrinfo cannot be
    interrupted), every connect, send and receive using what is left of it.

    TLS verification uses certifi's roots, or only ``cafile`` when it is given (the same
    meaning as mitmproxy's ssl_verify_upstream_trusted_ca). ``forbidden`` lists the proxy's
    own listening addresses (``ProxyListeners``): never sent to, even with ``allow_private``.
    Every resolved address of a report-uri is compared in canonical form: IPv4-mapped IPv6 as
    IPv4, ``0.0.0.0`` / ``::`` as this host, and a listener on an unspecified address ("",
    "0.0.0.0", "::") as listening on every local address (loopback and each interface's).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = 10.0,
        queue_size: int = 100,
        cafile: str | None = None,
        forbidden: Collection[tuple[str, int]] = (),
        on_result: Callable[[ReportOutcome], None] | None = None,
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.allow_private = allow_private
        self.timeout = timeout
        self.on_result = on_result
        self.resolver = resolver
        self.dropped = 0
        self._listeners = ProxyListeners(forbidden, resolver)
        self._ssl_context = ssl.create_default_context(cafile=cafile or certifi.where())
        self._ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._queue: queue.Queue[tuple[str, bytes, object] | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="expect-ct-reports", daemon=True)
        self._worker.start()

    # -- public API

    def submit(self, report_uri: str, body: bytes, *, context: object = None) -> bool:
        """Queue a report; False (and ``dropped`` counted) if the queue is full or closed."""
        with self._lock:
            if self._closed:
                detail = "shut down"
            else:
                try:
                    self._queue.put_nowait((report_uri, body, context))
                    return True
                except queue.Full:
                    detail = "queue full"
            self.dropped += 1
        logger.info(f"Expect-CT report to {report_uri}: failed ({detail})")
        self._finish(ReportOutcome(report_uri, "failed", detail, None, context))
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker. Reports still queued end as failed "shut down".

        Waits up to ``timeout`` seconds for a delivery in progress; the worker is a daemon
        thread, so one that is still stuck does not keep the interpreter alive.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    pending.append(item)
            self._queue.put_nowait(None)  # wakes the worker; the queue was just emptied
        for report_uri, _, context in pending:
            self._finish(ReportOutcome(report_uri, "failed", "shut down", None, context))
        self._worker.join(timeout)

    # -- worker

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            report_uri, body, context = item
            self._finish(self.deliver(report_uri, body, context=context))

    def _finish(self, outcome: ReportOutcome) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(outcome)
        except Exception:  # noqa: BLE001
            logger.exception("Expect-CT report result callback failed")

    def deliver(self, report_uri: str, body: bytes, *, context: object = None) -> ReportOutcome:
        """Deliver one report synchronously (what the worker does). Never raises."""
        status: int | None = None
        try:
            target = _parse_report_uri(report_uri)
            addresses = self._checked_addresses(target)
            deadline = _Deadline(self.timeout)
            status, headers = self._exchange(
                addresses, target, deadline, "OPTIONS", self._preflight_headers(target), b""
            )
            problem = check_preflight(status, headers)
            if problem is not None:
                raise _Refused(problem, status)
            status, _ = self._exchange(
                addresses, target, deadline, "POST", self._post_headers(target, body), body
            )
            if not 200 <= status < 300:
                raise _Refused(f"HTTP {status}", status)
            outcome = ReportOutcome(report_uri, "sent", f"HTTP {status}", status, context)
        except _Refused as e:
            outcome = ReportOutcome(report_uri, "failed", e.detail, e.status or status, context)
        except TimeoutError:  # socket.timeout is an alias since Python 3.10
            detail = f"timeout after {self.timeout}s"
            outcome = ReportOutcome(report_uri, "failed", detail, status, context)
        except ssl.SSLCertVerificationError as e:
            detail = f"TLS certificate verification failed: {e.verify_message}"
            outcome = ReportOutcome(report_uri, "failed", detail, status, context)
        except ssl.SSLError as e:
            outcome = ReportOutcome(report_uri, "failed", f"TLS error: {e}", status, context)
        except ConnectionResetError:
            outcome = ReportOutcome(report_uri, "failed", "connection reset", status, context)
        except ConnectionRefusedError:
            outcome = ReportOutcome(report_uri, "failed", "connection refused", status, context)
        except h11.ProtocolError as e:
            outcome = ReportOutcome(
                report_uri, "failed", f"HTTP protocol error: {e}", status, context
            )
        except OSError as e:
            outcome = ReportOutcome(report_uri, "failed", f"network error: {e}", status, context)
        except Exception as e:  # noqa: BLE001 - whatever a hostile collector provokes
            logger.exception(f"Expect-CT report to {report_uri}: unexpected error")
            outcome = ReportOutcome(report_uri, "failed", f"internal error: {e}", status, context)
        logger.info(f"Expect-CT report to {report_uri}: {outcome.delivery} ({outcome.detail})")
        return outcome

    def _checked_addresses(self, target: _Target) -> list[tuple[str, IPAddress]]:
        """Resolve once and vet every address before any connection is made."""
        try:
            infos = self.resolver(target.host, target.port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise _Refused(f"cannot resolve {target.host}: {e}") from e
        checked: list[tuple[str, IPAddress]] = []
        for info in infos:
            numeric = str(info[4][0])
            try:
                ip = ipaddress.ip_address(numeric.split("%")[0])
            except ValueError as e:
                raise _Refused(f"refused: resolver returned a non-address {numeric!r}") from e
            if self._listeners.reaches_proxy(ip, target.port):
                raise _Refused(f"refused: {numeric} port {target.port} is the proxy itself")
            kind = address_kind(ip)
            if kind is not None and not self.allow_private:
                # Any bad address refuses the whole report: a name that resolves to one public
                # and one internal address is exactly what a rebinding attacker would serve.
                raise _Refused(
                    f"refused: {numeric} is {_with_article(kind)} address ({ALLOW_PRIVATE_HINT})"
                )
            if all(numeric != n for n, _ in checked):
                checked.append((numeric, ip))
        if not checked:
            raise _Refused(f"cannot resolve {target.host}: no addresses")
        return checked

    @staticmethod
    def _preflight_headers(target: _Target) -> list[tuple[str, str]]:
        return [
            ("Host", target.host_header),
            ("User-Agent", USER_AGENT),
            ("Origin", "null"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
            ("Connection", "close"),
        ]

    @staticmethod
    def _post_headers(target: _Target, body: bytes) -> list[tuple[str, str]]:
        return [
            ("Host", target.host_header),
            ("User-Agent", USER_AGENT),
            ("Content-Type", REPORT_CONTENT_TYPE),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]

    def _connect(
        self, addresses: Sequence[tuple[str, IPAddress]], port: int, deadline: _Deadline
    ) -> socket.socket:
        last_error: OSError | None = None
        for numeric, _ in addresses:
            try:
                # A numeric host: create_connection does no DNS lookup, and it never consults
                # *_PROXY environment variables.
                return socket.create_connection((numeric, port), timeout=deadline.remaining())
            except TimeoutError:
                raise
            except OSError as e:
                last_error = e
        assert last_error is not None
        raise last_error

    def _exchange(
        self,
        addresses: Sequence[tuple[str, IPAddress]],
        target: _Target,
        deadline: _Deadline,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """One request on a fresh TLS connection; the response status and header fields."""
        raw = self._connect(addresses, target.port, deadline)
        try:
            raw.settimeout(deadline.remaining())
            with self._ssl_context.wrap_socket(raw, server_hostname=target.host) as tls:
                conn = h11.Connection(
                    our_role=h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEADER_BYTES
                )
                out = (
                    conn.send(
                        h11.Request(method=method, target=target.request_target, headers=headers)
                    )
                    or b""
                )
                if body:
                    out += conn.send(h11.Data(data=body)) or b""
                out += conn.send(h11.EndOfMessage()) or b""
                tls.settimeout(deadline.remaining())
                tls.sendall(out)
                response = self._read_response(conn, tls, deadline)
                self._drain_body(conn, tls, deadline)
                return response.status_code, list(response.headers)
        finally:
            raw.close()

    @staticmethod
    def _receive(conn: h11.Connection, sock: ssl.SSLSocket, deadline: _Deadline) -> None:
        sock.settimeout(deadline.remaining())
        conn.receive_data(sock.recv(16384))

    def _read_response(
        self, conn: h11.Connection, sock: ssl.SSLSocket, deadline: _Deadline
    ) -> h11.Response:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                sock.settimeout(deadline.remaining())
                data = sock.recv(16384)
                if not data:
                    raise _Refused("connection closed before a response")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise h11.RemoteProtocolError(
                    f"unexpected {type(event).__name__} before a response"
                )

    def _drain_body(self, conn: h11.Connection, sock: ssl.SSLSocket, deadline: _Deadline) -> None:
        # The body is not used; read a bounded amount so that the collector is not cut off
        # mid-response, and give up quietly once the status is known.
        received = 0
        try:
            while received <= MAX_RESPONSE_BODY_BYTES:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    self._receive(conn, sock, deadline)
                elif isinstance(event, h11.Data):
                    received += len(event.data)
                else:
                    return
        except (OSError, h11.ProtocolError) as e:
            logger.debug(f"Expect-CT report: ignoring error after the response status: {e}")


__all__ = [
    "ReportOutcome",
    "ReportSender",
    "address_kind",
    "check_preflight",
]
