"""URLs of the example project."""

from __future__ import annotations

from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.index),
    path("items/<int:item_id>", views.item),
    path("boom", views.boom),
    path("status", views.status),
    path("login", views.login),
    path("items", views.create_item),
    path("report", views.Report.as_view()),
]
