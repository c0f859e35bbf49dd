"""SSRF classification (contract §8), by classification only: no request leaves this test.

Non-loopback private addresses are never contacted anywhere in the test suite; they are
checked here as values. ``resolve`` is only exercised with IP literals and ``localhost``,
which getaddrinfo answers without sending a packet.
"""

from __future__ import annotations

import ipaddress

import pytest

from images_service.config.settings import load_settings
from images_service.errors import DownloadError
from images_service.fetching.address_guard import AddressGuard, classify, networks

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.1.2", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254",
    "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
    "::1", "::", "fe80::1", "fe80::1ff:fe23:4567:890a", "fc00::1", "fd12:3456::1", "fec0::1",
    "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
    "::ffff:0.0.0.0", "::127.0.0.1",
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:0a00:0001::1",
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "64:ff9b::a00:1", "64:ff9b::808:808", "64:ff9b:1::1",
]
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "151.101.1.69", "100.63.255.255", "100.128.0.1",
    "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8", "2002:0808:0808::1",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_classified(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is not None
    with pytest.raises(DownloadError) as info:
        AddressGuard().check(ipaddress.ip_address(address), "host.test")
    assert info.value.code == "blocked_address"
    assert not info.value.retryable


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None
    AddressGuard().check(ipaddress.ip_address(address), "host.test")


def test_reasons_name_the_class() -> None:
    assert classify(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert classify(ipaddress.ip_address("100.64.0.1")) == "shared (CGNAT)"
    assert classify(ipaddress.ip_address("::ffff:127.0.0.1")) == "IPv4-mapped loopback"
    assert classify(ipaddress.ip_address("224.0.0.1")) == "multicast"


def test_allowlist_exempts_only_its_networks() -> None:
    guard = AddressGuard(allowlist=networks(["127.0.0.0/27"]))
    assert guard.blocked_reason(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.blocked_reason(ipaddress.ip_address("127.0.0.31")) is None
    assert guard.blocked_reason(ipaddress.ip_address("::ffff:127.0.0.2")) is None
    assert guard.blocked_reason(ipaddress.ip_address("127.0.0.200")) == "loopback"
    assert guard.blocked_reason(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert guard.blocked_reason(ipaddress.ip_address("::1")) is not None


def test_allowlist_of_a_private_range_covers_its_mapped_form() -> None:
    guard = AddressGuard(allowlist=networks(["10.20.0.0/16"]))
    assert guard.blocked_reason(ipaddress.ip_address("::ffff:10.20.1.2")) is None
    assert guard.blocked_reason(ipaddress.ip_address("10.21.0.1")) == "private"


def test_allow_private_networks_allows_everything() -> None:
    guard = AddressGuard(allow_private_networks=True)
    for address in BLOCKED:
        assert guard.blocked_reason(ipaddress.ip_address(address)) is None


def test_from_settings() -> None:
    settings = load_settings(
        {"ALLOW_PRIVATE_NETWORKS": "false", "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27,fd00::/8"}
    )
    guard = AddressGuard.from_settings(settings)
    assert not guard.allow_private_networks
    assert guard.allowlist == networks(["127.0.0.0/27", "fd00::/8"])


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "017700000001", "::ffff:127.0.0.1",
             "[::1]", "localhost", "0.0.0.0", "0"],
)
def test_resolve_refuses_odd_spellings_of_local_addresses(host: str) -> None:
    with pytest.raises(DownloadError) as info:
        AddressGuard().resolve(host, 80)
    assert info.value.code == "blocked_address"


def test_resolve_returns_the_checked_addresses() -> None:
    guard = AddressGuard(allowlist=networks(["127.0.0.0/8"]))
    entries = guard.resolve("2130706433", 8080)
    assert {sockaddr[0] for *_, sockaddr in entries} == {"127.0.0.1"}
    assert all(sockaddr[1] == 8080 for *_, sockaddr in entries)
