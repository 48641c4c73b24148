"""API keys in the admin: staff create them (the key is shown once, in the page's message),
list them and revoke them. The key itself is never stored, so it can never be shown again."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from access import services
from access.models import ApiKey

# The library's own (scope-less, user-less) model is not used: only ours is offered to staff.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=lambda: list(settings.API_SCOPES.items()),
        widget=forms.CheckboxSelectMultiple,
        required=True,
        help_text="What the key may call. Its user's own rights still apply.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "user", "scopes", "expiry_date", "revoked"]


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    form = ApiKeyForm
    list_display = (
        "prefix",
        "name",
        "user",
        "scope_list",
        "created",
        "expiry_date",
        "last_used_at",
        "revoked",
    )
    list_filter = ("revoked", "created")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)
    actions = ["revoke_keys"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = ("prefix", "created", "last_used_at")
        if obj is not None:
            # Who a key acts for and what it may do are fixed: make a new key to change them.
            fields += ("user", "scopes")
        if obj is not None and obj.revoked:
            fields += ("name", "revoked", "expiry_date")
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None:
            # Read-only fields cannot stay in the form's declared fields.
            kwargs["fields"] = [
                f for f in ApiKeyForm.Meta.fields if f not in self.get_readonly_fields(request, obj)
            ]
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="Scopes")
    def scope_list(self, key: ApiKey) -> str:
        return ", ".join(key.scopes) or "—"

    @admin.action(description="Revoke the selected API keys (cannot be undone)")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = [services.api_key_revoke(prefix=key.prefix) for key in queryset.filter(revoked=False)]
        self.message_user(request, f"Revoked {len(revoked)} API key(s).", messages.SUCCESS)
