"""The admin site: Django's, except that every model admin registered on it (ours, auth's, axes')
checks an action's selection before the action runs.

Django's own `response_action` filters `pk__in=<the posted ids>` as they come, so one id that is not
an id of the model (`abc`, `1e308`, a NUL) raised ValueError inside the action: a 500 for a form
any staff member can post. Installed as the default site by `BackofficeAdminConfig`
(INSTALLED_APPS), so `@admin.register` and third-party apps register here.
"""

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse


class SelectionCheckedAdmin(admin.ModelAdmin):
    """Refuses an action whose posted selection holds a value that is not a primary key of the
    model, with a message and nothing done, as Django refuses an empty selection."""

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        pk = self.model._meta.pk
        assert pk is not None
        try:
            for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                pk.to_python(value)
        except ValidationError:
            self.message_user(
                request,
                "The selection holds something that is not an id of this list. Nothing was changed.",
                messages.ERROR,
            )
            return None
        return super().response_action(request, queryset)


class BackofficeAdminSite(admin.AdminSite):
    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, SelectionCheckedAdmin):
            # As Django itself does when `register` gets options: a subclass made on the spot, keeping the
            # admin's module and name (the metaclass would otherwise give it django.forms.widgets').
            admin_class = type(
                admin_class.__name__,
                (SelectionCheckedAdmin, admin_class),
                {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
            )
        super().register(model_or_iterable, admin_class, **options)


__all__ = ["BackofficeAdminSite", "SelectionCheckedAdmin"]
