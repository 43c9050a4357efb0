"""Outbound delivery against a real peer operator (tests/support/peer.py): mutual TLS, refusals, pooling, DSN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import pytest
from cryptography import x509
from support.harness import lab_report, make_kit
from support.peer import PeerOperator

from mssante_base.trust.revocation import RevocationLists, load_certificates
from mssante_base.trust.tls import client_context
from mssante_operator.demo_kit import TRUST_CA_CERT, TRUST_CA_CRL, free_ports
from mssante_operator.smtp.next_hop import NextHop, NextHopError, NextHops, parse_route
from mssante_operator.smtp.outbound import (
    OutboundClient,
    OutgoingMessage,
    OutgoingRecipient,
    RecipientResult,
)
from mssante_operator.trust_space.liste_blanche import parse_liste_blanche

SENDER = "dr.martin@hopital-demo.mssante.fr"
LABO = "labo-biolab.mssante.fr"
CLINIQUE = "clinique-ouest.mssante.fr"
EHPAD = "ehpad-les-tilleuls.mssante.fr"


class Kit:
    def __init__(self, home: Path, manifest: dict[str, Any]) -> None:
        self.home, self.manifest = home, manifest
        self.liste_blanche = parse_liste_blanche((home / "listeblanche.xml").read_bytes())
        self.crl = RevocationLists.load([home / TRUST_CA_CRL], load_certificates(home / TRUST_CA_CERT))

    def peer(self, name: str = "labo", **options: Any) -> PeerOperator:
        return PeerOperator(self.home, self.manifest, name, **options)

    def client(self, routes: dict[str, str], **options: Any) -> OutboundClient:
        m = self.manifest
        tls = client_context(self.home / m["operator_cert"], self.home / m["operator_key"], self.home / m["trust_ca"])
        return OutboundClient(hostname="mx.hopital-demo.mssante.fr", client_tls=tls,
                              liste_blanche=lambda: self.liste_blanche, revocations=lambda: self.crl,
                              hops=options.pop("hops", None) or NextHops(routes), **options)

    @property
    def operator_dn(self) -> str:
        cert = x509.load_pem_x509_certificate((self.home / self.manifest["operator_cert"]).read_bytes())
        return cert.subject.rfc4514_string()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    home = tmp_path_factory.mktemp("outbound") / "home"
    return Kit(home, make_kit(home))


def message(*addresses: str, key: int = 1, sender: str = SENDER, **fields: Any) -> OutgoingMessage:
    recipients = tuple(OutgoingRecipient(key + i, address) for i, address in enumerate(addresses))
    return OutgoingMessage(sender=sender, recipients=recipients, raw=lab_report(SENDER, list(addresses)), **fields)


def with_client(client: OutboundClient, body: Callable[[OutboundClient], Coroutine[Any, Any, Any]]) -> Any:
    async def run() -> Any:
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(run())


def send(client: OutboundClient, domain: str, *messages: OutgoingMessage) -> list[list[RecipientResult]]:
    """Send the messages one after the other on one client (so on one loop, sharing its pool)."""
    async def body(c: OutboundClient) -> list[list[RecipientResult]]:
        return [await c.send(domain, m) for m in messages]

    return with_client(client, body)


def kinds(results: list[RecipientResult]) -> list[str]:
    return [r.kind for r in results]


# -- delivery and pooling -----------------------------------------------------------------------

def test_messages_share_one_connection_and_present_the_operator_certificate(kit: Kit) -> None:
    with kit.peer() as peer:
        sent = [message(f"bio{i}@{LABO}", key=i) for i in range(3)]
        results = send(kit.client({LABO: peer.route}), LABO, *sent)
        assert [kinds(r) for r in results] == [["delivered"]] * 3
        assert results[0][0].reply.line.startswith("250 ") and results[0][0].remote_mta == "127.0.0.1"
        received = peer.wait_for(3)
        assert peer.connections == 1 and {r.connection for r in received} == {1}
        assert [r.content for r in received] == [m.raw for m in sent]
        assert received[0].mail_from == SENDER and received[0].rcpt_tos == [f"bio0@{LABO}"]
        assert {r.client_dn for r in received} == {kit.operator_dn}


def test_null_sender_is_delivered(kit: Kit) -> None:
    with kit.peer() as peer:
        [results] = send(kit.client({LABO: peer.route}), LABO, message(f"bio@{LABO}", sender=""))
        assert kinds(results) == ["delivered"]
        assert peer.wait_for(1)[0].mail_from == "<>"


def test_connections_per_peer_are_bounded(kit: Kit) -> None:
    with kit.peer() as peer:
        async def body(client: OutboundClient) -> list[list[RecipientResult]]:
            return await asyncio.gather(*(client.send(LABO, message(f"b{i}@{LABO}", key=i)) for i in range(8)))

        results = with_client(kit.client({LABO: peer.route}, per_peer_connections=2), body)
        assert all(kinds(r) == ["delivered"] for r in results)
        assert len(peer.wait_for(8)) == 8
        assert peer.peak_connections == 2 and peer.connections == 2


def test_idle_sessions_are_closed(kit: Kit) -> None:
    with kit.peer() as peer:
        async def body(client: OutboundClient) -> list[RecipientResult]:
            await client.send(LABO, message(f"a@{LABO}"))
            deadline = time.monotonic() + 20
            while peer.open_connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert peer.open_connections == 0
            return await client.send(LABO, message(f"b@{LABO}"))

        assert kinds(with_client(kit.client({LABO: peer.route}, idle_timeout=0.2), body)) == ["delivered"]
        assert peer.connections == 2


def test_a_broken_pooled_connection_is_replaced(kit: Kit) -> None:
    with kit.peer() as peer:
        async def body(client: OutboundClient) -> list[list[RecipientResult]]:
            first = await client.send(LABO, message(f"a@{LABO}"))
            await asyncio.to_thread(peer.stop)   # the pooled session dies with the peer
            await asyncio.to_thread(peer.start)
            return [first, await client.send(LABO, message(f"b@{LABO}"))]

        results = with_client(kit.client({LABO: peer.route}), body)
        assert [kinds(r) for r in results] == [["delivered"], ["delivered"]]
        assert [r.rcpt_tos for r in peer.wait_for(2)] == [[f"a@{LABO}"], [f"b@{LABO}"]]
        assert peer.connections == 2


def test_a_pooled_connection_failing_at_rset_is_retried_on_a_fresh_one(kit: Kit) -> None:
    with kit.peer() as peer:
        peer.answer("RSET", "421 4.4.2 closing")
        results = send(kit.client({LABO: peer.route}), LABO, message(f"a@{LABO}"), message(f"b@{LABO}"))
        assert [kinds(r) for r in results] == [["delivered"], ["delivered"]]
        assert [r.connection for r in peer.wait_for(2)] == [1, 2]


def test_refused_sender_concerns_every_recipient(kit: Kit) -> None:
    with kit.peer() as peer:
        peer.answer("MAIL", "553 5.7.1 sender refused")
        first, second = send(kit.client({LABO: peer.route}), LABO, message(f"a@{LABO}", f"b@{LABO}"),
                             message(f"c@{LABO}"))
        assert kinds(first) == ["permanent", "permanent"] and first[0].reply.line == "553 5.7.1 sender refused"
        assert kinds(second) == ["delivered"]


# -- replies --------------------------------------------------------------------------------------

def test_temporary_refusal_then_delivery(kit: Kit) -> None:
    with kit.peer() as peer:
        peer.answer("RCPT", "451 4.3.0 try later")
        first, second = send(kit.client({LABO: peer.route}), LABO, message(f"a@{LABO}"), message(f"a@{LABO}"))
        assert kinds(first) == ["temporary"] and first[0].reply.line == "451 4.3.0 try later"
        assert kinds(second) == ["delivered"]
        assert len(peer.wait_for(1)) == 1


def test_permanent_refusal_of_one_recipient(kit: Kit) -> None:
    with kit.peer() as peer:
        peer.answer("RCPT", "550 5.1.1 no such user", address=f"gone@{LABO}")
        [results] = send(kit.client({LABO: peer.route}), LABO, message(f"gone@{LABO}", f"here@{LABO}"))
        assert [(r.key, r.kind) for r in results] == [(1, "permanent"), (2, "delivered")]
        assert results[0].reply.line == "550 5.1.1 no such user"
        assert peer.wait_for(1)[0].rcpt_tos == [f"here@{LABO}"]


@pytest.mark.parametrize(("reply", "kind"), [("554 5.6.0 content refused", "permanent"),
                                             ("452 4.3.1 insufficient storage", "temporary")])
def test_refusal_at_data_concerns_every_accepted_recipient(kit: Kit, reply: str, kind: str) -> None:
    with kit.peer() as peer:
        peer.answer("RCPT", "550 5.1.1 no such user", address=f"gone@{LABO}")
        peer.answer("DATA", reply)
        [results] = send(kit.client({LABO: peer.route}), LABO,
                         message(f"a@{LABO}", f"gone@{LABO}", f"b@{LABO}"))
        assert kinds(results) == [kind, "permanent", kind]
        assert results[0].reply.line == reply and results[1].reply.line.startswith("550")
        assert peer.received == []


def test_peer_down_is_temporary(kit: Kit) -> None:
    [port] = free_ports(1)
    [results] = send(kit.client({LABO: f"127.0.0.1:{port}"}), LABO, message(f"a@{LABO}", f"b@{LABO}"))
    assert kinds(results) == ["temporary", "temporary"]
    assert results[0].reply.line == f"connection refused by 127.0.0.1:{port}"


# -- identity of the peer -------------------------------------------------------------------------

def refused(kit: Kit, peer: PeerOperator, domain: str) -> RecipientResult:
    """Send to ``domain`` routed to ``peer``: nothing must arrive; the (temporary) result."""
    with peer:
        [results] = send(kit.client({domain: peer.route}), domain, message(f"a@{domain}"))
        assert peer.received == []
    assert kinds(results) == ["temporary"]
    return results[0]


def test_revoked_peer_certificate_is_refused(kit: Kit) -> None:
    result = refused(kit, kit.peer("clinique"), CLINIQUE)
    assert result.reply.line.startswith("TLS: certificate of 127.0.0.1:") and result.reply.line.endswith("is revoked")


def test_certificate_not_listed_for_the_domain_is_refused(kit: Kit) -> None:
    peer = kit.peer("labo")
    result = refused(kit, peer, EHPAD)
    assert result.reply.line == f"TLS: certificate DN {peer.dn} is not listed for {EHPAD} in the liste blanche"


def test_rogue_certificate_is_refused(kit: Kit) -> None:
    rogue = kit.manifest["rogue"]
    result = refused(kit, kit.peer("labo", cert=rogue["cert"], key=rogue["key"]), LABO)
    assert result.reply.line.startswith("TLS: certificate of 127.0.0.1:") and "not accepted" in result.reply.line


def test_peer_without_starttls_gets_nothing_in_clear(kit: Kit) -> None:
    result = refused(kit, kit.peer("labo", starttls=False), LABO)
    assert "does not offer STARTTLS" in result.reply.line


# -- DSN ------------------------------------------------------------------------------------------

def dsn_message() -> OutgoingMessage:
    recipient = OutgoingRecipient(7, f"a@{LABO}", notify=("SUCCESS", "FAILURE"), orcpt=f"rfc822;A+b=c@{LABO}")
    return OutgoingMessage(sender=SENDER, recipients=(recipient,), raw=lab_report(SENDER, [f"a@{LABO}"]),
                           envid="lot 42+é", ret="HDRS")


def test_dsn_parameters_are_passed_when_the_peer_advertises_dsn(kit: Kit) -> None:
    with kit.peer(dsn=True) as peer:
        [[result]] = send(kit.client({LABO: peer.route}), LABO, dsn_message())
        assert result.kind == "delivered" and result.peer_dsn
        received = peer.wait_for(1)[0]
        assert received.mail_params == {"RET": "HDRS", "ENVID": "lot+2042+2B+C3+A9"}
        assert received.rcpt_params == [{"NOTIFY": "SUCCESS,FAILURE", "ORCPT": f"rfc822;A+2Bb+3Dc@{LABO}"}]


def test_dsn_parameters_are_withheld_from_a_peer_without_dsn(kit: Kit) -> None:
    with kit.peer(dsn=False) as peer:
        [[result]] = send(kit.client({LABO: peer.route}), LABO, dsn_message())
        assert result.kind == "delivered" and not result.peer_dsn
        received = peer.wait_for(1)[0]
        assert received.mail_params == {} and received.rcpt_params == [{}]


# -- next hops ------------------------------------------------------------------------------------

def fake_dns(records: dict[tuple[str, str], list[str] | Exception]) -> Callable[[str, str], Any]:
    """An injected lookup standing for Internet DNS, which tests cannot reach."""
    async def lookup(name: str, rdtype: str) -> list[str]:
        answer = records.get((name, rdtype), [])
        if isinstance(answer, Exception):
            raise answer
        return answer

    return lookup


def resolve(hops: NextHops, domain: str) -> list[NextHop]:
    return asyncio.run(hops.resolve(domain))


def test_static_route_comes_first() -> None:
    hops = NextHops({"Labo.Example.FR": "127.0.0.1:2525"}, lookup=fake_dns({("labo.example.fr", "MX"): ["10 mx."]}))
    assert resolve(hops, "labo.example.fr.") == [NextHop("127.0.0.1", 2525)]


def test_mx_records_by_preference_then_address_records() -> None:
    hops = NextHops({}, lookup=fake_dns({
        ("a.fr", "MX"): ["20 mx2.a.fr.", "10 mx1.a.fr.", "30 mx3.a.fr."],
        ("b.fr", "AAAA"): ["2001:db8::1"],
    }))
    assert [h.host for h in resolve(hops, "a.fr")] == ["mx1.a.fr", "mx2.a.fr", "mx3.a.fr"]
    assert resolve(hops, "b.fr") == [NextHop("b.fr", 25)]


@pytest.mark.parametrize(("answer", "temporary", "text"), [
    (dns.resolver.NXDOMAIN(), False, "domain x.fr does not exist"),
    (dns.exception.Timeout(), True, "timed out"),
    (["0 ."], False, "does not accept mail (null MX)"),
    ([], False, "neither MX nor address records"),
])
def test_next_hop_failures(answer: list[str] | Exception, temporary: bool, text: str) -> None:
    with pytest.raises(NextHopError) as caught:
        resolve(NextHops({}, lookup=fake_dns({("x.fr", "MX"): answer})), "x.fr")
    assert caught.value.temporary is temporary and text in caught.value.text


def test_unknown_domain_is_a_permanent_result(kit: Kit) -> None:
    hops = NextHops({}, lookup=fake_dns({("nowhere.fr", "MX"): dns.resolver.NXDOMAIN()}))
    [results] = send(kit.client({}, hops=hops), "nowhere.fr", message("a@nowhere.fr"))
    assert kinds(results) == ["permanent"] and "does not exist" in results[0].reply.line


@pytest.mark.parametrize(("value", "hop"), [("mx.fr:2525", NextHop("mx.fr", 2525)), ("mx.fr", NextHop("mx.fr")),
                                            ("[::1]:26", NextHop("::1", 26))])
def test_parse_route(value: str, hop: NextHop) -> None:
    assert parse_route(value) == hop


@pytest.mark.parametrize("value", ["mx.fr:", ":25", "mx.fr:port", "mx.fr:70000", "[::1]x"])
def test_bad_routes(value: str) -> None:
    with pytest.raises(ValueError, match="route"):
        parse_route(value)
