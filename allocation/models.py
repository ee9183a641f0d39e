"""Trainers, their weekly availability and their allocation to purchases. Change them through
`allocation.services`."""

from datetime import time

from django.db import models
from django.db.models import F, Q

from purchases.models import Purchase


class Trainer(models.Model):
    name = models.CharField(max_length=200, unique=True)
    capacity = models.PositiveIntegerField(help_text="How many active purchases this trainer can take.")
    # Maintained by the allocation service under the trainer's row lock; the CHECK is the last guard.
    active_count = models.PositiveIntegerField(default=0, editable=False)
    # IANA name: availability is wall-clock time there, so 10:00 stays 10:00 across DST changes.
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone, e.g. Europe/Berlin.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(active_count__lte=F("capacity")), name="trainer_active_count_within_capacity"
            )
        ]

    def __str__(self) -> str:
        return self.name


class AvailabilityWindow(models.Model):
    """A weekly window in the trainer's local time in which sessions may start and end.

    `ends` of 00:00 means midnight at the end of the day. Windows of one weekday may not overlap
    (checked by `allocation.services.availability_replace`).
    """

    class Weekday(models.IntegerChoices):
        MONDAY = 0
        TUESDAY = 1
        WEDNESDAY = 2
        THURSDAY = 3
        FRIDAY = 4
        SATURDAY = 5
        SUNDAY = 6

    trainer = models.ForeignKey(Trainer, on_delete=models.CASCADE, related_name="availability")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    starts = models.TimeField()
    ends = models.TimeField(help_text="00:00 means midnight (end of the day).")

    class Meta:
        ordering = ["weekday", "starts"]
        constraints = [
            models.CheckConstraint(condition=Q(weekday__lte=6), name="availability_weekday_0_6"),
            models.CheckConstraint(
                condition=Q(ends__gt=F("starts")) | Q(ends=time(0)), name="availability_ends_after_starts"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.starts:%H:%M}-{self.ends:%H:%M}"


class Allocation(models.Model):
    purchase = models.OneToOneField(Purchase, on_delete=models.PROTECT, related_name="allocation")
    trainer = models.ForeignKey(Trainer, on_delete=models.PROTECT, related_name="allocations")
    allocated_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)
    # The first start of the free series allocation found in the trainer's calendar when it chose the
    # trainer. `sessions_generate` tries it first, reading only the weeks it covers rather than the
    # trainer's whole horizon; it is a proposal, never a booking (the sessions are what hold the time).
    proposed_start = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.trainer} -> purchase {self.purchase_id}"
