"""The token endpoints: thin views over access.jwt's services.

`POST /api/auth/token`, `POST /api/auth/token/refresh` and `POST /api/auth/logout` read no
session or bearer header: the body is the credential. Their rate limits come from
RATE_LIMIT_ROUTES (access.throttling), by URL name.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.settings import api_settings

from access import jwt
from core.serializers import ErrorSerializer


class TokenObtainInputSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenRefreshInputSerializer(serializers.Serializer):
    refresh = serializers.CharField(help_text="A refresh token; it is used up.")


class TokenPairOutputSerializer(serializers.Serializer):
    access = serializers.CharField(
        help_text=f"For `Authorization: Bearer ...`; valid {api_settings.ACCESS_TOKEN_LIFETIME}."
    )
    refresh = serializers.CharField(
        help_text="Single use: trade it at /api/auth/token/refresh for a new pair."
    )


class LogoutInputSerializer(serializers.Serializer):
    refresh = serializers.CharField(help_text="The refresh token to revoke.")
    all = serializers.BooleanField(
        default=False, help_text="Revoke every outstanding refresh token of this user (log out everywhere)."
    )


class LogoutOutputSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="How many refresh tokens were revoked.")


def _errors(**described: str) -> dict[int, OpenApiResponse]:
    """{"e401": "why"} → {401: the error body, described}."""
    return {
        int(code[1:]): OpenApiResponse(ErrorSerializer, description=text) for code, text in described.items()
    }


class _TokenApi(APIView):
    authentication_classes = ()
    permission_classes = (permissions.AllowAny,)

    def get_authenticate_header(self, request: Request) -> str:
        # With no authentication classes DRF would turn a 401 into a 403; a wrong credential
        # here is a 401, as with simplejwt's own views.
        return f'{api_settings.AUTH_HEADER_TYPES[0]} realm="api"'


class TokenObtainApi(_TokenApi):
    @extend_schema(
        operation_id="auth_token_create",
        request=TokenObtainInputSerializer,
        responses={
            200: TokenPairOutputSerializer,
            **_errors(
                e400="Username or password missing.",
                e401="Wrong username or password, or the account is inactive.",
                e429="Too many requests, or too many failed logins (`locked_out`); see Retry-After.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = TokenObtainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refresh = jwt.token_login(request=request, **data.validated_data)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


class TokenRefreshApi(_TokenApi):
    @extend_schema(
        operation_id="auth_token_refresh_create",
        request=TokenRefreshInputSerializer,
        responses={
            200: TokenPairOutputSerializer,
            **_errors(
                e400="No refresh token sent.",
                e401="The refresh token is invalid, expired, already used or revoked.",
                e429="Too many requests; see Retry-After.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = TokenRefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        raw = data.validated_data["refresh"]
        refresh, access = jwt.token_refresh(raw_refresh=raw)
        return Response({"access": access, "refresh": str(refresh) if refresh else raw})


class LogoutApi(_TokenApi):
    @extend_schema(
        operation_id="auth_logout_create",
        request=LogoutInputSerializer,
        responses={
            200: LogoutOutputSerializer,
            **_errors(
                e400="No refresh token sent.",
                e401="The refresh token is invalid, expired or already revoked.",
                e429="Too many requests; see Retry-After.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = LogoutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        revoked = jwt.token_logout(
            request=request, raw_refresh=data.validated_data["refresh"], everywhere=data.validated_data["all"]
        )
        return Response({"revoked": revoked})
