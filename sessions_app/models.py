"""Training sessions of a purchase. Change them through `sessions_app.services`."""

from django.db import models

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
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["purchase", "number"], name="session_purchase_number_uniq")]
        ordering = ["starts_at"]

    def __str__(self) -> str:
        return f"Session {self.number} of purchase {self.purchase_id}"
