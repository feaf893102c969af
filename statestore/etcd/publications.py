"""Publications (RFC 3903) on etcd.

A publication is one key, keys.pub(account, etag), without a lease: an expired one is
removed by the sweep of the notifier responsible for its account (kemi/blf_notifier.py
says why no lease); watchers stop seeing it at its expiry whether or not it has been
swept (the mirror re-renders then).
"""

from __future__ import annotations

from statestore import codec, keys
from statestore.domain.model import Publication
from statestore.etcd.kv import EtcdKv


class EtcdPublications(EtcdKv):
    """Publications."""

    def get_publication(self, aor: str, etag: str) -> tuple[Publication, int] | None:
        """The publication and its mod revision; None when there is none under that tag."""
        with self._guard():
            value, meta = self.client.get(keys.pub(aor, etag))
        if value is None:
            return None
        return codec.decode_publication(value), int(meta.mod_revision)

    def put_publication(self, publication: Publication, replaces: tuple[str, int] | None = None) -> bool:
        """Store a publication under its (new) entity-tag and, with `replaces` (etag, mod
        revision), delete the one it replaces, in one transaction: the new key must not
        exist and the old one must be as read. Of two refreshes of one publication at once
        (through two instances) one wins; the other gets False (its PUBLISH: 412)."""
        tx = self.client.transactions
        key = keys.pub(publication.account, publication.etag)
        compare = [tx.version(key) == 0]
        success = [tx.put(key, codec.encode_publication(publication))]
        if replaces is not None:
            old_key = keys.pub(publication.account, replaces[0])
            compare.append(tx.mod(old_key) == replaces[1])
            success.append(tx.delete(old_key))
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
        return bool(ok)

    def publications_of(self, aor: str) -> list[tuple[Publication, int]]:
        """An account's publications and their mod revisions (a few: publication.admit caps them)."""
        return [(codec.decode_publication(kv.value), kv.mod_revision) for kv in self.range(keys.pubs_of(aor))]

    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool:
        """Delete a publication; with `mod_revision`, only if unchanged since read; with
        `expected` (the sweep, whose mirror keeps no revisions), only if its value is still
        that one. False when it is gone or changed (or, unguarded, was not there)."""
        tx = self.client.transactions
        key = keys.pub(aor, etag)
        compare = [tx.version(key) > 0]
        if mod_revision is not None:
            compare.append(tx.mod(key) == mod_revision)
        if expected is not None:
            compare.append(tx.value(key) == codec.encode_publication(expected))
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=[tx.delete(key)], failure=[])
        return bool(ok)
