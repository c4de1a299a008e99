"""Routing across pumps: who a notice is for, and who it came from.

A source names the clusters its data is for (to_clusters); the pump that first
ingests a notice names itself (from_cluster).  A link between two pumps is a
relay on the downstream pump; it takes a notice only when one of the notice's
destinations is reachable through it: its own cluster, or a cluster it is a
gateway for.  A notice that names no destination goes everywhere.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dd.core.notice import Notice


def reachable(notice: Notice, cluster: str | None, gateway_for: Iterable[str] = ()) -> bool:
    """Whether a relay of `cluster` (a gateway for `gateway_for`) takes `notice`."""
    if not notice.to_clusters or not cluster:
        return True
    return bool(set(notice.to_clusters) & {cluster, *gateway_for})


def owner_of(exchange: str) -> str | None:
    """The user whose own exchange this is (xs_<user>), or None: what arrives there was
    published by that user, or by the pump's own feeders, and is that user's."""
    return exchange[3:] if exchange.startswith("xs_") and len(exchange) > 3 else None


def private_exchange(user: str) -> str:
    """The exchange where pumps put private notices for `user`, which only `user` reads."""
    return f"xpriv_{user}"
