"""SIP errors as values: raised by the core, answered in one place by the Kamailio adapter."""

from __future__ import annotations


class SipError(Exception):
    """A request that must be answered with `status` `reason` and `headers`."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})


class StoreUnavailable(Exception):
    """The StateStore cannot be reached; SUBSCRIBE and REGISTER get 503 with Retry-After.
    `endpoint` names the store that could not be reached (its members), when known: with
    zones, only that zone is flagged down."""

    def __init__(self, message: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class LeaseGone(Exception):
    """A write named a lease the store no longer knows (it expired): nothing was written;
    write again under the lease granted next (not an outage: no 503, no "store down")."""


class Contended(Exception):
    """A compare-and-swap lost to other writers every time it was tried: the store is
    reachable, so this is not StoreUnavailable (no 503, no "store down" flag); try later."""


RETRY_AFTER_SECONDS = 5


def store_unavailable_error() -> SipError:
    return SipError(503, "Service Unavailable", {"Retry-After": str(RETRY_AFTER_SECONDS)})
