"""Courses, payments and purchases. Students are Django users with an API token.

Rows of Purchase may only change in a transaction that also emits an outbox event for the purchase:
a deferred constraint trigger (migration 0002) rejects the COMMIT otherwise. Write through the services
(`purchases/services.py`; refunds and moves: `flows/`).
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


class Course(models.Model):
    title = models.CharField(max_length=200, unique=True)
    sessions_count = models.PositiveSmallIntegerField(default=6, validators=[MinValueValidator(1)])
    session_minutes = models.PositiveSmallIntegerField(default=60, validators=[MinValueValidator(15)])
    price = models.DecimalField(max_digits=10, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    currency = models.CharField(max_length=3, default="EUR")

    def __str__(self) -> str:
        return self.title


class Payment(models.Model):
    provider_payment_id = models.CharField(max_length=128, unique=True)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    currency = models.CharField(max_length=3)
    received_at = models.DateTimeField(auto_now_add=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.provider_payment_id


class Purchase(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        WAITLISTED = "waitlisted"
        ACTIVE = "active"
        REFUNDED = "refunded"

    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="purchase")
    student = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases")
    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="purchases")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="purchase_status_created_idx")]

    def __str__(self) -> str:
        return f"Purchase {self.pk} ({self.status})"


class StudentProfile(models.Model):
    """A student's preferences. Change it through `purchases.services.student_profile_update`."""

    student = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="profile"
    )
    # IANA name; empty: the student's app shows times in the device's own zone.
    timezone = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"Profile of student {self.student_id}"


class ProviderEvent(models.Model):
    """Every payment-provider event we accepted, once (the provider's event id is unique).

    Recorded in the same transaction as its effect, so an event is either fully applied or not
    recorded; unknown types are recorded as ignored, and answered 200 so the provider stops retrying.
    A payment that conflicts with the one already recorded under its payment id (`conflict`), and a
    refund that does not match its purchase (`mismatch`), are recorded without any effect, so that
    an operator sees them; the provider is answered 409 / 422 again on every retry.

    `raw_body` is the provider's exact bytes (the record); `payload` is their JSON in jsonb, with what
    jsonb cannot hold kept as text (`purchases.provider_body.storable`). Rows from before the raw bytes
    were kept have `raw_body` NULL.
    """

    class Outcome(models.TextChoices):
        APPLIED = "applied"
        IGNORED = "ignored"
        CONFLICT = "conflict"
        MISMATCH = "mismatch"

    provider_event_id = models.CharField(max_length=128, unique=True)
    type = models.CharField(max_length=64)
    payment_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    payload = models.JSONField()
    raw_body = models.BinaryField(null=True, editable=False)
    # For `conflict` and `mismatch`: what differed, {"field": {"recorded": ..., "sent": ...}}.
    problem = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.type} {self.provider_event_id} ({self.outcome})"
