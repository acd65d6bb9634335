"""The "Certificate Transparency" contentview for mitmproxy 11 and 12 (console and mitmweb).

mitmproxy 11 has ``contentviews.View`` (``__call__`` returning styled lines); mitmproxy 12 has
the ``contentviews.Contentview`` protocol (``prettify`` returning text) and still accepts the
old class with a DeprecationWarning. ``make_view`` builds the one the running mitmproxy
expects; both render ``ctview.render`` of the flow's ``expect_ct`` metadata, plus the host's
stored policy when the ExpectCT addon is loaded.

The addon ``CTContentview`` registers the view in ``load`` and removes it in ``done``, so a
script reload does not leave a view bound to a dead addon.

Priority: 0.05 for a flow the addon evaluated, below the Raw view (0.1 whenever there is a
body), so "auto" keeps showing the body; the view is picked from the view menu (mitmweb:
"View:", console: ``m``). An evaluated flow with an empty body (mitmproxy 11's Raw says 0)
gets this view by default: there is nothing else to show. Flows without CT data: -1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

from mitmproxy import contentviews
from mitmproxy import ctx

from expect_ct import ctview
from expect_ct import store as storemod

META_KEY = "expect_ct"
# mitmproxy 12 names that mitmproxy 11 (what mypy checks against) does not have.
_API: Any = contentviews
PRIORITY = 0.05
NOT_APPLICABLE = -1.0

# The ExpectCT addon's name in mitmproxy's addon manager (its class name, lower case).
ADDON_NAME = "expectct"

PolicyLookup = Callable[[str], "ctview.StoredPolicy | None"]


def flow_meta(flow: object) -> object:
    metadata = getattr(flow, "metadata", None)
    return metadata.get(META_KEY) if isinstance(metadata, dict) else None


def render_flow(flow: object, lookup: PolicyLookup | None = None) -> tuple[str, list[ctview.Line]]:
    """(description, lines) for a flow: what both API versions show."""
    meta = flow_meta(flow)
    stored = None
    if lookup is not None and isinstance(meta, dict) and isinstance(meta.get("host"), str):
        stored = lookup(meta["host"])
    return ctview.description(meta), ctview.render(meta, stored=stored)


def store_lookup() -> PolicyLookup:
    """Look hosts up in the running ExpectCT addon's store (if it is loaded and has one)."""

    def lookup(host: str) -> ctview.StoredPolicy | None:
        addon = ctx.master.addons.get(ADDON_NAME) if ctx.master is not None else None
        store = getattr(addon, "store", None)
        if store is None:
            return None
        try:
            return ctview.StoredPolicy(host, store.get(host))
        except ValueError:
            return ctview.StoredPolicy(host, None)  # a name that can never have been noted
        except storemod.StoreError as e:
            return ctview.StoredPolicy(host, None, error=str(e.__cause__ or e))

    return lookup


def _priority(flow: object) -> float:
    return PRIORITY if ctview.has_data(flow_meta(flow)) else NOT_APPLICABLE


class LegacyView:
    """mitmproxy 11: a ``contentviews.View`` (``legacy_view_class`` makes the subclass)."""

    name = ctview.VIEW_NAME

    def __init__(self, lookup: PolicyLookup | None = None) -> None:
        self.lookup = lookup

    def __call__(
        self, data: bytes, *, flow: Any = None, **unknown_metadata: Any
    ) -> tuple[str, Iterator[Any]]:
        description, lines = render_flow(flow, self.lookup)
        return description, iter(lines)

    def render_priority(self, data: bytes, *, flow: Any = None, **unknown_metadata: Any) -> float:
        return _priority(flow)


@functools.cache
def legacy_view_class() -> type[LegacyView]:
    # Made on demand: on mitmproxy 12, merely subclassing the old View warns (deprecated).
    return type("CertificateTransparencyView", (LegacyView, contentviews.View), {})


class ModernView:
    """mitmproxy 12: the ``contentviews.Contentview`` protocol (checked at run time)."""

    def __init__(self, lookup: PolicyLookup | None = None) -> None:
        self.lookup = lookup

    @property
    def name(self) -> str:
        return ctview.VIEW_NAME

    @property
    def syntax_highlight(self) -> str:
        return "none"

    def prettify(self, data: bytes, metadata: Any) -> str:
        _description, lines = render_flow(getattr(metadata, "flow", None), self.lookup)
        return ctview.to_text(lines)

    def render_priority(self, data: bytes, metadata: Any) -> float:
        return _priority(getattr(metadata, "flow", None))

    def __lt__(self, other: Any) -> bool:
        return bool(self.name < other.name)


def modern_api() -> bool:
    """True on mitmproxy 12+ (the Contentview protocol and its registry)."""
    return hasattr(contentviews, "Contentview") and hasattr(contentviews, "registry")


def make_view(lookup: PolicyLookup | None = None) -> LegacyView | ModernView:
    return ModernView(lookup) if modern_api() else legacy_view_class()(lookup)


def register(view: LegacyView | ModernView) -> None:
    # Under a duplicate name, 11's add() raises and 12's registry replaces the old view: a
    # view left behind by an instance whose done() never ran is replaced on both.
    unregister_name(view.name)
    contentviews.add(view)  # type: ignore[arg-type]


def unregister(view: LegacyView | ModernView) -> None:
    unregister_name(view.name, only=view)


def unregister_name(name: str, only: object = None) -> None:
    if modern_api():
        # 12's registry has no public removal (contentviews.remove is a deprecated no-op).
        registry: Any = _API.registry
        by_name: dict[str, Any] | None = getattr(registry, "_by_name", None)
        current = by_name.get(name.lower()) if by_name is not None else None
        if by_name is not None and current is not None and (only is None or current is only):
            del by_name[name.lower()]
            registry.on_change.send(current)
        return
    for existing in list(contentviews.views):
        if existing.name == name and (only is None or existing is only):
            contentviews.remove(existing)


class CTContentview:
    """mitmproxy addon: registers the "Certificate Transparency" contentview while loaded."""

    def __init__(self) -> None:
        self.view: LegacyView | ModernView | None = None

    def load(self, loader: Any) -> None:
        self.view = make_view(store_lookup())
        register(self.view)

    def done(self) -> None:
        if self.view is not None:
            unregister(self.view)
            self.view = None
