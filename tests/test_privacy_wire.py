"""Privacy on the wire (design.md section 6): known secrets in, none of them out.

A browser-like client logs in to a Flask front end with every kind of secret a request
carries; the front end calls a Django backend with ``requests`` (credentials in the URL,
the caller's Authorization and cookies passed on, secrets in the query). Every byte of
every OTLP payload the receiver got, traces and metrics, over HTTP and gRPC, is scanned
for those secrets, raw and in the encodings they travel in. ``user.hash`` must be there;
the raw user id must not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import requests
from flask import Flask, request

import cxtrace
from otlp_receiver import Receiver

pytest.importorskip("django")

USER_ID = "alice-7781-raw-user-id"
HASH_KEY = "user-hash-key-for-tests"
AUTHORIZATION = "Bearer tok-AUTHZ-9f8e7d6c5b"
COOKIE = "sess-COOKIE-5a4b3c2d1e"
FORM_PASSWORD = "hunter2-FORM-PW-0192"
QUERY_TOKEN = "tok-QUERY-6d5e4f"
QUERY_PASSWORD = "pw-QUERY-3c2b1a"
URL_USER, URL_PASSWORD = "svcuser", "svcpass-URL-8a7b6c"
SECRETS = [USER_ID, AUTHORIZATION, COOKIE, FORM_PASSWORD, QUERY_TOKEN, QUERY_PASSWORD, URL_PASSWORD]


def encodings(secret: str) -> set[bytes]:
    """The secret as bytes in the forms it could leave in: raw, %-encoded, base64 (alone and
    as the Basic credentials requests builds from a URL), and the token part of a scheme."""
    forms = {secret, quote(secret), quote_plus(secret), secret.rsplit(" ", maxsplit=1)[-1]}
    found = {form.encode() for form in forms}
    found.add(base64.b64encode(secret.encode()))
    found.add(base64.b64encode(f"{URL_USER}:{secret}".encode()))
    return found


def front_end(backend: str) -> Flask:
    app = Flask("front")
    where = urlsplit(backend)

    @app.post("/login")
    def login() -> str:
        cxtrace.set_user(request.form["user_id"])
        assert request.form["password"] == FORM_PASSWORD
        answer = requests.get(
            f"http://{URL_USER}:{URL_PASSWORD}@{where.netloc}/products/1/"
            f"?token={QUERY_TOKEN}&password={QUERY_PASSWORD}&q=shoes",
            headers={"Authorization": request.headers["Authorization"]},
            cookies={"session": request.cookies["session"]},
            timeout=10,
        )
        return f"backend said {answer.status_code}"

    return app


def test_no_secret_reaches_the_collector_over_either_protocol(
    otlp_any: Receiver, instrument: Any, serve: Any
) -> None:
    import django_server  # noqa: PLC0415 - sets Django up (tests/django_project)

    handle = instrument(
        otlp_any,
        env={
            "CXTRACE_INTEGRATIONS": "flask,django,requests",
            "CXTRACE_USER_HASH_KEY": HASH_KEY,
        },
    )
    backend = serve(django_server.WSGI_APP)
    front = serve(front_end(backend))

    response = requests.post(
        f"{front}/login?token={QUERY_TOKEN}&password={QUERY_PASSWORD}",
        data={"user_id": USER_ID, "password": FORM_PASSWORD},
        headers={"Authorization": AUTHORIZATION},
        cookies={"session": COOKIE},
        timeout=10,
    )
    assert response.text == "backend said 200"

    def all_three(r: Receiver) -> bool:
        paths = {(s.kind, s.attributes.get("url.path")) for s in r.spans}
        return {("SERVER", "/login"), ("SERVER", "/products/1/")} <= paths and any(
            s.kind == "CLIENT" and "/products/1/" in str(s.attributes.get("url.full"))
            for s in r.spans
        )

    otlp_any.wait_for(all_three)
    handle.force_flush()
    otlp_any.wait_for(lambda r: r.metric_total("cx.requests") >= 2)
    cxtrace.shutdown(timeout_s=5)  # everything that will ever leave has left

    payloads = otlp_any.payloads
    assert {signal for signal, _ in payloads} >= {"traces", "metrics"}
    leaks = [
        (secret, form, signal)
        for signal, raw in payloads
        for secret in SECRETS
        for form in encodings(secret)
        if form in raw
    ]
    assert leaks == []
    scanned = sum(len(raw) for _, raw in payloads)
    print(f"\n{otlp_any.protocol}: {len(payloads)} payloads, {scanned} bytes, 0 secrets")
    # The scan sees what does leave: the non-secret part of the same query strings.
    assert any(b"q=shoes" in raw for signal, raw in payloads if signal == "traces")

    # What may leave did: the keyed hash of the user, and the redacted query.
    expected = hmac.new(HASH_KEY.encode(), USER_ID.encode(), hashlib.sha256).hexdigest()
    login = next(s for s in otlp_any.spans if s.attributes.get("url.path") == "/login")
    assert login.attributes["user.hash"] == expected
    assert any(expected.encode() in raw for signal, raw in payloads if signal == "traces")
    assert login.attributes["url.query"] == "token=REDACTED&password=REDACTED"
    client = next(
        s
        for s in otlp_any.spans
        if s.kind == "CLIENT" and "/products/1/" in str(s.attributes.get("url.full"))
    )
    assert client.attributes["url.full"] == (
        f"{urlsplit(backend).scheme}://{urlsplit(backend).netloc}/products/1/"
        "?token=REDACTED&password=REDACTED&q=shoes"
    )
