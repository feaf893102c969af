"""blfctl's password rule (issue 12, finding 14): at least MIN_PASSWORD_LENGTH characters."""

from __future__ import annotations

import pytest

from statestore.domain.directory import MIN_PASSWORD_LENGTH, DirectoryError, check_passwords


def test_the_minimum_is_eight() -> None:
    assert MIN_PASSWORD_LENGTH == 8


@pytest.mark.parametrize(
    ("passwords", "refused"),
    [
        ({"a@x.example": "12345678"}, []),
        ({"a@x.example": "pässwörd"}, []),  # characters, not bytes
        ({"a@x.example": ""}, ["a@x.example"]),
        ({"a@x.example": "1234567"}, ["a@x.example"]),
        ({"a@x.example": "long-enough", "b@x.example": "short", "c@x.example": ""}, ["b@x.example", "c@x.example"]),
    ],
)
def test_short_passwords_are_refused_each_named(passwords: dict[str, str], refused: list[str]) -> None:
    if not refused:
        check_passwords(passwords.items())
        return
    with pytest.raises(DirectoryError) as raised:
        check_passwords(passwords.items())
    message = str(raised.value)
    assert f"at least {MIN_PASSWORD_LENGTH} characters" in message
    assert [aor for aor in passwords if aor in message] == refused
