from __future__ import annotations

from django.urls import path

from backend import views

urlpatterns = [
    path("pricing/", views.pricing),
    path("payments/", views.payment),
]
