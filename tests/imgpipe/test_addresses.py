"""The address policy: where a download may connect, for each kind of URL the user gave."""

import pytest

from imgpipe import addresses
from imgpipe.addresses import (
    LOOPBACK,
    PRIVATE,
    PUBLIC,
    TargetRefused,
    address_kind,
    address_refusal,
    check_target,
    widest_origin,
)

NEVER = [
    "169.254.169.254",  # AWS, GCP, Azure metadata
    "169.254.170.2",  # AWS ECS credentials
    "169.254.1.1",
    "fe80::1",
    "fe80::1%eth0",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata
    "168.63.129.16",  # Azure wireserver: a public address, listed by name
    "192.0.0.192",  # Oracle metadata
    "::ffff:169.254.169.254",  # the same addresses spelled as IPv6
    "2002:a9fe:a9fe::",
    "64:ff9b::a9fe:a9fe",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("origin", [None, LOOPBACK, PRIVATE, PUBLIC])
@pytest.mark.parametrize("address", NEVER)
def test_link_local_metadata_multicast_and_reserved_are_never_reached(address, origin):
    assert "a download never needs one" in address_refusal(address, origin)


@pytest.mark.parametrize(
    "address,kind",
    [
        ("127.0.0.1", LOOPBACK),
        ("127.8.9.10", LOOPBACK),
        ("::1", LOOPBACK),
        ("0.0.0.0", LOOPBACK),  # reaches this machine
        ("::ffff:127.0.0.1", LOOPBACK),
        ("10.0.0.5", PRIVATE),
        ("172.16.3.4", PRIVATE),
        ("192.168.1.1", PRIVATE),
        ("100.64.0.1", PRIVATE),  # carrier-grade NAT: not the internet
        ("fd12:3456::1", PRIVATE),
        ("::ffff:10.0.0.5", PRIVATE),
        ("93.184.216.34", PUBLIC),
        ("2606:4700::1111", PUBLIC),
    ],
)
def test_address_kinds(address, kind):
    assert address_kind(address) == kind


def test_a_url_leads_only_to_its_own_kind_of_address_or_a_wider_one():
    allowed = {
        # origin: kinds it may be redirected to
        LOOPBACK: {"127.0.0.1", "10.0.0.5", "93.184.216.34"},
        PRIVATE: {"10.0.0.5", "93.184.216.34"},
        PUBLIC: {"93.184.216.34"},
    }
    for origin, reachable in allowed.items():
        for address in ("127.0.0.1", "10.0.0.5", "93.184.216.34"):
            refusal = address_refusal(address, origin)
            assert (refusal is None) == (address in reachable), (origin, address)
    assert address_refusal("10.0.0.5", PUBLIC) == (
        "is a private address, and the URL given was on a public one"
    )
    # The user's own URL may be anywhere but where no download goes.
    assert address_refusal("127.0.0.1", None) is None
    assert address_refusal("10.0.0.5", None) is None


def test_the_nearest_address_of_a_url_sets_its_kind():
    assert widest_origin(["93.184.216.34", "127.0.0.1"]) == LOOPBACK
    assert widest_origin(["93.184.216.34", "10.1.1.1"]) == PRIVATE
    assert widest_origin(["93.184.216.34"]) == PUBLIC


def test_every_address_a_name_resolves_to_is_checked(monkeypatch):
    monkeypatch.setattr(addresses, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.9"])
    with pytest.raises(TargetRefused, match=r"mirror.test resolves to 10.0.0.9, which is a priv"):
        check_target("https://mirror.test/a.zip", PUBLIC)
    assert check_target("https://mirror.test/a.zip", PRIVATE) == ["93.184.216.34", "10.0.0.9"]


@pytest.mark.parametrize(
    "url,expected",
    [
        ("file:///etc/passwd", "it is file://"),
        ("gopher://127.0.0.1/", "it is gopher://"),
        ("//127.0.0.1/x", "it is no scheme"),
        ("http:///x", "it names no host"),
        ("http://127.0.0.1:port/", "not a valid URL"),
        ("http://" + "a" * 70 + ".test/", "is not a valid name"),
    ],
)
def test_urls_no_download_reads(url, expected):
    with pytest.raises(TargetRefused, match=expected):
        check_target(url, LOOPBACK)
