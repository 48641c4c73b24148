"""Sign-up, login and logout under /accounts/ (no namespace: `LOGIN_URL = "login"`)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from orders import views

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    # POST only (Django's LogoutView): the header's logout button is a form with a CSRF token.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
]
