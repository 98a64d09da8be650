"""Raw user ids never leave a Flask app (design.md section 6), with or without a key.

A Flask app identifies its users with ``cxtrace.set_user()`` (a string id and an integer
id) and through ``instrument(user=...)`` (a resolver returning either kind). Every byte
of every OTLP payload the receiver got, traces and metrics, is scanned for each raw id in
the forms it could travel in, and every decoded attribute is compared with it. With
``CXTRACE_USER_HASH_KEY`` the span carries ``user.hash``, the HMAC of section 6; without
it, no user attribute at all. Flask only: tests/test_privacy_wire.py and test_django.py
cover Django's authenticated user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from typing import Any, Optional, Union

import flask
import pytest
import requests

import cxtrace
from otlp_receiver import Receiver

HASH_KEY = "user-hash-key-3b8d"
UserId = Union[str, int]
# Ids that cannot appear in a payload by accident; none is in any URL the test calls.
SET_IN_VIEW: dict[str, UserId] = {"/set-user/str": "alice-7f3e", "/set-user/int": 987654321}
RESOLVED: dict[str, UserId] = {"/resolved/str": "carol-2d9c", "/resolved/int": 246813579}
USERS = {**SET_IN_VIEW, **RESOLVED}  # url.path -> the raw id that request's user has


def varint(number: int) -> bytes:
    """Protobuf's encoding of an int64 (an OTLP ``int_value``)."""
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def wire_forms(user_id: UserId) -> set[bytes]:
    """The raw id as bytes in the forms it could leave in: text, base64, and for an int
    its protobuf int_value (varint), a fixed 64-bit int and a double_value."""
    text = str(user_id).encode()
    forms = {text, base64.b64encode(text)}
    if isinstance(user_id, int):
        forms |= {varint(user_id), struct.pack("<q", user_id), struct.pack("<d", user_id)}
    return forms


def users_app() -> flask.Flask:
    app = flask.Flask("users")

    @app.get("/set-user/<kind>")
    def set_user(kind: str) -> str:
        cxtrace.set_user(SET_IN_VIEW[flask.request.path])
        return "identified"

    @app.get("/resolved/<kind>")
    def resolved(kind: str) -> str:
        return "identified by the resolver"

    return app


def user_of(request: flask.Request) -> Optional[UserId]:
    """The ``user=`` resolver: the id of /resolved/... requests, None for the others."""
    return RESOLVED.get(request.path)


@pytest.mark.parametrize("key", [HASH_KEY, None], ids=["with-key", "without-key"])
def test_raw_user_ids_never_reach_the_collector(
    otlp: Receiver, instrument: Any, serve: Any, key: Optional[str]
) -> None:
    env = {} if key is None else {"CXTRACE_USER_HASH_KEY": key}
    handle = instrument(otlp, env=env, user=user_of)
    base = serve(users_app())

    with requests.Session() as http:
        for path in USERS:
            assert http.get(base + path, timeout=10).ok
    otlp.wait_for(lambda r: sum(s.kind == "SERVER" for s in r.spans) == len(USERS))
    handle.force_flush()
    otlp.wait_for(lambda r: r.metric_total("cx.requests") == len(USERS))
    cxtrace.shutdown(timeout_s=5)  # everything that will ever leave has left

    payloads = otlp.payloads
    assert {signal for signal, _ in payloads} >= {"traces", "metrics"}
    leaks = [
        (user_id, form, signal)
        for signal, raw in payloads
        for user_id in USERS.values()
        for form in wire_forms(user_id)
        if form in raw
    ]
    assert leaks == []
    values = [
        value
        for record in (*otlp.spans, *otlp.points)
        for attributes in (record.attributes, record.resource)
        for value in attributes.values()
    ]
    for user_id in USERS.values():
        assert user_id not in values
        assert str(user_id) not in values

    by_path = {s.attributes["url.path"]: s for s in otlp.spans if s.kind == "SERVER"}
    assert set(by_path) == set(USERS)
    for path, user_id in USERS.items():
        attributes = by_path[path].attributes
        if key is None:  # no key: no user attribute at all
            assert not [n for n in attributes if n.startswith(("user.", "enduser."))], attributes
        else:
            expected = hmac.new(key.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()
            assert attributes["user.hash"] == expected, path
