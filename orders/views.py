from django.http import HttpRequest, HttpResponse


def product_list(request: HttpRequest) -> HttpResponse:
    return HttpResponse("shop")
