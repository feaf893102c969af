"""The notifier's sweep of expired publications (kemi/blf_notifier.py): each deleted once,
guarded by the value the mirror saw; one the store could not take is tried again."""

from __future__ import annotations

from typing import Any

import pytest

from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Publication
from tests.unit.test_notifier import ALICE, NotifierStore, clock, ksr, lab  # noqa: F401 - fixtures

PIDF = '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com"/>'


class SweptStore(NotifierStore):
    """The notifier's store, recording each sweep and down when told."""

    def __init__(self, items: list[tuple[str, bytes]]) -> None:
        super().__init__(items)
        self.deleted: list[tuple[str, str, Publication | None]] = []
        self.down = False

    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool:
        if self.down:
            raise StoreUnavailable("etcd down")
        self.deleted.append((aor, etag, expected))
        return super().delete_publication(aor, etag, mod_revision, expected)


def notifier_with(fake: Any, *pubs: Publication) -> tuple[Any, SweptStore]:
    notifier, store = lab(fake, store_type=SweptStore)
    for publication in pubs:
        assert store.put_publication(publication)
    return notifier, store


def test_an_expired_publication_is_deleted_once_compared_on_its_value(
    ksr: Any, clock: list[float], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import blf_notifier

    now = blf_notifier.time.time()
    expired = Publication(ALICE, "presence", "e1", now + 0.5, "application/pidf+xml", PIDF, now - 10, "ks1")
    alive = Publication(ALICE, "presence", "e2", now + 3600, "application/pidf+xml", PIDF, now - 10, "ks1")
    notifier, store = notifier_with(ksr, expired, alive)
    notifier.tick()
    assert store.deleted == []
    clock[0] += 1.1
    notifier.tick()
    assert store.deleted == [(ALICE, "e1", expired)]
    clock[0] += 1.1
    notifier.tick()
    assert store.deleted == [(ALICE, "e1", expired)], "swept once"


def test_a_sweep_the_store_refuses_is_tried_again(
    ksr: Any, clock: list[float], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    import blf_notifier

    now = blf_notifier.time.time()
    expired = Publication(ALICE, "presence", "e1", now + 0.5, "application/pidf+xml", PIDF, now - 10, "ks1")
    notifier, store = notifier_with(ksr, expired)
    notifier.tick()
    store.down = True
    clock[0] += 1.1
    notifier.tick()
    assert store.deleted == [] and "left for later" in ksr.logged("warn")
    store.down = False
    clock[0] += 1.1
    notifier.tick()
    assert store.deleted == [(ALICE, "e1", expired)]
