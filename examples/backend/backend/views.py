"""Pricing and payments: the shop's downstream service."""

from __future__ import annotations

import asyncio
import json
import random

from django.http import HttpRequest, JsonResponse

# Each line item is priced against the customer's contract, one lookup per line: a cart
# of 300 lines (an enterprise bulk order) takes two seconds, a cart of 3 lines, 20 ms.
SECONDS_PER_LINE = 0.007


async def pricing(request: HttpRequest) -> JsonResponse:
    """Check stock and price a cart; an async view, so waiting takes no thread."""
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    lines = int(json.loads(request.body or b"{}").get("lines", 1))
    await asyncio.sleep(random.uniform(0.002, 0.02) + lines * SECONDS_PER_LINE)
    return JsonResponse({"lines": lines, "total": round(lines * 19.9, 2)})


def payment(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    body = json.loads(request.body or b"{}")
    if body.get("declined"):
        raise RuntimeError("payment declined by the provider")
    return JsonResponse({"authorised": True, "amount": body.get("amount")}, status=201)
