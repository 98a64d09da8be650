"""The journeys file of design.md section 3, verbatim: the tests' "purchase" journey.

Its last step spans two lines inside an inline table, which is TOML 1.1 (tomli >= 2.4
reads it; the stdlib tomllib of Python 3.11-3.13 does not).
"""

from __future__ import annotations

from cxtrace import Journey, Step

DESIGN_JOURNEYS = """\
apdex_threshold_ms = 500
[segments]
header = "X-Customer-Tier"
allowed = ["free", "pro", "enterprise"]

[[journeys]]
name = "purchase"
steps = [
  { name = "browse",       route = "/products" },
  { name = "view_product", route = "/products/<int:product_id>" },
  { name = "add_to_cart",  route = "/cart", method = "POST" },
  { name = "checkout",     route = "/checkout", apdex_threshold_ms = 1000 },
  { name = "purchase",     route = "/orders", method = "POST", conversion = true,
    apdex_threshold_ms = 2000 },
]
"""

# The same journey as cxtrace reads it from that file.
PURCHASE = Journey(
    "purchase",
    steps=[
        Step("browse", route="/products"),
        Step("view_product", route="/products/<int:product_id>"),
        Step("add_to_cart", route="/cart", method="POST"),
        Step("checkout", route="/checkout", apdex_threshold_ms=1000),
        Step("purchase", route="/orders", method="POST", conversion=True, apdex_threshold_ms=2000),
    ],
)
