"""expect_ct.quic: wrapping mitmproxy's upstream QUIC connection factory, and undoing it.

The refusal itself (an alert inside aioquic's handshake, no request byte sent) is tested end
to end in tests/e2e/test_e2e_bypass.py (attacks 1 and 2)."""

from __future__ import annotations

from typing import Any

from aioquic import tls as aioquic_tls
from mitmproxy import connection
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.quic import QuicTlsData
from mitmproxy.proxy.layers.quic import QuicTlsSettings
from mitmproxy.proxy.layers.quic import _stream_layers
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from expect_ct import quic as ct_quic
from expect_ct import tls as ct_tls

ORIGINAL_CONNECTION = _stream_layers.QuicConnection
ORIGINAL_CONFIGURATION = _stream_layers.tls_settings_to_configuration


def _refuse(server: connection.Server, handshake: ct_tls.HandshakeSCTs) -> str | None:
    return f"refused {server.sni}"


def test_install_wraps_and_uninstall_restores() -> None:
    capture = ct_quic.QuicCapture()
    assert capture.install(_refuse) is None
    try:
        assert _stream_layers.QuicConnection is not ORIGINAL_CONNECTION
        assert issubclass(_stream_layers.QuicConnection, ORIGINAL_CONNECTION)
        assert _stream_layers.tls_settings_to_configuration is not ORIGINAL_CONFIGURATION
    finally:
        capture.uninstall()
    assert _stream_layers.QuicConnection is ORIGINAL_CONNECTION
    assert _stream_layers.tls_settings_to_configuration is ORIGINAL_CONFIGURATION


def test_a_reloaded_instance_wraps_the_originals_and_the_old_one_leaves_it_alone() -> None:
    first, second = ct_quic.QuicCapture(), ct_quic.QuicCapture()
    first.install(_refuse)
    second.install(_refuse)  # a script reload: the new instance loads before the old one is done
    try:
        wrapper = _stream_layers.QuicConnection
        assert wrapper.__mro__[1] is ORIGINAL_CONNECTION  # not a wrapper of a wrapper
        first.uninstall()
        assert _stream_layers.QuicConnection is wrapper  # still the new instance's
    finally:
        second.uninstall()
    assert _stream_layers.QuicConnection is ORIGINAL_CONNECTION


def test_only_tagged_upstream_connections_are_guarded() -> None:
    capture = ct_quic.QuicCapture()
    capture.install(_refuse)
    try:
        with taddons.context() as tctx:
            server = connection.Server(address=("127.0.0.1", 443), sni="known.example")
            data = QuicTlsData(server, context.Context(tflow.tclient_conn(), tctx.options))
            data.settings = QuicTlsSettings()
            capture.quic_start_server(data, tlsconfig=None)
            tagged = _stream_layers.tls_settings_to_configuration(
                settings=data.settings, is_client=True, server_name="known.example"
            )
            untagged = _stream_layers.tls_settings_to_configuration(
                settings=QuicTlsSettings(), is_client=True, server_name="other.example"
            )
            guarded = _stream_layers.QuicConnection(configuration=tagged)
            plain = _stream_layers.QuicConnection(configuration=untagged)
            guarded.connect(("127.0.0.1", 443), now=0.0)
            plain.connect(("127.0.0.1", 443), now=0.0)
            assert _is_guarded(guarded.tls) and not _is_guarded(plain.tls)
    finally:
        capture.uninstall()


def _is_guarded(tls_context: Any) -> bool:
    # The guard is an instance attribute shadowing aioquic's method.
    return "_client_handle_certificate_verify" in vars(tls_context)


def test_the_guard_raises_a_bad_certificate_alert_with_the_reason() -> None:
    capture = ct_quic.QuicCapture()
    capture.install(_refuse)
    try:
        calls: list[Any] = []

        class FakeTls:  # only what the guard reads: aioquic's own step and the peer chain
            _peer_certificate = None
            _peer_certificate_chain: list[Any] = []

            def _client_handle_certificate_verify(self, buf: Any) -> None:
                calls.append(buf)

        fake = FakeTls()
        server = connection.Server(address=("127.0.0.1", 443), sni="known.example")
        capture._guard(fake, server)
        try:
            fake._client_handle_certificate_verify(b"verify")
        except aioquic_tls.AlertBadCertificate as e:
            assert "Blocked by Expect-CT: refused known.example" in str(e)
        else:
            raise AssertionError("no alert")
        assert calls == [b"verify"]  # aioquic's own checks ran first
    finally:
        capture.uninstall()
