"""Trainers and their allocation to purchases. Change them through `allocation.services`."""

from django.db import models
from django.db.models import F, Q

from purchases.models import Purchase


class Trainer(models.Model):
    name = models.CharField(max_length=200, unique=True)
    capacity = models.PositiveIntegerField(help_text="How many active purchases this trainer can take.")
    # Maintained by the allocation service under the trainer's row lock; the CHECK is the last guard.
    active_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(active_count__lte=F("capacity")), name="trainer_active_count_within_capacity"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Allocation(models.Model):
    purchase = models.OneToOneField(Purchase, on_delete=models.PROTECT, related_name="allocation")
    trainer = models.ForeignKey(Trainer, on_delete=models.PROTECT, related_name="allocations")
    allocated_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.trainer} -> purchase {self.purchase_id}"
