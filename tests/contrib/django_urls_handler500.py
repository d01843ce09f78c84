"""A URLconf with its own handler500 (a project's branded error page)."""

from django.http import HttpResponse

from tests.contrib.django_views import urlpatterns  # noqa: F401 - the URLconf's routes


def branded_500(request):
    return HttpResponse(b"<h1>Sorry</h1>", status=500, content_type="text/html")


handler500 = branded_500
