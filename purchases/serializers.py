from rest_framework import serializers

from purchases.models import Course


def storable_text(value: str) -> None:
    """PostgreSQL text holds neither U+0000 (CharField refuses it already) nor a lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise serializers.ValidationError("Must not contain a lone surrogate (\\ud800-\\udfff).") from exc


class PaymentDataSerializer(serializers.Serializer[dict[str, object]]):
    payment_id = serializers.CharField(max_length=128, validators=[storable_text])
    student_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    course_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$")


class ProviderEventEnvelopeSerializer(serializers.Serializer[dict[str, object]]):
    """What every provider event has; `data` is checked per type (unknown types are only recorded)."""

    id = serializers.CharField(max_length=128, validators=[storable_text])
    type = serializers.CharField(max_length=64, validators=[storable_text])
    created = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    # The provider's field is called `data`, which shadows Serializer.data; we never read .data here.
    data = serializers.DictField()  # type: ignore[assignment]


class PaymentWebhookSerializer(ProviderEventEnvelopeSerializer):
    """The documented body of `payment.succeeded` and `payment.refunded`."""

    type = serializers.ChoiceField(choices=["payment.succeeded", "payment.refunded"])  # type: ignore[assignment]
    data = PaymentDataSerializer()  # type: ignore[assignment]


class WebhookResultSerializer(serializers.Serializer[dict[str, object]]):
    purchase_id = serializers.IntegerField(required=False)
    status = serializers.CharField(required=False)
    ignored = serializers.BooleanField(required=False, help_text="True for an event type we do not handle.")


class ErrorDetailSerializer(serializers.Serializer[dict[str, object]]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer[dict[str, object]]):
    error = ErrorDetailSerializer()


class EventSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.UUIDField()
    seq = serializers.IntegerField()
    type = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    # Named `data` on the wire, like the WebSocket messages.
    data = serializers.DictField()  # type: ignore[assignment]


class EventsPageSerializer(serializers.Serializer[dict[str, object]]):
    events = EventSerializer(many=True)
    seq = serializers.IntegerField(help_text="Seq of the last event in this page (or `after` if none).")


class CourseSerializer(serializers.ModelSerializer[Course]):
    class Meta:
        model = Course
        fields = ["id", "title", "sessions_count", "session_minutes", "price", "currency"]


class NamedRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CourseRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    title = serializers.CharField()


class SessionSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    starts_at = serializers.DateTimeField(help_text="UTC, ISO 8601 with its offset (+00:00).")
    ends_at = serializers.DateTimeField(help_text="UTC, ISO 8601 with its offset (+00:00).")
    status = serializers.CharField()


class DashboardPurchaseSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    course = CourseRefSerializer()
    trainer = NamedRefSerializer(allow_null=True)
    sessions = SessionSerializer(many=True)


class StudentSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField()
    timezone = serializers.CharField(
        allow_null=True, help_text="The student's IANA time zone (profile); null: show the device's zone."
    )


class ProfileSerializer(serializers.Serializer[dict[str, object]]):
    timezone = serializers.CharField(
        max_length=64,
        allow_null=True,
        allow_blank=True,
        help_text='IANA time zone name, e.g. "Europe/Berlin"; null or "" clears it (the app uses the device\'s).',
    )


class DashboardSerializer(serializers.Serializer[dict[str, object]]):
    student = StudentSerializer()
    purchases = DashboardPurchaseSerializer(many=True)
    seq = serializers.IntegerField()
