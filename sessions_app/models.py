"""Training sessions of a purchase. Change them through `sessions_app.services`."""

from django.contrib.postgres.constraints import ExclusionConstraint
from django.db import models
from django.db.models import F, Func, Q, Value

from allocation.models import Trainer
from purchases.models import Purchase


class TrainingSession(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled"
        CANCELLED = "cancelled"
        COMPLETED = "completed"

    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="sessions")
    trainer = models.ForeignKey(Trainer, on_delete=models.PROTECT, related_name="sessions")
    number = models.PositiveSmallIntegerField()
    starts_at = models.DateTimeField()
    duration_minutes = models.PositiveSmallIntegerField()
    # starts_at + duration, stored: the no-overlap constraint indexes [starts_at, ends_at).
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["purchase", "number"], name="session_purchase_number_uniq"),
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="session_ends_after_start"),
            # A trainer never has two scheduled sessions that overlap, whoever writes. The embedded
            # PostgreSQL has no btree_gist, so the trainer is carried as a one-value range: ranges
            # have GiST support built in, and `&&` on [id, id] is equality.
            ExclusionConstraint(
                name="session_trainer_no_overlap",
                expressions=[
                    (Func(F("trainer_id"), F("trainer_id"), Value("[]"), function="int8range"), "&&"),
                    (Func(F("starts_at"), F("ends_at"), function="tstzrange"), "&&"),
                ],
                condition=Q(status="scheduled"),
            ),
        ]
        ordering = ["starts_at"]

    def __str__(self) -> str:
        return f"Session {self.number} of purchase {self.purchase_id}"
