from __future__ import annotations

from django.urls import path

from backend import views

urlpatterns = [
    path("stock/<int:product_id>/", views.stock),
    path("pricing/", views.pricing),
    path("payments/", views.payment),
]
