"""The in-handshake decision point for QUIC upstreams (HTTP/3 and raw QUIC modes).

mitmproxy runs upstream QUIC handshakes in aioquic, not OpenSSL: ``tls.py``'s status callback
never sees them, and the first hook with the server's certificate, ``tls_established_server``,
runs after aioquic completed the handshake; mitmproxy then sends whatever waits for the
connection (the request, with ``connection_strategy=lazy``). So the decision is made inside
aioquic, once the server proved its key (CertificateVerify) and before the client's Finished:
raising a TLS alert there makes aioquic close the connection, mitmproxy reports a failed
handshake, and no application byte is sent (issue 17, attacks 1 and 2).

Internals relied on, each feature-detected by ``QuicCapture.install`` (degraded: the addon
decides in ``tls_established_server`` and records when that came too late):

* ``mitmproxy.proxy.layers.quic._stream_layers``: its module-level names ``QuicConnection``
  and ``tls_settings_to_configuration``, looked up on every upstream connection;
* ``aioquic.quic.connection.QuicConnection._initialize`` (creates ``self.tls``) and
  ``_configuration``; ``aioquic.tls.Context._client_handle_certificate_verify``,
  ``_peer_certificate`` and ``_peer_certificate_chain``.

aioquic offers no TLS-extension SCTs and no stapled OCSP here: only embedded SCTs count, and
the class rests on cryptography's verifier alone (aioquic does not expose the chain it built).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from mitmproxy import connection

from expect_ct import tls as tlsmod

logger = logging.getLogger(__name__)

Decide = Callable[[connection.Server, tlsmod.HandshakeSCTs], "str | None"]

# Attribute names on mitmproxy's QuicTlsSettings and aioquic's QuicConfiguration.
_SERVER_ATTR = "_expect_ct_server"
_ORIGINALS_ATTR = "_expect_ct_originals"

_stream_layers: Any
_aioquic_tls: Any
_AioQuicConnection: Any
try:
    from aioquic import tls as _aioquic_tls
    from aioquic.quic.connection import QuicConnection as _AioQuicConnection
    from mitmproxy.proxy.layers.quic import _stream_layers
except ImportError:  # pragma: no cover - depends on the installed mitmproxy
    _stream_layers = _aioquic_tls = _AioQuicConnection = None


def _missing() -> list[str]:
    missing = []
    if _stream_layers is None:
        return ["mitmproxy.proxy.layers.quic._stream_layers"]
    for name in ("QuicConnection", "tls_settings_to_configuration"):
        if not hasattr(_stream_layers, name):
            missing.append(f"mitmproxy.proxy.layers.quic._stream_layers.{name}")
    if not callable(getattr(_AioQuicConnection, "_initialize", None)):
        missing.append("aioquic.quic.connection.QuicConnection._initialize")
    context = getattr(_aioquic_tls, "Context", None)
    if not callable(getattr(context, "_client_handle_certificate_verify", None)):
        missing.append("aioquic.tls.Context._client_handle_certificate_verify")
    if getattr(_aioquic_tls, "AlertBadCertificate", None) is None:
        missing.append("aioquic.tls.AlertBadCertificate")
    return missing


def _peer_handshake(tls_context: Any) -> tlsmod.HandshakeSCTs:
    leaf = getattr(tls_context, "_peer_certificate", None)
    chain = tuple(([leaf] if leaf is not None else []) + list(tls_context._peer_certificate_chain))
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    return tlsmod.HandshakeSCTs(
        captured=False,
        tls_extension=None,
        tls_extension_where=None,
        ocsp_response=None,
        tls_version="QUICv1",
        chain=chain,
        chain_der=ders,
    )


class QuicCapture:
    """Install/uninstall the wrappers; ``quic_start_server`` tags each upstream connection."""

    def __init__(self) -> None:
        self._decide: Decide | None = None
        self._originals: tuple[Any, Any] | None = None
        self._wrapper: type | None = None
        self.problem: str | None = None

    @property
    def installed(self) -> bool:
        return self._originals is not None

    def install(self, decide: Decide) -> str | None:
        """Wrap mitmproxy's QUIC connection factory; return why not, if it cannot be done."""
        self._decide = decide
        if self._originals is not None:
            return None
        missing = _missing()
        if missing:
            self.problem = (
                f"missing {', '.join(missing)}: QUIC upstreams are judged only once their "
                "handshake completed (too late for requests already waiting)"
            )
            return self.problem
        # A wrapper left by an earlier instance (script reload): wrap what it wrapped.
        originals = getattr(_stream_layers.QuicConnection, _ORIGINALS_ATTR, None) or (
            _stream_layers.QuicConnection,
            _stream_layers.tls_settings_to_configuration,
        )
        connection_class, to_configuration = originals
        capture = self

        def tls_settings_to_configuration(settings: Any, *args: Any, **kwargs: Any) -> Any:
            configuration = to_configuration(settings, *args, **kwargs)
            server = getattr(settings, _SERVER_ATTR, None)
            if server is not None:
                setattr(configuration, _SERVER_ATTR, server)
            return configuration

        class CheckedQuicConnection(connection_class):  # type: ignore[misc, valid-type]
            def _initialize(self, peer_cid: bytes) -> None:
                super()._initialize(peer_cid)
                server = getattr(self._configuration, _SERVER_ATTR, None)
                if server is not None:
                    capture._guard(self.tls, server)

        setattr(CheckedQuicConnection, _ORIGINALS_ATTR, originals)
        tls_settings_to_configuration.__wrapped__ = to_configuration  # type: ignore[attr-defined]
        _stream_layers.QuicConnection = CheckedQuicConnection
        _stream_layers.tls_settings_to_configuration = tls_settings_to_configuration
        self._originals, self._wrapper = originals, CheckedQuicConnection
        self.problem = None
        return None

    def uninstall(self) -> None:
        originals = self._originals
        if originals is not None and _stream_layers is not None:
            connection_class, to_configuration = originals
            # Only if still ours: a reloaded script's instance may have wrapped it since.
            if _stream_layers.QuicConnection is self._wrapper:
                _stream_layers.QuicConnection = connection_class
                _stream_layers.tls_settings_to_configuration = to_configuration
        self._originals = self._wrapper = None
        self._decide = None

    def quic_start_server(self, data: Any, tlsconfig: Any) -> None:
        """Tag the upstream connection's settings with its Server (TlsConfig fills them)."""
        if not self.installed or not isinstance(data.conn, connection.Server):
            return
        if data.settings is None and tlsconfig is not None:
            # We run before TlsConfig (a -s script): let it fill the settings now; its own hook
            # then sees them set and returns early.
            tlsconfig.quic_start_server(data)
        if data.settings is not None:
            setattr(data.settings, _SERVER_ATTR, data.conn)

    def _guard(self, tls_context: Any, server: connection.Server) -> None:
        """Make aioquic ask the addon once the server's certificate is proven."""
        verify = tls_context._client_handle_certificate_verify
        capture = self

        def client_handle_certificate_verify(input_buf: Any) -> None:
            verify(input_buf)  # aioquic's signature check and its own verification first
            refusal = capture._refusal(tls_context, server)
            if refusal is not None:
                raise _aioquic_tls.AlertBadCertificate(f"Blocked by Expect-CT: {refusal}")

        tls_context._client_handle_certificate_verify = client_handle_certificate_verify

    def _refusal(self, tls_context: Any, server: connection.Server) -> str | None:
        if self._decide is None:
            return None
        try:
            handshake = _peer_handshake(tls_context)
        except Exception:  # noqa: BLE001 - the addon's hooks judge the connection later
            logger.exception("Could not read the upstream QUIC certificate chain")
            return None
        try:
            return self._decide(server, handshake)
        except Exception:  # noqa: BLE001 - never into aioquic as anything but an alert
            logger.exception("Expect-CT decision for a QUIC upstream failed")
            return None
