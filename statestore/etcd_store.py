"""Compatibility: the etcd adapter is the package statestore.etcd; its names as they were."""

from __future__ import annotations

from statestore.etcd import (
    CALLS_PER_REQUEST,
    DEFRAG_TIMEOUT,
    DIRECTORY_ATTEMPTS,
    EPOCH_ATTEMPTS,
    GRPC_OPTIONS,
    MAX_TXN_OPS,
    NOSPACE_ERROR,
    REGISTRATION_GRACE_SECONDS,
    SNAPSHOT_PAGE,
    UNAVAILABLE_CODES,
    EtcdStore,
    compacted,
    split_endpoint,
    split_endpoints,
    unavailability,
)
from statestore.store import KeyValue, WatchCallback, WatchEvent

__all__ = [
    "CALLS_PER_REQUEST", "DEFRAG_TIMEOUT", "DIRECTORY_ATTEMPTS", "EPOCH_ATTEMPTS", "GRPC_OPTIONS", "MAX_TXN_OPS",
    "NOSPACE_ERROR", "REGISTRATION_GRACE_SECONDS", "SNAPSHOT_PAGE", "UNAVAILABLE_CODES", "EtcdStore", "KeyValue",
    "WatchCallback", "WatchEvent", "compacted", "split_endpoint", "split_endpoints", "unavailability",
]
