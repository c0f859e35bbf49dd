"""Which IP addresses an image request may connect to (CONTRACT.md §8, SSRF protection).

Unless ``ALLOW_PRIVATE_NETWORKS`` is set, a host is resolved once, *every* address it resolves
to is classified, and the request is refused with ``blocked_address`` when any of them is not
a public unicast address — unless it lies inside ``PRIVATE_NETWORK_ALLOWLIST``. Refusing the
whole host when one address is bad (rather than skipping that address) defeats DNS answers
that mix a public and an internal address.

Addresses that embed an IPv4 address are judged by the embedded one as well: IPv4-mapped
(``::ffff:127.0.0.1``) and 6to4 (``2002:7f00:1::``). Teredo (``2001::/32``), NAT64
(``64:ff9b::/96``) and the deprecated IPv4-compatible form (``::/96``) are refused outright:
an image CDN has no business there.

The fetcher's connection class (:mod:`images_service.fetching.fetcher`) calls
:meth:`AddressGuard.resolve` and connects to exactly the addresses it returns, so there is no
second DNS lookup that could answer differently.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from images_service.config.settings import Settings
from images_service.errors import DownloadError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Carrier-grade NAT (RFC 6598); Python's ``is_private`` does not include it.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: Teredo tunnelling: the server and client addresses hide inside; never an image host.
TEREDO = ipaddress.ip_network("2001::/32")
#: IANA special-purpose ranges that are not globally reachable, listed explicitly so the
#: verdict does not depend on the Python version's ``is_global`` table.
SPECIAL_PURPOSE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
        "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16",
    )
)
#: NAT64 well-known prefix (RFC 6052) and the local-use prefix (RFC 8215).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a short reason), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            reason = classify(mapped)
            return f"IPv4-mapped {reason}" if reason else None
        if ip in TEREDO:
            return "Teredo tunnel"
        if any(ip in net for net in NAT64):
            return "NAT64"
        embedded = ip.sixtofour
        if embedded is not None:
            reason = classify(embedded)
            if reason:
                return f"6to4 of {reason}"
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("special-purpose", any(ip.version == n.version and ip in n for n in SPECIAL_PURPOSE)),
    )
    for reason, hit in checks:
        if hit:
            return reason
    if not ip.is_global:
        return "not globally routable"
    return None


def parse_ip(text: str) -> IPAddress:
    """An address from getaddrinfo's textual form (zone index ``%eth0`` dropped)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


@dataclass(frozen=True)
class AddressGuard:
    """The SSRF policy of one set of settings."""

    allow_private_networks: bool = False
    allowlist: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressGuard:
        return cls(settings.allow_private_networks, tuple(settings.private_network_allowlist))

    def is_allowlisted(self, ip: IPAddress) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            c.version == net.version and c in net for c in candidates for net in self.allowlist
        )

    def blocked_reason(self, ip: IPAddress) -> str | None:
        """Why a connection to ``ip`` is refused under this policy, or None if it is allowed."""
        if self.allow_private_networks or self.is_allowlisted(ip):
            return None
        return classify(ip)

    def check(self, ip: IPAddress, host: str) -> None:
        """Raise ``blocked_address`` when ``ip`` (an address of ``host``) is refused."""
        reason = self.blocked_reason(ip)
        if reason is not None:
            raise DownloadError(
                "blocked_address", f"{host} resolves to {ip} ({reason} address)"
            )

    def resolve(
        self, host: str, port: int, family: int = socket.AF_UNSPEC
    ) -> list[tuple[int, int, int, tuple]]:
        """Resolve ``host`` once and check every address; return getaddrinfo's entries.

        Raises ``blocked_address`` if any address is refused, :class:`socket.gaierror` when
        the name does not resolve.
        """
        entries = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM)
        checked = []
        for af, socktype, proto, _canon, sockaddr in entries:
            self.check(parse_ip(sockaddr[0]), host)
            checked.append((af, socktype, proto, sockaddr))
        return checked


def networks(texts: Sequence[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings to networks (a convenience for tests and tools)."""
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)
