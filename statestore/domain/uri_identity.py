"""Which contact a URI or a binding is (RFC 3261 §19.1.4, RFC 5626 §6), for store keys.

Pure. A binding is identified by its device when the Contact carries an RFC 5626
`+sip.instance` (with its `reg-id`, when present), otherwise by its Contact URI.
"""

from __future__ import annotations

import hashlib
import re

from statestore.domain.model import Binding

# scheme ":" [userinfo "@"] hostport [";" params] ["?" headers] (RFC 3261 §19.1.1).
_URI_PARTS = re.compile(
    r"(?P<scheme>[^:]*):(?P<user>[^@]*@)?(?P<host>[^;?]*)(?P<tail>.*)", re.DOTALL
)


def normalise_uri(uri: str) -> str:
    """Lower-case scheme and hostport; user and parameters stay as they are.

    A simplification of the URI comparison of RFC 3261 §19.1.4.
    """
    parts = _URI_PARTS.fullmatch(uri.strip())
    if parts is None:
        return uri.strip()
    user = parts["user"] or ""
    return f"{parts['scheme'].lower()}:{user}{parts['host'].lower()}{parts['tail']}"


def binding_key_id(contact_uri: str) -> str:
    """Stable short id of a contact URI for the store key: 16 hex chars of sha1."""
    return _short_hash(normalise_uri(contact_uri))


def device_key_id(sip_instance: str, reg_id: str = "") -> str:
    """Stable short id of a device's binding (RFC 5626 §6: instance-id and reg-id)."""
    return _short_hash(f"instance:{sip_instance}\nreg-id:{reg_id}")


def binding_id(binding: Binding) -> str:
    """Store key id of a binding: its device when it named one, else its Contact URI."""
    if binding.sip_instance:
        return device_key_id(binding.sip_instance, binding.reg_id)
    return binding_key_id(binding.contact)


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
