"""Upstream TLS handshake capture: TLS-extension SCTs, the stapled OCSP response, a decision point.

RFC 6962 section 3.3 delivers SCTs in three ways. Embedded SCTs are in the certificate and need
nothing from here. The other two arrive in the handshake, where mitmproxy does not expose them:

* the ``signed_certificate_timestamp`` extension (type 18): in the ServerHello for TLS 1.2
  (RFC 6962 section 3.3.1), in the leaf's CertificateEntry for TLS 1.3 (RFC 8446 section 4.4.2);
* a stapled OCSP response (RFC 6066 section 8) whose SingleResponse carries SCTs.

This is the only module that relies on private pyOpenSSL and mitmproxy internals, and each one
is feature-detected by ``HandshakeCapture.install``:

* ``mitmproxy.net.tls.create_proxy_server_context`` (an ``lru_cache``) is wrapped, because
  OpenSSL copies custom extensions and the message callback from the ``SSL_CTX`` into an ``SSL``
  only when the ``SSL`` is created: the context must be instrumented before TlsConfig calls
  ``SSL.Connection(context)``.
* ``SSL_CTX_add_client_custom_ext`` makes OpenSSL offer an empty extension 18, which a server
  needs before it may send SCTs. Its parse callback is never run for TLS 1.3 (the old API
  registers the extension as TLS 1.2-only), so the extension is read from a message callback
  (``SSL_CTX_set_msg_callback``), which sees every handshake message after decryption.
  ``Context._context`` and ``Connection._reverse_mapping`` lead from OpenSSL to pyOpenSSL.
* The client OCSP status callback (public pyOpenSSL API) runs once all server authentication
  data has arrived and before the client sends its Finished; returning False there aborts the
  upstream handshake before any request byte is sent. That is the ``decide`` hook.

DTLS upstreams get the decision point and stapled OCSP, not the TLS extension (DTLS handshake
headers differ). QUIC upstreams go through aioquic, not through ``tls_start_server``: for them
nothing here runs and ``result`` reports ``captured=False``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from cryptography import x509
from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import tls
from mitmproxy.net import tls as net_tls
from OpenSSL import SSL
from OpenSSL import crypto

from expect_ct import chain as chainmod
from expect_ct.tls_messages import CONTENT_TYPE_HANDSHAKE
from expect_ct.tls_messages import EXT_SIGNED_CERTIFICATE_TIMESTAMP
from expect_ct.tls_messages import HANDSHAKE_CERTIFICATE
from expect_ct.tls_messages import HANDSHAKE_CERTIFICATE_STATUS
from expect_ct.tls_messages import HANDSHAKE_SERVER_HELLO
from expect_ct.tls_messages import CertificateEntry
from expect_ct.tls_messages import MalformedHandshakeMessage
from expect_ct.tls_messages import ServerFlight
from expect_ct.tls_messages import ServerHello
from expect_ct.tls_messages import parse_certificate_status
from expect_ct.tls_messages import parse_extensions
from expect_ct.tls_messages import parse_server_hello
from expect_ct.tls_messages import parse_tls13_certificate
from expect_ct.tls_messages import split_handshake_message

_ffi: Any
_lib: Any
try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - depends on the installed pyOpenSSL
    _ffi = None
    _lib = None

logger = logging.getLogger(__name__)


# Attribute names on pyOpenSSL objects: the capture state lives and dies with them.
_CONNECTION_STATE_ATTR = "_expect_ct_capture"
_CONTEXT_FLAG_ATTR = "_expect_ct_instrumented"
# Set on our wrapper so a later install (script reload) can find the real function.
_ORIGINAL_ATTR = "_expect_ct_original"


# --- What the addon gets --------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeSCTs:
    """SCT material from one upstream handshake.

    ``captured`` is False when the TLS extension could not be observed (QUIC, internals
    missing, capture not installed): ``tls_extension`` None then means "unknown", not "none
    sent". ``ocsp_response`` may still be known in that case.
    """

    captured: bool
    tls_extension: bytes | None
    tls_extension_where: str | None
    ocsp_response: bytes | None
    tls_version: str | None
    chain: tuple[x509.Certificate, ...]
    # The same chain as DER, when the handshake gave it as DER: a cheap exact cache key.
    chain_der: tuple[bytes, ...] = ()
    # The chain OpenSSL verified (leaf first, anchor last), only when mitmproxy verified the
    # upstream certificate and the result was X509_V_OK: the class is never stricter than it.
    verified_chain: tuple[bytes, ...] = ()
    # Set when the served leaf itself could not be parsed (``chain`` is then empty).
    leaf_error: str | None = None


NOTHING_CAPTURED = HandshakeSCTs(
    captured=False,
    tls_extension=None,
    tls_extension_where=None,
    ocsp_response=None,
    tls_version=None,
    chain=(),
)

Decide = Callable[[connection.Server, HandshakeSCTs], bool]


@dataclass
class _ConnectionState:
    """Per upstream connection, stored on its pyOpenSSL Connection."""

    server: connection.Server
    decide: Decide | None
    extension_capture: bool
    flight: ServerFlight = field(default_factory=ServerFlight)
    status_callback_ran: bool = False
    stapled: bytes | None = None


@dataclass(frozen=True)
class _Features:
    """Which internals exist; each ``missing_*`` names the missing pieces."""

    missing_wrapper: tuple[str, ...]
    missing_extension: tuple[str, ...]
    missing_status_callback: tuple[str, ...]
    missing_staple_read: tuple[str, ...]

    @property
    def can_wrap(self) -> bool:
        return not self.missing_wrapper

    @property
    def extension_capture(self) -> bool:
        return self.can_wrap and not self.missing_extension

    @property
    def status_callback(self) -> bool:
        return self.can_wrap and not self.missing_status_callback

    def problem(self) -> str | None:
        parts = []
        if self.missing_wrapper:
            parts.append(
                f"missing {', '.join(self.missing_wrapper)}: upstream TLS contexts cannot be "
                "instrumented, so TLS-extension SCTs are not captured and no in-handshake "
                "decision is possible"
            )
        elif self.missing_extension:
            parts.append(
                f"missing {', '.join(self.missing_extension)}: TLS-extension SCTs are not captured"
            )
        if self.can_wrap and self.missing_status_callback:
            parts.append(
                f"missing {', '.join(self.missing_status_callback)}: no in-handshake decision "
                "is possible"
            )
        if not self.status_callback and self.missing_staple_read:
            parts.append(
                f"missing {', '.join(self.missing_staple_read)}: stapled OCSP responses are "
                "not captured"
            )
        if not parts:
            return None
        return (
            "Expect-CT handshake capture is degraded with this mitmproxy/pyOpenSSL "
            f"({_versions()}): " + "; ".join(parts) + ". Embedded SCTs are unaffected."
        )


def _versions() -> str:
    import OpenSSL
    from mitmproxy import version

    return f"mitmproxy {version.VERSION}, pyOpenSSL {OpenSSL.__version__}"


def _detect_features() -> _Features:
    missing_wrapper = []
    function = getattr(net_tls, "create_proxy_server_context", None)
    if function is None or not callable(getattr(function, "cache_clear", None)):
        missing_wrapper.append("mitmproxy.net.tls.create_proxy_server_context (with cache_clear)")

    missing_lib = ["OpenSSL._util.lib"] if _lib is None or _ffi is None else []
    missing_extension = list(missing_lib)
    missing_staple_read = list(missing_lib)
    if _lib is not None:
        for symbol in ("SSL_CTX_add_client_custom_ext", "SSL_CTX_set_msg_callback"):
            if not hasattr(_lib, symbol):
                missing_extension.append(f"OpenSSL._util.lib.{symbol}")
        if not hasattr(_lib, "SSL_get_tlsext_status_ocsp_resp"):
            missing_staple_read.append("OpenSSL._util.lib.SSL_get_tlsext_status_ocsp_resp")
    probe_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if not hasattr(probe_context, "_context"):
        missing_extension.append("OpenSSL.SSL.Context._context")
    if not isinstance(getattr(SSL.Connection, "_reverse_mapping", None), Mapping):
        missing_extension.append("OpenSSL.SSL.Connection._reverse_mapping")
    if not hasattr(SSL.Connection(probe_context), "_ssl"):
        missing_staple_read.append("OpenSSL.SSL.Connection._ssl")

    missing_status_callback = []
    for owner, name in (
        (SSL.Context, "set_ocsp_client_callback"),
        (SSL.Connection, "request_ocsp"),
    ):
        if not callable(getattr(owner, name, None)):
            missing_status_callback.append(f"OpenSSL.SSL.{owner.__name__}.{name}")
    return _Features(
        missing_wrapper=tuple(missing_wrapper),
        missing_extension=tuple(missing_extension),
        missing_status_callback=tuple(missing_status_callback),
        missing_staple_read=tuple(missing_staple_read),
    )


# --- OpenSSL callbacks (module level: shared by every context, kept alive for the process) ---


def _on_message(
    write_p: int,
    version: int,
    content_type: int,
    buf: Any,
    length: int,
    ssl: Any,
    arg: Any,
) -> None:
    """SSL_CTX_set_msg_callback: every protocol message, after decryption.

    OpenSSL calls this for every record header and message of every upstream connection, in
    both directions, so the messages we do not read are dismissed before any look-up.
    """
    if write_p or content_type != CONTENT_TYPE_HANDSHAKE or not length:
        return
    try:
        if _ffi.cast("unsigned char *", buf)[0] not in _CAPTURED_MESSAGES:
            return
        conn = SSL.Connection._reverse_mapping.get(ssl)
        state = _state_of(conn) if conn is not None else None
        if state is None or not state.extension_capture:
            return
        state.flight.observe(bytes(_ffi.buffer(buf, length)))
    except MalformedHandshakeMessage as e:
        logger.warning(f"Could not read an upstream TLS handshake message for SCTs: {e}")
    except Exception:
        logger.exception("Unexpected error while capturing upstream TLS handshake messages")


_CAPTURED_MESSAGES = frozenset(
    (HANDSHAKE_SERVER_HELLO, HANDSHAKE_CERTIFICATE, HANDSHAKE_CERTIFICATE_STATUS)
)


def _state_of(conn: SSL.Connection) -> _ConnectionState | None:
    # vars(), not getattr(): pyOpenSSL's Connection.__getattr__ falls back to its socket, and a
    # missed attribute costs an exception - on every handshake message of every connection.
    state: _ConnectionState | None = vars(conn).get(_CONNECTION_STATE_ATTR)
    return state


_message_callback: Any = None


def _message_callback_pointer() -> Any:
    global _message_callback
    if _message_callback is None:
        _message_callback = _ffi.callback(
            "void (*)(int, int, int, void *, size_t, SSL *, void *)", _on_message
        )
    return _message_callback


def _on_status(conn: SSL.Connection, stapled: bytes, data: Any) -> bool:
    """OCSP client status callback: the decision point. Never raises (pyOpenSSL would re-raise
    from do_handshake); returning False aborts the handshake with bad_certificate_status_response.
    """
    try:
        state = _state_of(conn)
        if state is None or state.status_callback_ran:
            return True
        state.status_callback_ran = True
        state.stapled = stapled or None
        if state.decide is None:
            return True
        handshake = _snapshot(conn, state)
    except Exception:
        logger.exception("Unexpected error while reading the upstream TLS handshake")
        return True
    try:
        proceed = bool(state.decide(state.server, handshake))
    except Exception:
        logger.exception(
            f"Expect-CT decision for {_describe(state.server)} failed; continuing the handshake"
        )
        return True
    if not proceed:
        # mitmproxy's next line says "Server TLS handshake failed ... invalid status response":
        # say first that this is the Expect-CT block, not a broken server.
        logger.info(
            f"Expect-CT: aborting the upstream TLS handshake with {_describe(state.server)} "
            "(the CT block above; OpenSSL reports it as 'invalid status response')."
        )
    return proceed


def _describe(server: connection.Server) -> str:
    if server.address is None:
        return server.sni or "an unknown server"
    host, port = server.address[:2]
    return f"{server.sni or host}:{port}"


def _instrument(context: SSL.Context, features: _Features) -> None:
    if getattr(context, _CONTEXT_FLAG_ATTR, None) is not None:
        return
    extension = False
    if features.extension_capture:
        # add_cb NULL: OpenSSL sends an empty extension_data, as RFC 6962 section 3.3.1 asks.
        added = _lib.SSL_CTX_add_client_custom_ext(
            context._context,
            EXT_SIGNED_CERTIFICATE_TIMESTAMP,
            _ffi.NULL,
            _ffi.NULL,
            _ffi.NULL,
            _ffi.NULL,
            _ffi.NULL,
        )
        if added == 1:
            _lib.SSL_CTX_set_msg_callback(context._context, _message_callback_pointer())
            extension = True
        else:
            logger.warning(
                "OpenSSL refused to offer the signed_certificate_timestamp extension "
                "upstream; TLS-extension SCTs are not captured for this context."
            )
    if features.status_callback:
        context.set_ocsp_client_callback(_on_status)
    setattr(context, _CONTEXT_FLAG_ATTR, extension)


def _wrap(original: Callable[..., SSL.Context], features: _Features) -> Callable[..., SSL.Context]:
    @functools.wraps(original)
    def create_proxy_server_context(*args: Any, **kwargs: Any) -> SSL.Context:
        # Keyword signature differs between mitmproxy 11 and 12 (ecdh_curve), so pass through.
        context = original(*args, **kwargs)
        try:
            _instrument(context, features)
        except Exception:
            logger.exception("Could not instrument an upstream TLS context for SCT capture")
        return context

    wrapper: Any = create_proxy_server_context
    wrapper.cache_clear = original.cache_clear  # type: ignore[attr-defined]
    wrapper.cache_info = getattr(original, "cache_info", None)
    setattr(wrapper, _ORIGINAL_ATTR, original)
    return wrapper  # type: ignore[no-any-return]


# --- Reading results ------------------------------------------------------------------------


def _peer_chain(conn: SSL.Connection) -> chainmod.ServedChain:
    """The upstream chain as served: what cryptography can parse of it, and all of it as DER.

    OpenSSL completes handshakes with chains holding extra certificates cryptography cannot
    parse; those are skipped (the leaf and the rest are kept), never the whole chain dropped
    (issue 17, attack 4).
    """
    try:
        ders = tuple(
            crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
            for cert in conn.get_peer_cert_chain() or ()
        )
    except Exception as e:  # noqa: BLE001 - pyOpenSSL on a hostile chain
        logger.warning(f"Could not read the upstream certificate chain: {e}")
        return chainmod.ServedChain((), (), f"the chain cannot be read: {e}", ())
    try:
        return chainmod.ServedChain(tuple(_certificate(der) for der in ders), (), None, ders)
    except Exception:  # noqa: BLE001 - one certificate does not parse: keep what does
        return chainmod.read_served_chain(ders)


def _verified_chain(conn: SSL.Connection) -> tuple[bytes, ...]:
    """The chain OpenSSL built and verified (DER, leaf first, anchor last), or ().

    Only when verification is on (mitmproxy's default; ssl_insecure turns it off) and its
    result is X509_V_OK: SSL_get0_verified_chain is empty before verification ran.
    """
    try:
        if conn.get_verify_mode() == SSL.VERIFY_NONE:
            return ()
        ssl = getattr(conn, "_ssl", None)
        if _lib is None or ssl is None or _lib.SSL_get_verify_result(ssl) != 0:
            return ()
        return tuple(
            crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
            for cert in conn.get_verified_chain() or ()
        )
    except Exception:  # noqa: BLE001 - the class then rests on cryptography alone
        return ()


@functools.lru_cache(maxsize=512)
def _certificate(der: bytes) -> x509.Certificate:
    """One cryptography object per distinct certificate: a server sends the same chain on
    every connection, so parsing it again each time is wasted, and the addon's caches then
    see the very same objects."""
    return x509.load_der_x509_certificate(der)


def _tls_version(conn: SSL.Connection) -> str | None:
    try:
        name = conn.get_protocol_version_name()
    except Exception:
        return None
    return name if name and name.lower() != "unknown" else None


def _read_staple(conn: SSL.Connection) -> bytes | None:
    """The stapled response OpenSSL kept, for connections the status callback did not see."""
    ssl = getattr(conn, "_ssl", None)
    if _lib is None or _ffi is None or ssl is None:
        return None
    read = getattr(_lib, "SSL_get_tlsext_status_ocsp_resp", None)
    if read is None:
        return None
    pointer = _ffi.new("unsigned char **")
    length = read(ssl, pointer)
    if length <= 0 or pointer[0] == _ffi.NULL:
        return None
    return bytes(_ffi.buffer(pointer[0], length))


def _snapshot(conn: SSL.Connection, state: _ConnectionState) -> HandshakeSCTs:
    if state.status_callback_ran:
        stapled = state.stapled
    else:
        stapled = _read_staple(conn) or state.flight.ocsp_response
    capture = state.extension_capture
    served = _peer_chain(conn)
    return HandshakeSCTs(
        captured=capture,
        tls_extension=state.flight.tls_extension if capture else None,
        tls_extension_where=state.flight.tls_extension_where if capture else None,
        ocsp_response=stapled,
        tls_version=_tls_version(conn),
        chain=served.certificates if served.leaf_error is None else (),
        chain_der=served.ders,
        verified_chain=_verified_chain(conn),
        leaf_error=served.leaf_error,
    )


# --- The object the addon owns --------------------------------------------------------------


class HandshakeCapture:
    """Wires SCT capture and the in-handshake decision into mitmproxy's upstream TLS.

    Call ``install`` from the addon's ``load``/``running`` and ``uninstall`` from ``done``;
    forward ``tls_start_server`` and read ``result`` in ``tls_established_server`` (or
    ``tls_failed_server``).
    """

    def __init__(self) -> None:
        self._decide: Decide | None = None
        self._active = False
        self._problem: str | None = None
        self._original: Callable[..., SSL.Context] | None = None
        self._wrapper: Callable[..., SSL.Context] | None = None

    @property
    def installed(self) -> bool:
        """True while our wrapper is mitmproxy's create_proxy_server_context."""
        return self._wrapper is not None and net_tls.create_proxy_server_context is self._wrapper

    @property
    def problem(self) -> str | None:
        """Why capture is degraded (what is missing), None when everything works."""
        return self._problem

    def install(self, decide: Decide | None = None) -> str | None:
        """Patch mitmproxy's upstream context factory; return a warning text if degraded.

        Idempotent; a second call only replaces ``decide``.
        """
        self._decide = decide
        if self._active:
            return self._problem
        features = _detect_features()
        self._problem = features.problem()
        if features.can_wrap:
            current = net_tls.create_proxy_server_context
            # A wrapper left by an earlier instance (script reload): wrap what it wrapped.
            original = getattr(current, _ORIGINAL_ATTR, current)
            wrapper = _wrap(original, features)
            # Cached contexts predate the wrapper and would stay uninstrumented.
            original.cache_clear()
            net_tls.create_proxy_server_context = wrapper  # type: ignore[assignment]
            self._original, self._wrapper = original, wrapper
        self._active = True
        return self._problem

    def uninstall(self) -> None:
        """Restore the original factory (if it is still ours) and drop cached contexts."""
        if self._wrapper is not None and self._original is not None:
            if net_tls.create_proxy_server_context is self._wrapper:
                net_tls.create_proxy_server_context = self._original  # type: ignore[assignment]
                self._original.cache_clear()  # type: ignore[attr-defined]
        self._original = self._wrapper = None
        self._decide = None
        self._active = False

    def tls_start_server(self, data: tls.TlsData) -> None:
        """Attach capture state to the upstream pyOpenSSL connection and request OCSP."""
        # DTLS too (issue 17, attack 2): the status callback is the decision point there as
        # well. Its handshake messages carry a 12-byte DTLS header the message parser does
        # not read, so TLS-extension SCTs are not captured for DTLS.
        if not isinstance(data.conn, connection.Server):
            return
        if data.ssl_conn is None:
            # We run before TlsConfig (a -s script): let it build the connection now; its own
            # hook then sees ssl_conn set and returns early.
            master = getattr(ctx, "master", None)
            tlsconfig = master.addons.get("tlsconfig") if master is not None else None
            if tlsconfig is None:
                logger.warning("No tlsconfig addon: cannot capture upstream TLS handshakes.")
                return
            tlsconfig.tls_start_server(data)
        conn = data.ssl_conn
        if conn is None or _state_of(conn) is not None:
            return
        instrumented = getattr(conn.get_context(), _CONTEXT_FLAG_ATTR, None)
        state = _ConnectionState(
            server=data.conn,
            decide=self._decide if self._active else None,
            extension_capture=bool(instrumented) and not data.is_dtls,
        )
        setattr(conn, _CONNECTION_STATE_ATTR, state)
        if callable(getattr(conn, "request_ocsp", None)):
            conn.request_ocsp()

    def result(self, data: tls.TlsData) -> HandshakeSCTs:
        """What the upstream handshake carried (also after a failed or aborted handshake)."""
        conn = data.ssl_conn
        if conn is None:
            return NOTHING_CAPTURED
        state = _state_of(conn)
        if state is None:
            served = _peer_chain(conn)
            return HandshakeSCTs(
                captured=False,
                tls_extension=None,
                tls_extension_where=None,
                ocsp_response=_read_staple(conn),
                tls_version=_tls_version(conn),
                chain=served.certificates if served.leaf_error is None else (),
                chain_der=served.ders,
                verified_chain=_verified_chain(conn),
                leaf_error=served.leaf_error,
            )
        return _snapshot(conn, state)


__all__ = [
    "CertificateEntry",
    "Decide",
    "HandshakeCapture",
    "HandshakeSCTs",
    "MalformedHandshakeMessage",
    "NOTHING_CAPTURED",
    "ServerFlight",
    "ServerHello",
    "parse_certificate_status",
    "parse_extensions",
    "parse_server_hello",
    "parse_tls13_certificate",
    "split_handshake_message",
]
