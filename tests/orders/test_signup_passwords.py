"""Sign-up checks passwords with AUTH_PASSWORD_VALIDATORS and shows their messages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def sign_up(client: Client, password: str, username: str = "ada") -> str:
    response = client.post(
        reverse("signup"),
        {"username": username, "email": "ada@example.com", "password1": password, "password2": password},
    )
    assert response.status_code == 200, "the form again, with the messages"
    return response.content.decode()


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("ada12345", "This password is too short. It must contain at least 10 characters."),
        ("password123", "This password is too common."),
        ("4815162342108", "This password is entirely numeric."),
        ("ada-lovelace", "The password is too similar to the username."),
    ],
)
def test_weak_passwords_are_refused_with_the_validators_message(
    client: Client, password: str, message: str
) -> None:
    html = sign_up(client, password, username="ada-lovelace" if "lovelace" in password else "ada")

    assert message in html
    assert not get_user_model().objects.filter(username__startswith="ada").exists()


def test_the_form_states_the_rules(client: Client) -> None:
    html = client.get(reverse("signup")).content.decode()

    assert "Your password must contain at least 10 characters." in html


def test_a_good_password_signs_up(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "a-long-Secret-phrase-9",
            "password2": "a-long-Secret-phrase-9",
        },
    )

    assert response.status_code == 302
    assert get_user_model().objects.filter(username="ada").exists()
