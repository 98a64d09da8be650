from __future__ import annotations

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path, re_path

from django_project import rum_views, views

api = [path("items/<int:pk>/", views.item)]
rum = [
    path("page/", rum_views.page),
    path("csp/", rum_views.csp),
    path("template/", rum_views.template),
    path("data/", rum_views.data),
    path("stream/", rum_views.stream),
    path("gzip/", rum_views.gzipped),
    path("nohead/", rum_views.nohead),
]

urlpatterns = [
    path("products/<int:product_id>/", views.product),
    path("async/products/<int:product_id>/", views.async_product),
    path("cbv/", views.ItemView.as_view()),
    path("api/", include(api)),
    path("rum/", include(rum)),
    re_path(r"^legacy/(?P<code>[0-9]+)/$", views.legacy),
    path("sleep/", views.sleep),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("file/", views.file_response),
    path("boom/", views.boom),
    path("aboom/", views.aboom),
    path("login/", views.do_login),
    path("me/", views.me),
    path("anon/", views.anon),
    path("segment/<str:name>/", views.segment),
    path("probe/", views.async_segmented),
    *i18n_patterns(path("about/", views.about)),
]
