from rest_framework import serializers


class PaymentDataSerializer(serializers.Serializer[dict[str, object]]):
    payment_id = serializers.CharField(max_length=128)
    student_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    course_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    amount = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$")


class PaymentWebhookSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.CharField(max_length=128)
    type = serializers.CharField(max_length=64)
    created = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    # The provider's field is called `data`, which shadows Serializer.data; we never read .data here.
    data = PaymentDataSerializer()  # type: ignore[assignment]


class WebhookResultSerializer(serializers.Serializer[dict[str, object]]):
    purchase_id = serializers.IntegerField()
    status = serializers.CharField()


class NamedRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CourseRefSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    title = serializers.CharField()


class SessionSerializer(serializers.Serializer[dict[str, object]]):
    id = serializers.IntegerField()
    starts_at = serializers.DateTimeField()
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


class DashboardSerializer(serializers.Serializer[dict[str, object]]):
    student = StudentSerializer()
    purchases = DashboardPurchaseSerializer(many=True)
    seq = serializers.IntegerField()
