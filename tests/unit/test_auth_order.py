"""kemi/blf_auth.authenticate on the fake KSR (issue 12, findings 2, 8 and 13): a challenge
is stateless; the transaction is made only once the digest verified, and before the nonce
count advances; a retransmission that finds its transaction answers nothing more; every
challenge after bad credentials is logged as a refusal, a first challenge is not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statestore import codec
from statestore.cli_directory import new_account
from statestore.domain import digest
from statestore.domain.directory import rules_to_record
from statestore.domain.policy import DomainRules
from tests.fakeksr import FakeContext, FakeKSR, back_htables, install

SECRET = "unit-secret"
ALICE = new_account("alice", "example.com", "alice-password")
NOW = 1_800_000_000.0


@pytest.fixture
def ksr(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeKSR, dict[str, str]]]:
    fake = install()
    table = back_htables(fake)
    monkeypatch.setenv("BLF_AUTH_SECRET", SECRET)
    import blf_auth
    import blf_directory

    monkeypatch.setattr(blf_auth, "_policy", None)
    monkeypatch.setattr(blf_directory, "_directory", None)
    monkeypatch.setattr(blf_auth.time, "time", lambda: NOW)
    table["accounts/alice@example.com"] = codec.encode(ALICE.to_dict()).decode()
    table["domains/example.com"] = codec.encode(rules_to_record(DomainRules("example.com"))).decode()
    fake.pvs.update({
        "$shv(blf_dir)": "7", "$rm": "REGISTER", "$ou": "sip:example.com", "$pr": "udp", "$si": "192.0.2.7",
        "$sp": "5060",
    })
    yield fake, table


def _credentials(fake: FakeKSR, password: str = "alice-password", nc: int = 1) -> str:
    """Alice's Authorization for a nonce ks1 minted now, put on the request."""
    policy = digest.DigestPolicy(secret=SECRET.encode(), instance="ks1")
    nonce = digest.mint_nonce(policy, NOW, b"r" * digest.NONCE_RANDOM_BYTES)
    unsigned = digest.Credentials("alice", "example.com", nonce, "sip:example.com", "", "MD5", "auth", f"{nc:08x}", "c")
    response = digest.expected_response(unsigned, digest.ha1("MD5", "alice", "example.com", password), "REGISTER")
    value = (
        f'Digest username="alice", realm="example.com", nonce="{nonce}", uri="sip:example.com", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce="c"'
    )
    fake.pvs.update({"$hdrc(Authorization)": 1, "$(hdr(Authorization)[0])": value})
    return nonce


def _authenticate(fake: FakeKSR) -> Any:
    import blf_auth

    return blf_auth.authenticate(FakeContext(None), "example.com", store_required=True)  # type: ignore[arg-type]


def _order(fake: FakeKSR) -> list[str]:
    wanted = ("tm.t_newtran", "htable.sht_sets", "sl.send_reply")
    return [name for name, _ in fake.calls if name in wanted]


def test_a_first_challenge_is_stateless_and_not_a_refusal(ksr: tuple[FakeKSR, dict[str, str]]) -> None:
    fake, _ = ksr
    assert _authenticate(fake) is None
    assert _order(fake) == ["sl.send_reply"]
    assert fake.calls_of("sl.send_reply") == [(401, "Unauthorized")]
    assert "refused" not in fake.logged()


def test_a_wrong_password_is_challenged_statelessly_and_logged_as_refused(
    ksr: tuple[FakeKSR, dict[str, str]],
) -> None:
    fake, table = ksr
    nonce = _credentials(fake, password="not-the-password")
    assert _authenticate(fake) is None
    assert _order(fake) == ["sl.send_reply"]
    assert nonce not in table
    assert fake.logged("notice") == (
        "blf: refused REGISTER from udp:192.0.2.7:5060: 401 Unauthorized - wrong credentials for alice@example.com\n"
    )


def test_verified_credentials_make_the_transaction_before_the_nonce_count_advances(
    ksr: tuple[FakeKSR, dict[str, str]],
) -> None:
    fake, table = ksr
    nonce = _credentials(fake)
    assert _authenticate(fake) == "alice@example.com"
    assert _order(fake) == ["tm.t_newtran", "htable.sht_sets"]
    assert table[nonce] == "00000001:0000000000000000"


def test_a_retransmission_whose_transaction_exists_answers_nothing_and_counts_nothing(
    ksr: tuple[FakeKSR, dict[str, str]],
) -> None:
    fake, table = ksr
    nonce = _credentials(fake)
    fake.answers["tm.t_newtran"] = 0  # tm found the first copy's transaction: absorbed
    assert _authenticate(fake) is None
    assert _order(fake) == ["tm.t_newtran"]
    assert nonce not in table


def test_a_replayed_nonce_count_is_answered_stale_through_its_transaction(
    ksr: tuple[FakeKSR, dict[str, str]],
) -> None:
    fake, table = ksr
    nonce = _credentials(fake, nc=1)
    table[nonce] = "00000001"
    assert _authenticate(fake) is None
    assert _order(fake) == ["tm.t_newtran", "sl.send_reply"]
    assert "stale=true" in str(fake.calls_of("hdr.append_to_reply"))
    assert "refused REGISTER from udp:192.0.2.7:5060: 401 Unauthorized - nonce count 00000001 reused" in fake.logged()


def test_a_transaction_that_cannot_be_made_is_a_500(ksr: tuple[FakeKSR, dict[str, str]]) -> None:
    from statestore.domain.errors import SipError

    fake, _ = ksr
    _credentials(fake)
    fake.answers["tm.t_newtran"] = -2  # E_OUT_OF_MEM
    with pytest.raises(SipError) as raised:
        _authenticate(fake)
    assert raised.value.status == 500
