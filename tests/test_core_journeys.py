"""Journeys, steps and the step matcher (design.md sections 2 and 3)."""

from __future__ import annotations

from typing import Any

import pytest

from cxtrace._core.errors import ConfigError
from cxtrace._core.journeys import Journey, Step, StepMatcher, normalize_route

# --------------------------------------------------------------------------- Step validation


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        pytest.param(("",), {}, "step name=''", id="empty-name"),
        pytest.param(("   ",), {}, "step name='   '", id="blank-name"),
        pytest.param((None,), {}, "step name=None", id="none-name"),
        pytest.param((7,), {}, "step name=7", id="int-name"),
        pytest.param(("a",), {"route": ""}, "step 'a' route=''", id="empty-route"),
        pytest.param(("a",), {"route": 5}, "step 'a' route=5", id="int-route"),
        pytest.param(("a",), {"path": ""}, "step 'a' path=''", id="empty-path"),
        pytest.param(("a",), {"path": "cart/*"}, "step 'a' path='cart/*'", id="relative-path"),
        pytest.param(("a",), {"path": "*.html"}, "step 'a' path='*.html'", id="path-glob-no-slash"),
        pytest.param(("a",), {"method": "FETCH"}, "step 'a' method='FETCH'", id="unknown-method"),
        pytest.param(("a",), {"method": ""}, "step 'a' method=''", id="empty-method"),
        pytest.param(("a",), {"method": 5}, "step 'a' method=5", id="int-method"),
        pytest.param(
            ("a",), {"method": "GET,POST"}, "step 'a' method='GET,POST'", id="two-methods"
        ),
        pytest.param(
            ("a",), {"conversion": "yes"}, "step 'a' conversion='yes'", id="str-conversion"
        ),
        pytest.param(("a",), {"conversion": 1}, "step 'a' conversion=1", id="int-conversion"),
        pytest.param(("a",), {"apdex_threshold_ms": 0}, "apdex_threshold_ms=0", id="zero-T"),
        pytest.param(("a",), {"apdex_threshold_ms": -5}, "apdex_threshold_ms=-5", id="negative-T"),
        pytest.param(("a",), {"apdex_threshold_ms": True}, "apdex_threshold_ms=True", id="bool-T"),
        pytest.param(
            ("a",), {"apdex_threshold_ms": float("nan")}, "apdex_threshold_ms=nan", id="nan-T"
        ),
        pytest.param(
            ("a",), {"apdex_threshold_ms": float("inf")}, "apdex_threshold_ms=inf", id="inf-T"
        ),
        pytest.param(
            ("a",),
            {"apdex_threshold_ms": float("-inf")},
            "apdex_threshold_ms=-inf",
            id="minus-inf-T",
        ),
        pytest.param(("a",), {"apdex_threshold_ms": "500"}, "apdex_threshold_ms='500'", id="str-T"),
    ],
)
def test_an_invalid_step_is_a_config_error_naming_the_field_and_what_is_expected(
    args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Step(*args, **kwargs)
    assert fragment in str(info.value)
    assert "expected" in str(info.value)


def test_an_unknown_method_error_lists_the_methods_allowed() -> None:
    with pytest.raises(ConfigError, match=r"expected one of .*GET.*POST"):
        Step("a", method="FETCH")


@pytest.mark.parametrize(
    ("kwargs", "attribute", "expected"),
    [
        pytest.param({"method": "post"}, "method", "POST", id="method-upper-cased"),
        pytest.param({"method": " Delete "}, "method", "DELETE", id="method-stripped"),
        pytest.param({"route": "cart/"}, "route", "/cart", id="route-normalized"),
        pytest.param({"path": " /cart/* "}, "path", "/cart/*", id="path-stripped"),
        pytest.param({"apdex_threshold_ms": 1000}, "apdex_threshold_ms", 1000.0, id="int-T"),
        pytest.param({"apdex_threshold_ms": 0.5}, "apdex_threshold_ms", 0.5, id="float-T"),
        pytest.param({}, "apdex_threshold_ms", None, id="no-T"),
        pytest.param({"conversion": True}, "conversion", True, id="conversion"),
        pytest.param({}, "conversion", False, id="not-conversion"),
    ],
)
def test_a_valid_step_keeps_its_fields_normalized(
    kwargs: dict[str, Any], attribute: str, expected: object
) -> None:
    assert getattr(Step("a", **kwargs), attribute) == expected


def test_a_step_name_is_stripped() -> None:
    assert Step("  browse ").name == "browse"


def test_a_step_needs_neither_route_nor_path_when_it_is_named_in_code() -> None:
    step = Step("checkout")
    assert (step.route, step.path, step.method) == (None, None, None)


# --------------------------------------------------------------------------- Journey validation


@pytest.mark.parametrize(
    ("name", "steps", "fragment"),
    [
        pytest.param("", [Step("a")], "journey name=''", id="empty-name"),
        pytest.param(None, [Step("a")], "journey name=None", id="none-name"),
        pytest.param("p", [], "journey 'p' steps=[]: expected at least one step", id="no-steps"),
        pytest.param("p", (), "expected at least one step", id="empty-tuple"),
        pytest.param("p", "browse", "journey 'p' steps='browse'", id="string-steps"),
        pytest.param("p", None, "journey 'p' steps=None", id="none-steps"),
        pytest.param(
            "p", ["browse"], "journey 'p' step 'browse': expected a cxtrace.Step", id="string-step"
        ),
        pytest.param(
            "p",
            [Step("a"), Step("a", route="/a")],
            "journey 'p': duplicate step 'a'",
            id="duplicate-step",
        ),
        pytest.param(
            "p", [Step("a"), Step(" a ")], "duplicate step 'a'", id="duplicate-after-strip"
        ),
    ],
)
def test_an_invalid_journey_is_a_config_error_with_a_clear_message(
    name: Any, steps: Any, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Journey(name, steps=steps)
    assert fragment in str(info.value)


def test_a_journey_accepts_any_iterable_of_steps() -> None:
    journey = Journey("p", steps=(Step(n) for n in ("a", "b")))
    assert [s.name for s in journey.steps] == ["a", "b"]


def test_config_error_is_a_value_error_shown_as_cxtrace_config_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert f"{ConfigError.__module__}.{ConfigError.__qualname__}" == "cxtrace.ConfigError"


# --------------------------------------------------------------------------- repr and equality


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param(Step("browse"), "cxtrace.Step('browse')", id="bare"),
        pytest.param(
            Step("browse", route="/products"),
            "cxtrace.Step('browse', route='/products')",
            id="route",
        ),
        pytest.param(
            Step("buy", path="/orders/*", method="post", conversion=True),
            "cxtrace.Step('buy', path='/orders/*', method='POST', conversion=True)",
            id="path-method-conversion",
        ),
        pytest.param(
            Step("checkout", route="/checkout", apdex_threshold_ms=1000.0),
            "cxtrace.Step('checkout', route='/checkout', apdex_threshold_ms=1000)",
            id="integral-threshold-as-written",
        ),
        pytest.param(
            Step("checkout", apdex_threshold_ms=250.5),
            "cxtrace.Step('checkout', apdex_threshold_ms=250.5)",
            id="fractional-threshold",
        ),
    ],
)
def test_a_step_repr_reads_as_the_public_constructor(step: Step, expected: str) -> None:
    assert repr(step) == expected


def test_a_step_repr_matches_its_docstring_example() -> None:
    step = Step("checkout", route="/checkout", apdex_threshold_ms=1000)
    assert repr(step) in (Step.__doc__ or "")


def test_a_journey_repr_reads_as_the_public_constructor() -> None:
    journey = Journey(
        "purchase", steps=[Step("browse", route="/products"), Step("buy", conversion=True)]
    )
    assert repr(journey) == (
        "cxtrace.Journey('purchase', steps=[cxtrace.Step('browse', route='/products'), "
        "cxtrace.Step('buy', conversion=True)])"
    )


def test_steps_and_journeys_compare_by_value() -> None:
    assert Step("a", route="/a/", method="get") == Step("a", route="/a", method="GET")
    assert Step("a", route="/a") != Step("a", route="/b")
    assert Journey("p", steps=[Step("a")]) == Journey("p", steps=[Step("a")])
    assert Journey("p", steps=[Step("a")]) != Journey("q", steps=[Step("a")])


# --------------------------------------------------------------------------- normalize_route


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param("/products", "/products", id="already-normal"),
        pytest.param("products", "/products", id="leading-slash-added"),
        pytest.param("/products/", "/products", id="trailing-slash-removed"),
        pytest.param("products/<int:product_id>/", "/products/<int:product_id>", id="django"),
        pytest.param("/products/<int:product_id>", "/products/<int:product_id>", id="flask"),
        pytest.param("/", "/", id="root-stays"),
        pytest.param("", "/", id="empty-is-root"),
        pytest.param("//", "/", id="double-slash-is-root"),
        pytest.param(" /cart/ ", "/cart", id="whitespace-stripped"),
    ],
)
def test_routes_are_compared_with_a_leading_slash_and_no_trailing_slash(
    route: str, expected: str
) -> None:
    assert normalize_route(route) == expected


# --------------------------------------------------------------------------- StepMatcher


PURCHASE = Journey(
    "purchase",
    steps=[
        Step("browse", route="/products"),
        Step("view_product", route="/products/<int:product_id>"),
        Step("cart", route="/cart"),
        Step("add_to_cart", route="/cart", method="POST"),
        Step("checkout", route="/checkout", apdex_threshold_ms=1000),
        Step("purchase", route="/orders", method="POST", conversion=True, apdex_threshold_ms=2000),
        Step("static", path="/static/*"),
        Step("upload", path="/upload/*", method="PUT"),
        Step("deep", path="/products/*"),
    ],
)
SUPPORT = Journey("support", steps=[Step("faq", path="/help/*"), Step("ticket", route="/tickets")])


@pytest.fixture
def matcher() -> StepMatcher:
    return StepMatcher([PURCHASE, SUPPORT])


@pytest.mark.parametrize(
    ("route", "path", "method", "expected"),
    [
        pytest.param("/products", "/products", "GET", ("purchase", "browse", 1), id="route"),
        pytest.param(
            "/products/", "/products/", "GET", ("purchase", "browse", 1), id="route-trailing-slash"
        ),
        pytest.param(
            "products/<int:product_id>/",
            "/products/7",
            "GET",
            ("purchase", "view_product", 2),
            id="django-route",
        ),
        pytest.param(
            "/products/<int:product_id>",
            "/products/7",
            "GET",
            ("purchase", "view_product", 2),
            id="flask-route-beats-path-glob",
        ),
        pytest.param(
            "/cart",
            "/cart",
            "POST",
            ("purchase", "add_to_cart", 4),
            id="method-specific-beats-method-less",
        ),
        pytest.param(
            "/cart", "/cart", "GET", ("purchase", "cart", 3), id="method-less-for-other-methods"
        ),
        pytest.param("/orders", "/orders", "POST", ("purchase", "purchase", 6), id="conversion"),
        pytest.param("/orders", "/orders", "GET", None, id="method-filter-on-route"),
        pytest.param(None, "/static/app.js", "GET", ("purchase", "static", 7), id="path-glob"),
        pytest.param(
            None,
            "/static/css/site.css",
            "HEAD",
            ("purchase", "static", 7),
            id="path-glob-crosses-slashes",
        ),
        pytest.param(
            "/unknown/<id>",
            "/static/x",
            "GET",
            ("purchase", "static", 7),
            id="unmatched-route-falls-back-to-path",
        ),
        pytest.param(
            None, "/upload/a.png", "PUT", ("purchase", "upload", 8), id="path-with-method"
        ),
        pytest.param(None, "/upload/a.png", "POST", None, id="method-filter-on-path"),
        pytest.param(None, "/help/billing", "GET", ("support", "faq", 1), id="second-journey-path"),
        pytest.param(
            "/tickets", "/tickets", "GET", ("support", "ticket", 2), id="second-journey-route"
        ),
        pytest.param(None, "/static", "GET", None, id="glob-needs-its-slash"),
        pytest.param("/nothing", "/nothing", "GET", None, id="no-match"),
        pytest.param(None, "/", "GET", None, id="root-no-match"),
    ],
)
def test_a_request_maps_to_its_step(
    matcher: StepMatcher,
    route: str | None,
    path: str,
    method: str,
    expected: tuple[str, str, int] | None,
) -> None:
    ref = matcher.match(route, path, method)
    if expected is None:
        assert ref is None
    else:
        assert ref is not None
        assert (ref.journey, ref.step, ref.index) == expected


def test_the_same_request_maps_the_same_way_twice(matcher: StepMatcher) -> None:
    first = matcher.match("/cart", "/cart", "POST")
    assert matcher.match("/cart", "/cart", "POST") is first
    assert matcher.match("/cart", "/cart", "GET") is not first


def test_a_matched_ref_carries_conversion_and_the_step_threshold(matcher: StepMatcher) -> None:
    purchase = matcher.match("/orders", "/orders", "POST")
    checkout = matcher.match("/checkout", "/checkout", "GET")
    browse = matcher.match("/products", "/products", "GET")
    assert purchase is not None
    assert checkout is not None
    assert browse is not None
    assert (purchase.conversion, purchase.threshold_ms) == (True, 2000.0)
    assert (checkout.conversion, checkout.threshold_ms) == (False, 1000.0)
    assert (browse.conversion, browse.threshold_ms) == (False, None)


def test_step_attributes_are_exactly_journey_step_and_index(matcher: StepMatcher) -> None:
    ref = matcher.match("/checkout", "/checkout", "GET")
    assert ref is not None
    assert dict(ref.attributes) == {
        "cx.journey": "purchase",
        "cx.step": "checkout",
        "cx.step.index": 5,
    }


def test_step_attributes_are_read_only(matcher: StepMatcher) -> None:
    ref = matcher.match("/checkout", "/checkout", "GET")
    assert ref is not None
    with pytest.raises(TypeError):
        ref.attributes["cx.step"] = "forged"  # type: ignore[index]


def test_an_empty_matcher_matches_nothing() -> None:
    empty = StepMatcher([])
    assert empty.is_empty
    assert empty.match("/products", "/products", "GET") is None
    assert not StepMatcher([PURCHASE]).is_empty


def test_a_matcher_with_only_code_named_steps_is_empty() -> None:
    assert StepMatcher([Journey("p", steps=[Step("a"), Step("b")])]).is_empty


@pytest.mark.parametrize(
    ("journeys", "fragment"),
    [
        pytest.param(
            [
                Journey("a", steps=[Step("x", route="/cart")]),
                Journey("b", steps=[Step("y", route="/cart/")]),
            ],
            "duplicate step for route '/cart': a.x and b.y",
            id="same-route-across-journeys",
        ),
        pytest.param(
            [
                Journey(
                    "a",
                    steps=[
                        Step("x", route="/cart", method="POST"),
                        Step("y", route="cart", method="post"),
                    ],
                )
            ],
            "duplicate step for route '/cart' POST: a.x and a.y",
            id="same-route-and-method-in-one-journey",
        ),
        pytest.param(
            [Journey("a", steps=[Step("x")]), Journey("a", steps=[Step("y")])],
            "duplicate journey 'a'",
            id="duplicate-journey-name",
        ),
    ],
)
def test_ambiguous_journeys_are_a_config_error(journeys: list[Journey], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        StepMatcher(journeys)
    assert fragment in str(info.value)


def test_the_same_route_with_different_methods_is_not_a_duplicate() -> None:
    matcher = StepMatcher(
        [
            Journey("a", steps=[Step("list", route="/items", method="GET")]),
            Journey("b", steps=[Step("create", route="/items", method="POST")]),
        ]
    )
    get, post = matcher.match("/items", "/items", "GET"), matcher.match("/items", "/items", "POST")
    assert get is not None
    assert post is not None
    assert (get.journey, post.journey) == ("a", "b")


# --------------------------------------------------------------------------- named()


@pytest.mark.parametrize(
    ("step", "journey", "expected", "attributes"),
    [
        pytest.param(
            "checkout",
            "purchase",
            ("purchase", "checkout", 5),
            {"cx.journey": "purchase", "cx.step": "checkout", "cx.step.index": 5},
            id="configured-with-journey",
        ),
        pytest.param(
            "checkout",
            None,
            ("purchase", "checkout", 5),
            {"cx.journey": "purchase", "cx.step": "checkout", "cx.step.index": 5},
            id="configured-unique-name-without-journey",
        ),
        pytest.param(
            "faq",
            "support",
            ("support", "faq", 1),
            {"cx.journey": "support", "cx.step": "faq", "cx.step.index": 1},
            id="second-journey",
        ),
        pytest.param(
            "wishlist", None, (None, "wishlist", None), {"cx.step": "wishlist"}, id="unknown-step"
        ),
        pytest.param(
            "wishlist",
            "purchase",
            ("purchase", "wishlist", None),
            {"cx.journey": "purchase", "cx.step": "wishlist"},
            id="unknown-step-in-known-journey",
        ),
        pytest.param(
            "checkout",
            "support",
            ("support", "checkout", None),
            {"cx.journey": "support", "cx.step": "checkout"},
            id="known-step-in-the-wrong-journey",
        ),
        pytest.param(
            "browse",
            "nosuch",
            ("nosuch", "browse", None),
            {"cx.journey": "nosuch", "cx.step": "browse"},
            id="unknown-journey",
        ),
    ],
)
def test_named_steps_resolve_to_their_position_or_to_an_unindexed_ref(
    matcher: StepMatcher,
    step: str,
    journey: str | None,
    expected: tuple[str | None, str, int | None],
    attributes: dict[str, object],
) -> None:
    ref = matcher.named(step, journey)
    assert (ref.journey, ref.step, ref.index) == expected
    assert dict(ref.attributes) == attributes


def test_a_named_conversion_step_keeps_conversion_and_threshold(matcher: StepMatcher) -> None:
    ref = matcher.named("purchase", "purchase")
    assert (ref.conversion, ref.threshold_ms) == (True, 2000.0)


def test_an_unknown_named_step_is_no_conversion_and_has_no_threshold(matcher: StepMatcher) -> None:
    ref = matcher.named("wishlist", None)
    assert (ref.conversion, ref.threshold_ms) == (False, None)


def test_a_step_name_shared_by_two_journeys_needs_its_journey_to_be_indexed() -> None:
    matcher = StepMatcher(
        [
            Journey("a", steps=[Step("pay")]),
            Journey("b", steps=[Step("browse"), Step("pay", conversion=True)]),
        ]
    )
    ambiguous = matcher.named("pay", None)
    assert (ambiguous.journey, ambiguous.index, ambiguous.conversion) == (None, None, False)
    assert dict(ambiguous.attributes) == {"cx.step": "pay"}
    in_b = matcher.named("pay", "b")
    assert (in_b.journey, in_b.index, in_b.conversion) == ("b", 2, True)


def test_naming_the_same_unknown_step_twice_gives_an_equal_ref(matcher: StepMatcher) -> None:
    assert matcher.named("wishlist", None) == matcher.named("wishlist", None)
