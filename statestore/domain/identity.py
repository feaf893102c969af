"""Who a request is from and whom it is for, resolved once, in one pure function (issue 7 §2).

The adapter copies the request's facts into `RequestFacts` (every identity-bearing
header, whether or not it counts) and passes a view of the directory; `resolve` answers
with the accounts, and `check_reach` with the one refusal a caller answers.

Decisions:

- The caller is the account that authenticated: digest username and realm, the realm
  its domain. Never From, P-Asserted-Identity or a display name: they are the caller's to
  write (rewritten by PBXs, anonymous per RFC 3323), so they change nothing here.
- The digest username must be the account's user, not an alias. HA1 is computed over
  the username (RFC 7616 §3.4.2): accepting aliases would mean an HA1 per alias or a
  password check that no phone performs; and aliases are often public (a DID), so they
  would make a guessable login name. An alias as username authenticates nobody.
- The callee (an INVITE) or presentity (a SUBSCRIBE) is the account that the Request-URI
  user names in the Request-URI domain: an account user or an alias of that domain, in
  any number form the domain declares equivalent (`policy.NumberRule`). The exact form
  wins; when only other forms resolve and they name different accounts, nothing does (a
  provisioning conflict is not guessed through). Users compare case-sensitively (RFC
  3261 §19.1.4), domains not.
- The Request-URI domain must be a served domain: a host that is not one (another
  provider, an IP address, an IPv6 literal) resolves to no domain and no callee. One
  exception: a Request-URI whose host is this server's own address (`ruri_is_us`, a phone
  set up with the server's IP) names a user of the caller's own domain, the one tenant the
  request can be for without trusting a header. The To header is never read instead: it
  is the sender's to write.
- `;user=phone` (RFC 3261 §19.1.1): the user is a telephone-subscriber: its parameters
  (`;phone-context=`, `;isub=`...) are dropped and its visual separators (`-.()`, RFC
  3966 §5.1.1) removed; the tenant is still the Request-URI domain, never a
  phone-context. Without it the user is taken as written.
- A user with `@` in it (a `user@host` form of another domain packed into the user part)
  or empty names nobody.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol

from statestore.domain.errors import SipError
from statestore.domain.policy import Rules, could_call, served

# RFC 3966 §5.1.1 visual separators, allowed in a telephone-subscriber.
_VISUAL_SEPARATORS = re.compile(r"[-.()]")
# Reason phrases of the refusals (see `check_reach`): one 403 phrase whatever the cause,
# so a refusal says nothing about which accounts exist.
FORBIDDEN = "Forbidden"
NOT_FOUND = "Not Found"
DOMAIN_NOT_SERVED = "Not Found - Domain Not Served Here"


class DirectoryView(Protocol):
    """What `resolve` asks of the directory: exact lookups within one domain (lower case).
    The store's cache implements it; `MappingDirectory` is a plain in-memory one."""

    def account(self, domain: str, user: str) -> str | None:
        """The account `user@domain` if `user` is an account's user in `domain`."""
        ...

    def alias(self, domain: str, alias: str) -> str | None:
        """The account (`user@domain`) that `alias` is an alias of in `domain`."""
        ...


@dataclass(frozen=True)
class MappingDirectory:
    """A directory held in memory: `accounts` are `user@domain`, `aliases` map
    `alias@domain` to the account `user@domain` (domains lower case)."""

    accounts: frozenset[str]
    aliases: dict[str, str]

    def account(self, domain: str, user: str) -> str | None:
        aor = f"{user}@{domain}"
        return aor if aor in self.accounts else None

    def alias(self, domain: str, alias: str) -> str | None:
        return self.aliases.get(f"{alias}@{domain}")


@dataclass(frozen=True)
class RequestFacts:
    """What the SIP path knows of a request's identities, as received.

    `auth_user` and `auth_realm` are the digest credentials that verified (None: not
    authenticated). `ruri_user`, `ruri_host` and `ruri_user_param` (the URI's `user=`
    parameter) are the Request-URI's; `ruri_is_us` says its host is this server's own
    address. From, To, P-Asserted-Identity and the display name are carried so that tests
    can show they change nothing.
    """

    auth_user: str | None
    auth_realm: str | None
    ruri_user: str
    ruri_host: str
    ruri_user_param: str = ""
    ruri_is_us: bool = False
    from_uri: str = ""
    to_uri: str = ""
    pai: str = ""
    display: str = ""


@dataclass(frozen=True)
class Identities:
    """A request's resolved identities.

    `caller`: the authenticated account (the watcher, for a SUBSCRIBE), or None.
    `callee_domain`: the served domain the Request-URI names, or None.
    `callee`: the account the Request-URI resolves to in it (the presentity), or None.
    `entity`: the URI the request was sent to, for NOTIFY `entity` (RFC 4235 §4.1): a
    watcher of an alias sees the alias, in the form it dialled; None when there is no callee.
    """

    caller: str | None
    callee_domain: str | None
    callee: str | None
    entity: str | None


def resolve(facts: RequestFacts, directory: DirectoryView, rules: Rules) -> Identities:
    """The caller and callee of a request, from its facts and the directory (see module)."""
    caller = _caller(facts, directory, rules)
    if facts.ruri_is_us:
        domain = _domain(caller) if caller is not None else None
    else:
        domain = _served_domain(facts.ruri_host, rules)
    if domain is None:
        return Identities(caller, None, None, None)
    user = dialled_user(facts.ruri_user, facts.ruri_user_param)
    callee = _callee(user, domain, directory, rules) if user is not None else None
    return Identities(caller, domain, callee, _entity(facts, domain) if callee is not None else None)


def _entity(facts: RequestFacts, domain: str) -> str:
    """The Request-URI as the watcher wrote it (user as sent, the domain lower case)."""
    phone = ";user=phone" if facts.ruri_user_param.lower() == "phone" else ""
    return f"sip:{facts.ruri_user}@{domain}{phone}"


def check_reach(identities: Identities, rules: Rules) -> None:
    """Refuse a request its caller may not make, without an existence oracle (issue 7 §3).

    In this order: 404 for a Request-URI domain not served here (which domains are served
    is no secret: requests to them are challenged); 403 when the caller could not call that
    domain under both domains' rules, whether or not the user exists there; only then 404
    for a user unknown in it. No caller is 403: the adapter challenges before it resolves,
    so a request without credentials never gets here. The same check gates an INVITE and a
    SUBSCRIBE (`policy.may_watch` is `could_call`), so BLF and calling never disagree.
    """
    if identities.callee_domain is None:
        raise SipError(404, DOMAIN_NOT_SERVED)
    if identities.caller is None or not could_call(_domain(identities.caller), identities.callee_domain, rules):
        raise SipError(403, FORBIDDEN)
    if identities.callee is None:
        raise SipError(404, NOT_FOUND)


def _domain(aor: str | None) -> str:
    return (aor or "").rpartition("@")[2].lower()


def _caller(facts: RequestFacts, directory: DirectoryView, rules: Rules) -> str | None:
    """The account of the verified digest credentials: username an account's user, realm
    a served domain. An alias as username is nobody (see module)."""
    if not facts.auth_user or facts.auth_realm is None:
        return None
    domain_rules = served(facts.auth_realm, rules)
    if domain_rules is None:
        return None
    account = directory.account(domain_rules.name, facts.auth_user)
    return account if account is not None and _domain(account) == domain_rules.name else None


def _served_domain(host: str, rules: Rules) -> str | None:
    """The served domain a Request-URI host names; None for an IP address or a host not served."""
    if _is_ip_literal(host):
        return None
    domain_rules = served(host, rules)
    return None if domain_rules is None else domain_rules.name


def _is_ip_literal(host: str) -> bool:
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def dialled_user(user: str, user_param: str = "") -> str | None:
    """The user part as looked up: a telephone-subscriber for `user=phone` (parameters
    dropped, visual separators removed); None when it names nobody (empty, or with `@`)."""
    if user_param.lower() == "phone":
        user = _VISUAL_SEPARATORS.sub("", user.split(";", 1)[0])
    if not user or "@" in user:
        return None
    return user


def _callee(user: str, domain: str, directory: DirectoryView, rules: Rules) -> str | None:
    domain_rules = served(domain, rules)
    if domain_rules is None:
        return None
    forms = domain_rules.numbers.forms(user)
    exact = _lookup(forms[0], domain, directory)
    if exact is not None:
        return exact
    found = {account for form in forms[1:] if (account := _lookup(form, domain, directory)) is not None}
    return found.pop() if len(found) == 1 else None


def _lookup(user: str, domain: str, directory: DirectoryView) -> str | None:
    """An account's user first, then an alias: both in `domain` only."""
    account = directory.account(domain, user) or directory.alias(domain, user)
    # A directory answer outside the domain asked about is not believed (tenant isolation).
    if account is not None and _domain(account) != domain:
        return None
    return account


# Privacy header values (RFC 3323 §4.2, RFC 3325 §9.3) that withhold the caller's identity.
_WITHHOLDING = frozenset({"id", "user", "header"})


def withheld(from_user: str, from_host: str, privacy: str) -> bool:
    """Whether a caller withheld its identity (RFC 3323): an anonymous From (user
    `anonymous` or host `anonymous.invalid`, as the SIP parser split the From URI), or a
    Privacy header asking for id, user or header privacy. The caller is still the account
    that authenticated; only what others are shown of it changes."""
    if from_user.lower() == "anonymous" or from_host.lower() == "anonymous.invalid":
        return True
    values = {value.strip().lower() for value in privacy.replace(",", ";").split(";")}
    return bool(values & _WITHHOLDING)


def asserted_identity(caller: str, caller_withheld: bool) -> str | None:
    """The P-Asserted-Identity (RFC 3325 §9.1) a request from `caller` (user@domain, the
    account its credentials verified) carries to the callee: the proxy that authenticated
    the caller asserts who it is, so that a phone shows the account and not the From a
    caller chose. None when the caller withheld its identity (Privacy: id, an anonymous
    From): then nothing is asserted to a callee outside the trust domain (§7)."""
    return None if caller_withheld else f"<sip:{caller}>"


def realm_candidates(from_host: str, pai_host: str, ruri_host: str, ruri_is_us: bool) -> list[str]:
    """Where a request may name its caller's domain, in order: the From domain, the
    P-Asserted-Identity domain (an anonymous From), the Request-URI domain unless it is the
    server's own address. Only the realm to challenge with (the first served one): the caller
    is who the credentials verify as."""
    return [host for host in (from_host, pai_host, "" if ruri_is_us else ruri_host) if host]
