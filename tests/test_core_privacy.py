"""Privacy (design.md section 6): user hashes, query redaction, URL credentials, segment bounds."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest

from cxtrace._core.privacy import (
    MAX_SEGMENT_LENGTH,
    OTHER,
    REDACTED,
    UNKNOWN,
    SegmentGate,
    hash_user,
    redact_query,
    strip_credentials,
)

KEY = b"test-user-hash-key"


def _reference_hash(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- hash_user


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        pytest.param("alice@example.com", "alice@example.com", id="email"),
        pytest.param("42", "42", id="numeric-string"),
        pytest.param(42, "42", id="int"),
        pytest.param(0, "0", id="zero"),
        pytest.param("Zoë", "Zoë", id="non-ascii"),
        pytest.param("", "", id="empty"),
    ],
)
def test_user_hash_is_lowercase_hex_hmac_sha256_of_str_user_id(
    user_id: object, message: str
) -> None:
    digest = hash_user(KEY, user_id)
    assert digest == _reference_hash(KEY, message)
    assert len(digest) == 64
    assert digest == digest.lower()


def test_an_int_user_id_hashes_like_its_decimal_string() -> None:
    assert hash_user(KEY, 1234) == hash_user(KEY, "1234")


def test_the_user_hash_depends_on_the_key() -> None:
    assert hash_user(b"key-a", "alice") != hash_user(b"key-b", "alice")


def test_the_user_hash_never_contains_the_raw_id() -> None:
    assert "alice" not in hash_user(KEY, "alice")


# --------------------------------------------------------------------------- redact_query


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("password=hunter2", "password=REDACTED", id="password"),
        pytest.param("token=abc", "token=REDACTED", id="token"),
        pytest.param("secret=abc", "secret=REDACTED", id="secret"),
        pytest.param("key=abc", "key=REDACTED", id="key"),
        pytest.param("session=abc", "session=REDACTED", id="session"),
        pytest.param("auth=abc", "auth=REDACTED", id="auth"),
        pytest.param("PASSWORD=x", "PASSWORD=REDACTED", id="upper-case"),
        pytest.param("Token=x", "Token=REDACTED", id="capitalised"),
        pytest.param("access_token=x", "access_token=REDACTED", id="access_token"),
        pytest.param("api_key=x", "api_key=REDACTED", id="api_key"),
        pytest.param("X-Api-Key=x", "X-Api-Key=REDACTED", id="mixed-case-substring"),
        pytest.param("sessionid=x", "sessionid=REDACTED", id="sessionid"),
        pytest.param("client_secret=x", "client_secret=REDACTED", id="client_secret"),
        pytest.param("oauth_verifier=x", "oauth_verifier=REDACTED", id="oauth"),
        pytest.param("pass%77ord=x", "pass%77ord=REDACTED", id="percent-encoded-letter"),
        pytest.param("api%5Fkey=x", "api%5Fkey=REDACTED", id="percent-encoded-underscore"),
        pytest.param("%54OKEN=x", "%54OKEN=REDACTED", id="percent-encoded-upper"),
        pytest.param("token=a=b", "token=REDACTED", id="value-containing-equals"),
        pytest.param("token=a&token=b", "token=REDACTED&token=REDACTED", id="repeated-key"),
        pytest.param(
            "q=shoes&access_token=abc&Password=x&page=2",
            "q=shoes&access_token=REDACTED&Password=REDACTED&page=2",
            id="mixed",
        ),
        pytest.param("&&token=x&", "&&token=REDACTED&", id="empty-pairs-kept"),
    ],
)
def test_secret_looking_keys_have_their_values_redacted(query: str, expected: str) -> None:
    assert redact_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="empty"),
        pytest.param("q=shoes", id="one-pair"),
        pytest.param("q=shoes&page=2&sort=price&color=red", id="several-pairs"),
        pytest.param("q=password", id="secret-word-as-value"),
        pytest.param("token", id="secret-key-without-value"),
        pytest.param("token=", id="secret-key-with-empty-value"),
        pytest.param("password&q=1", id="bare-secret-key-then-pair"),
        pytest.param("flag", id="bare-flag"),
    ],
)
def test_a_query_with_nothing_secret_comes_back_as_the_same_object(query: str) -> None:
    assert redact_query(query) is query


def test_redaction_keeps_every_non_secret_pair_verbatim() -> None:
    query = "q=red%20shoes&token=t0k&utm_source=mail&size=42"
    assert redact_query(query) == f"q=red%20shoes&token={REDACTED}&utm_source=mail&size=42"


# --------------------------------------------------------------------------- strip_credentials


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "https://bob:hunter2@api.example.com/x",
            "https://api.example.com/x",
            id="user-and-password",
        ),
        pytest.param(
            "https://bob:hunter2@api.example.com:8443/x?y=1",
            "https://api.example.com:8443/x?y=1",
            id="with-port",
        ),
        pytest.param("http://bob@api.example.com/", "http://api.example.com/", id="user-only"),
        pytest.param("http://bob:pw@api.example.com", "http://api.example.com", id="no-path"),
        pytest.param(
            "http://bob:p@ss@api.example.com/x",
            "http://api.example.com/x",
            id="unencoded-at-in-password",
        ),
        pytest.param(
            "http://bob:pw@10.0.0.1:8080#frag", "http://10.0.0.1:8080#frag", id="ip-port-fragment"
        ),
    ],
)
def test_credentials_are_removed_from_the_authority(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://api.example.com/x", id="no-credentials"),
        pytest.param("https://api.example.com:8443/x?y=1", id="no-credentials-with-port"),
        pytest.param("https://example.com/users/bob@example.com", id="at-in-path"),
        pytest.param("https://example.com/search?email=bob@example.com", id="at-in-query"),
        pytest.param("https://example.com#bob@example.com", id="at-in-fragment"),
        pytest.param("https://example.com?next=http://a:b@c", id="credentials-in-query-value"),
        pytest.param("/relative/bob@example.com", id="relative"),
        pytest.param("", id="empty"),
    ],
)
def test_a_url_without_credentials_in_its_authority_is_unchanged(url: str) -> None:
    assert strip_credentials(url) == url


# --------------------------------------------------------------------------- SegmentGate


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Pro", "Pro", id="configured-spelling"),
        pytest.param("pro", "Pro", id="lower-case"),
        pytest.param("PRO", "Pro", id="upper-case"),
        pytest.param("  enterprise\t", "enterprise", id="surrounding-whitespace"),
        pytest.param("free", "free", id="other-allowed-name"),
        pytest.param("gold", OTHER, id="not-allowed"),
        pytest.param("pro ", "Pro", id="trailing-space"),
        pytest.param("professional", OTHER, id="prefix-of-allowed-is-not-allowed"),
        pytest.param("", UNKNOWN, id="empty"),
        pytest.param("   ", UNKNOWN, id="whitespace"),
        pytest.param(None, UNKNOWN, id="none"),
        pytest.param(3, OTHER, id="int"),
        pytest.param(b"pro", OTHER, id="bytes"),
        pytest.param("pro\x00", OTHER, id="nul"),
    ],
)
def test_an_allowlist_admits_its_names_case_insensitively_and_nothing_else(
    value: object, expected: str
) -> None:
    gate = SegmentGate(("free", "Pro", "enterprise"))
    assert gate.admit(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("pro", "pro", id="plain"),
        pytest.param("  pro \n", "pro", id="stripped"),
        pytest.param("x" * 64, "x" * 64, id="exactly-64"),
        pytest.param("x" * 65, "x" * 64, id="65-cut-to-64"),
        pytest.param("y" * 10_000, "y" * MAX_SEGMENT_LENGTH, id="10k-cut-to-64"),
        pytest.param("Zoë's team", "Zoë's team", id="non-ascii-printable"),
        pytest.param("", UNKNOWN, id="empty"),
        pytest.param(" \t\r\n ", UNKNOWN, id="whitespace"),
        pytest.param(None, UNKNOWN, id="none"),
        pytest.param(42, OTHER, id="int"),
        pytest.param(["pro"], OTHER, id="list"),
        pytest.param(b"pro", OTHER, id="bytes"),
        pytest.param("pro\x00", OTHER, id="nul"),
        pytest.param("a\x1b[31mred", OTHER, id="ansi-escape"),
        pytest.param("a\nb", OTHER, id="inner-newline"),
        pytest.param("a\u200bb", OTHER, id="zero-width-space"),
        pytest.param("\x7f", OTHER, id="del"),
    ],
)
def test_without_allowlist_values_are_cleaned_and_bounded(value: object, expected: str) -> None:
    assert SegmentGate().admit(value) == expected


def test_without_allowlist_the_first_50_distinct_values_are_admitted_then_other() -> None:
    gate = SegmentGate()
    admitted = [gate.admit(f"segment-{i}") for i in range(50)]
    assert admitted == [f"segment-{i}" for i in range(50)]
    assert gate.admit("segment-50") == OTHER
    assert gate.admit("yet-another") == OTHER
    # Names admitted earlier keep coming back as themselves.
    assert gate.admit("segment-0") == "segment-0"
    assert gate.admit(" segment-49 ") == "segment-49"


def test_values_that_clean_to_the_same_name_use_one_slot() -> None:
    gate = SegmentGate(max_distinct=2)
    assert [gate.admit(v) for v in ("pro", " pro", "pro\t", "free", "gold")] == [
        "pro",
        "pro",
        "pro",
        "free",
        OTHER,
    ]


def test_ten_thousand_hostile_distinct_values_yield_at_most_51_distinct_outputs() -> None:
    gate = SegmentGate()
    outputs = {gate.admit(f"attacker-{i:05d}-" + "z" * (i % 80)) for i in range(10_000)}
    assert len(outputs) <= 51
    assert OTHER in outputs
    assert all(len(name) <= MAX_SEGMENT_LENGTH for name in outputs)


def test_an_allowlist_keeps_hostile_values_to_the_allowlist_plus_other() -> None:
    gate = SegmentGate(("free", "pro"))
    outputs = {gate.admit(f"hostile-{i}") for i in range(10_000)} | {gate.admit("PRO")}
    assert outputs == {"pro", OTHER}


def test_many_threads_admitting_distinct_values_never_admit_more_than_50_names() -> None:
    gate = SegmentGate()
    threads_n, per_thread = 8, 100
    barrier = threading.Barrier(threads_n)
    results: list[list[str]] = [[] for _ in range(threads_n)]

    def worker(n: int) -> None:
        barrier.wait()
        results[n] = [gate.admit(f"t{n}-v{i}") for i in range(per_thread)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    outputs = [name for chunk in results for name in chunk]
    assert len(outputs) == threads_n * per_thread
    admitted = set(outputs) - {OTHER}
    assert len(admitted) == 50
    assert gate.admit("one-more") == OTHER
