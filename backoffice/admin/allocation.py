"""Trainers and allocations in the admin.

Trainers are reference data: name, capacity, time zone and weekly availability are editable (saved
through `trainer_save` and `availability_replace`), `active_count` is not (the allocation service
keeps it under the trainer's row lock). Allocations change only through the services: read-only
here, and the "allocate waitlisted purchases" action calls `waitlist_promote`.
"""

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from allocation.models import Allocation, AvailabilityWindow, Trainer
from allocation.services import (
    CapacityBelowLoad,
    InvalidAvailability,
    availability_check,
    availability_replace,
    trainer_save,
    waitlist_promote,
)
from backoffice.admin.base import ReadOnlyModelAdmin
from kernel.timezones import UnknownTimezone, zone
from outbox.services import Cause


class TrainerForm(forms.ModelForm):
    class Meta:
        model = Trainer
        fields = ("name", "capacity", "timezone")

    def clean_timezone(self) -> str:
        name = str(self.cleaned_data["timezone"]).strip()
        try:
            zone(name)
        except UnknownTimezone as exc:
            raise forms.ValidationError(str(exc)) from exc
        return name

    def clean_capacity(self) -> int:
        capacity = int(self.cleaned_data["capacity"])
        if self.instance.pk is not None:
            # Fresh from the database: the count on the form's instance may be stale already.
            active = Trainer.objects.filter(pk=self.instance.pk).values_list("active_count", flat=True).first() or 0
            if capacity < active:
                raise forms.ValidationError(
                    f"This trainer has {active} active purchases; capacity can't go below that "
                    f"(refund or let purchases end first)."
                )
        return capacity


def _windows(formset: Any) -> list[Any]:
    return [
        (f.cleaned_data["weekday"], f.cleaned_data["starts"], f.cleaned_data["ends"])
        for f in formset.forms
        if f.cleaned_data and not f.cleaned_data.get("DELETE")
    ]


class AvailabilityFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):  # a row already refused (weekday 99, a time of 25:99) has no cleaned value to check
            return
        try:
            availability_check(_windows(self))
        except InvalidAvailability as exc:
            raise forms.ValidationError(str(exc)) from exc


class AvailabilityInline(admin.TabularInline):
    model = AvailabilityWindow
    formset = AvailabilityFormSet
    extra = 1
    verbose_name_plural = "Weekly availability (in the trainer's time zone; an end of 00:00 is midnight)"


@admin.register(Trainer)
class TrainerAdmin(admin.ModelAdmin):
    form = TrainerForm
    inlines = (AvailabilityInline,)
    list_display = ("id", "name", "capacity", "timezone", "active_count")
    readonly_fields = ("active_count",)
    search_fields = ("name",)
    actions = ("promote_waitlist",)

    def save_model(self, request: HttpRequest, obj: Trainer, form: Any, change: bool) -> None:
        """Through `trainer_save`: only name, capacity and time zone are written (never a stale `active_count`),
        capacity is checked under the row lock, and a rename refreshes the students' apps."""
        try:
            saved = trainer_save(
                trainer_id=obj.pk if change else None,
                name=form.cleaned_data["name"],
                capacity=form.cleaned_data["capacity"],
                timezone_name=form.cleaned_data["timezone"],
                actor=f"admin:{request.user.get_username()}",
            )
        except CapacityBelowLoad as exc:  # lost a race with an allocation since the form was checked
            messages.error(request, f"Not saved: {exc}")
            return
        obj.pk = saved.pk

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """The availability through `availability_replace` (validated as a whole), not row by row."""
        if form.instance.pk is None:  # the trainer was not saved (see save_model)
            return
        for formset in formsets:
            if isinstance(formset, AvailabilityFormSet):
                availability_replace(trainer_id=form.instance.pk, windows=_windows(formset))
                # What formset.save() would have recorded, for the admin's change message.
                formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("purchases.change_purchase"))

    @admin.action(description="Allocate waitlisted purchases to free capacity (oldest first)", permissions=["operate"])
    def promote_waitlist(self, request: HttpRequest, queryset: QuerySet[Trainer]) -> None:
        # Each allocation joins its own payment's chain; this id only names the admin's request.
        cause = Cause(
            actor=f"admin:{request.user.get_username()}", correlation_id=f"admin-promote:{uuid.uuid4().hex[:12]}"
        )
        allocated = waitlist_promote(cause=cause)
        self.message_user(request, f"Allocated {len(allocated)} waitlisted purchase(s).")


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "purchase", "trainer", "allocated_at", "released_at")
    list_select_related = ("purchase", "trainer")
    list_filter = ("trainer",)
    search_fields = ("=purchase__payment__provider_payment_id",)
    ordering = ("-id",)
