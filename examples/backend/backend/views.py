"""Stock and payments: the shop's downstream service."""

from __future__ import annotations

import asyncio
import json
import random

from django.http import HttpRequest, JsonResponse


async def stock(request: HttpRequest, product_id: int) -> JsonResponse:
    await asyncio.sleep(random.uniform(0.002, 0.02))  # an async view: no thread hop
    return JsonResponse({"product_id": product_id, "in_stock": random.randint(0, 40)})


def payment(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    body = json.loads(request.body or b"{}")
    if body.get("flaky"):
        raise RuntimeError("payment provider timed out")
    return JsonResponse({"authorised": True, "amount": body.get("amount")}, status=201)
