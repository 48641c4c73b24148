"""Sign-up, login, logout and password change under /accounts/ (no namespace: `LOGIN_URL =
"login"`).

The login form refuses locked-out usernames and addresses (access.lockout) and its POSTs draw
on the login budget per source address (access.throttling), like the token endpoint.
"""

from django.contrib.auth import views as auth_views
from django.urls import path

from access.lockout import LockoutAuthenticationForm
from access.throttling import rate_limit
from orders import views

urlpatterns = [
    path(
        "login/",
        rate_limit("login", methods=("POST",), per="address")(
            auth_views.LoginView.as_view(
                authentication_form=LockoutAuthenticationForm, redirect_authenticated_user=True
            )
        ),
        name="login",
    ),
    # POST only (Django's LogoutView): the header's logout button is a form with a CSRF token.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Making accounts draws on the login budget too: no scripted mass sign-up from one address.
    path("signup/", rate_limit("login", methods=("POST",), per="address")(views.signup), name="signup"),
    # A new password blacklists the account's API refresh tokens and stops its access tokens
    # (access.signals, access.jwt); this browser's session stays logged in.
    # Templates of their own: registration/password_change_*.html are the admin's pages.
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(template_name="registration/account_password_change.html"),
        name="password_change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="registration/account_password_changed.html"),
        name="password_change_done",
    ),
]
