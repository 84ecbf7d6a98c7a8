"""htdigest credentials for the edge: parsing (with properties) and errors that never quote a hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.edge.credentials import CredentialsError, DigestAuth, ha1, parse_htdigest, read_htdigest

REALM = "callpark.test"
users = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.+-]{0,20}\Z")


def test_ha1_is_the_rfc_2617_md5_of_user_realm_password() -> None:
    assert ha1("alice", REALM, "secret") == hashlib.md5(b"alice:callpark.test:secret").hexdigest()


@given(st.dictionaries(users, st.text(min_size=1, max_size=20), min_size=1, max_size=10))
def test_written_files_parse_back(passwords: dict[str, str]) -> None:
    lines = ["# comment", ""] + [f"{u}:{REALM}:{ha1(u, REALM, p)}" for u, p in passwords.items()]
    lines.append("bob:other-realm:" + "0" * 32)
    parsed = parse_htdigest("\n".join(lines), REALM)
    assert parsed == {u: ha1(u, REALM, p) for u, p in passwords.items()}
    assert DigestAuth(REALM, parsed).users == parsed


@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_credentials_error(text: str) -> None:
    try:
        parse_htdigest(text, REALM)
    except CredentialsError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice:callpark.test", "line 1: expected user:realm:HA1"),
        ("\nalice:callpark.test:abc", "line 2: user 'alice': HA1 must be 32 hex digits"),
        ("bad user:callpark.test:" + "a" * 32, "line 1: user 'bad user'"),
        ("a:callpark.test:" + "a" * 32 + "\na:callpark.test:" + "b" * 32, "appears twice"),
        ("a:elsewhere:" + "a" * 32, "no user for realm"),
    ],
)
def test_errors_name_the_line_and_never_the_hash(text: str, message: str) -> None:
    with pytest.raises(CredentialsError, match=message) as info:
        parse_htdigest(text, REALM)
    assert "a" * 32 not in str(info.value) and "b" * 32 not in str(info.value)


def test_repr_hides_the_hashes_and_unreadable_files_are_named(tmp_path: Path) -> None:
    auth = DigestAuth(REALM, {"alice": ha1("alice", REALM, "pw")})
    assert ha1("alice", REALM, "pw") not in repr(auth)
    with pytest.raises(CredentialsError, match="cannot read"):
        read_htdigest(tmp_path / "missing", REALM)
