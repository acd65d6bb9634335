"""Fetching a CT log list: verified HTTPS through urllib, never through the proxy itself.

HTTPS is verified against certifi's roots (or a replacement bundle) plus an optional extra
bundle (mitmproxy's ``ssl_verify_upstream_trusted_ca``). ``HTTPS_PROXY`` is honoured (with
``no_proxy``) unless it points at the proxy's own listen address: a refresh must not loop
through the proxy that needs the list. Pure: no mitmproxy import.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

import certifi

from expect_ct.listeners import is_local_address

# Apple's current list is about 100 kB and Google's all_logs_list about 200 kB.
MAX_LOG_LIST_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0


class SourceError(ValueError):
    """A log-list source, CA bundle or proxy setting is unusable as configured."""


class FetchError(Exception):
    """A log list could not be fetched or read (network, TLS, HTTP status, size)."""


@dataclass(frozen=True)
class FetchOptions:
    """How to reach a URL source.

    ``cafile`` replaces certifi's roots, ``extra_cafile`` adds to them (mitmproxy's
    ``ssl_verify_upstream_trusted_ca``). ``use_env_proxy``: go through ``HTTPS_PROXY`` when
    the environment sets it. ``own_addresses``: the proxy's listen (host, port) pairs,
    never to be fetched through or from.
    """

    cafile: str | None = None
    extra_cafile: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    limit: int = MAX_LOG_LIST_BYTES
    use_env_proxy: bool = True
    own_addresses: tuple[tuple[str, int], ...] = ()
    progress: Callable[[int, int | None], None] | None = None


@dataclass(frozen=True)
class Fetched:
    data: bytes | None  # None: HTTP 304, the copy we have is current
    etag: str | None
    last_modified: str | None


def tls_context(options: FetchOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=options.cafile or certifi.where())
        if options.extra_cafile:
            context.load_verify_locations(cafile=os.path.expanduser(options.extra_cafile))
    except (OSError, ssl.SSLError) as e:
        which = options.extra_cafile if options.extra_cafile else options.cafile
        raise SourceError(f"{which}: cannot load CA certificates: {e}") from e
    return context


def _resolve(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


def points_at_self(host: str, port: int, own_addresses: Iterable[tuple[str, int]]) -> bool:
    """Whether ``host:port`` reaches one of the proxy's own listen addresses."""
    targets: set[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None
    for listen_host, listen_port in own_addresses:
        if listen_port != port:
            continue
        if targets is None:
            targets = _resolve(host, port)
        if listen_host in ("", "0.0.0.0", "::", "*"):
            if any(is_local_address(ip) for ip in targets):
                return True
        elif targets & _resolve(listen_host, listen_port):
            return True
    return False


def choose_proxy(url: str, options: FetchOptions) -> str | None:
    """The HTTPS proxy urllib would use for ``url`` (environment, ``no_proxy`` honoured), or
    None; refuses one that is this very proxy."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    if points_at_self(host, port, options.own_addresses):
        raise SourceError(f"{url} is this proxy's own listen address: refusing to fetch from it")
    if not options.use_env_proxy:
        return None
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    proxy_host, proxy_port = proxy_parts.hostname or "", proxy_parts.port or 80
    if points_at_self(proxy_host, proxy_port, options.own_addresses):
        raise SourceError(
            f"HTTPS_PROXY {proxy} is this proxy's own listen address: a log-list refresh must "
            "not loop through the proxy that needs it (set no_proxy for the list's host)"
        )
    return proxy


def fetch_url(
    url: str,
    options: FetchOptions,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Fetched:
    """GET ``url`` over verified HTTPS, at most ``options.limit`` bytes, in full or not at
    all. With ``etag``/``last_modified`` the request is conditional (304 -> data None)."""
    context = tls_context(options)
    proxy = choose_proxy(url, options)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy} if proxy else {}),
        urllib.request.HTTPSHandler(context=context),
    )
    headers = {"User-Agent": "mitmproxy-expect-ct"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    request = urllib.request.Request(url, headers=headers)
    chunks: list[bytes] = []
    received = 0
    limit = options.limit
    try:
        with opener.open(request, timeout=options.timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise FetchError(f"{url}: {total} bytes is more than the {limit}-byte limit")
            while chunk := response.read(64 * 1024):
                received += len(chunk)
                if received > limit:
                    raise FetchError(f"{url}: more than the {limit}-byte limit")
                chunks.append(chunk)
                if options.progress:
                    options.progress(received, total)
            if total is not None and received != total:
                raise FetchError(f"{url}: truncated: got {received} of {total} bytes")
            return Fetched(
                b"".join(chunks),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except urllib.error.HTTPError as e:
        if e.code == 304 and (etag or last_modified):
            return Fetched(None, etag, last_modified)
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise FetchError(f"{url}: cannot fetch: {e.reason}") from e
    except http.client.IncompleteRead as e:
        raise FetchError(
            f"{url}: truncated: the connection closed after {received + len(e.partial)} bytes"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        raise FetchError(f"{url}: cannot fetch: {e or type(e).__name__}") from e


def read_file(path: str, limit: int = MAX_LOG_LIST_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise FetchError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(data) > limit:
        raise FetchError(f"{path}: more than the {limit}-byte limit")
    return data
