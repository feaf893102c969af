"""The StateStore on etcd: the only package that imports the etcd client.

One module per record kind (directory, removal, leases, legs, bindings, subscriptions,
publications, presence, watching, inspection, maintenance), each a part of `EtcdStore` built on
`kv.EtcdKv` (the reads every kind makes) and `client.EtcdClient` (the connection, each
request's deadline and the error guard).

A failure to reach etcd surfaces as `StoreUnavailable`; callers decide whether that
means a 503 (SUBSCRIBE, REGISTER) or carrying on without BLF (calls). Every other error
(a request etcd refuses, a record we cannot read) is a bug and propagates as it is: the
one boundary that answers requests logs it with its traceback (`unavailability`).
"""

from __future__ import annotations

from statestore.etcd.bindings import EtcdBindings
from statestore.etcd.client import GRPC_OPTIONS, NOSPACE_ERROR, UNAVAILABLE_CODES, compacted, unavailability
from statestore.etcd.directory import DIRECTORY_ATTEMPTS, EtcdDirectory
from statestore.etcd.inspection import EtcdInspection
from statestore.etcd.kv import MAX_TXN_OPS, SNAPSHOT_PAGE
from statestore.etcd.leases import EtcdLeases
from statestore.etcd.legs import CALLS_PER_REQUEST, EtcdLegs
from statestore.etcd.maintenance import DEFRAG_TIMEOUT, EtcdMaintenance
from statestore.etcd.presence import EtcdPresenceAdmin
from statestore.etcd.publications import EtcdPublications
from statestore.etcd.removal import EtcdAccountRemoval
from statestore.etcd.subscriptions import EPOCH_ATTEMPTS, EtcdSubscriptions
from statestore.etcd.watching import EtcdWatching
from statestore.etcd_failover import split_endpoint, split_endpoints
from statestore.stored import REGISTRATION_GRACE_SECONDS

__all__ = [
    "CALLS_PER_REQUEST", "DEFRAG_TIMEOUT", "DIRECTORY_ATTEMPTS", "EPOCH_ATTEMPTS", "GRPC_OPTIONS", "MAX_TXN_OPS",
    "NOSPACE_ERROR", "REGISTRATION_GRACE_SECONDS", "SNAPSHOT_PAGE", "UNAVAILABLE_CODES", "EtcdStore",
    "compacted", "split_endpoint", "split_endpoints", "unavailability",
]


class EtcdStore(
    EtcdDirectory,
    EtcdAccountRemoval,
    EtcdLeases,
    EtcdLegs,
    EtcdBindings,
    EtcdSubscriptions,
    EtcdPublications,
    EtcdPresenceAdmin,
    EtcdWatching,
    EtcdInspection,
    EtcdMaintenance,
):
    """StateStore adapter of one zone's etcd. The gRPC channel is created on first use, in
    the process using it."""
