"""Purchases in the admin: every change goes through the same services as the webhook.

Adding a purchase calls `purchase_create`; the actions call `trainer_allocate`, `purchase_refund`
and `student_resync_request`. Each event records the admin user as its actor (`admin:<username>`),
and the relay does the rest (cache, app, follow-up work) exactly as for a payment. Purchases and
payments are otherwise read-only here; a direct save would be rejected at COMMIT anyway.
"""

from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from allocation.services import trainer_allocate
from backoffice.admin.base import ReadOnlyModelAdmin, as_id, trace_url
from backoffice.trace import payment_trace
from flows import moves, refunds
from kernel.errors import ApplicationError
from outbox.services import Cause
from purchases import selectors, services
from purchases.models import Course, Payment, ProviderEvent, Purchase

_RESULT = "_purchase_create_result"  # the add view's service result, kept on the request


def admin_actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class PurchaseAddForm(forms.ModelForm):
    """What the webhook carries. Only validates: `PurchaseAdmin.save_model` calls the service."""

    payment_id = forms.CharField(
        max_length=128, help_text="The provider's payment id. Adding the same payment twice changes nothing."
    )
    amount = forms.DecimalField(
        max_digits=10, decimal_places=2, min_value=0, required=False, help_text="Default: the course's price."
    )
    currency = forms.RegexField(
        regex=r"^[A-Za-z]{3}$", required=False, help_text="ISO 4217, e.g. EUR. Default: the course's currency."
    )

    class Meta:
        model = Purchase
        fields = ("payment_id", "student", "course", "amount", "currency")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        student = self.fields["student"]
        student.queryset = get_user_model().objects.filter(is_active=True)  # type: ignore[attr-defined]
        student.error_messages["invalid_choice"] = "No active student with this id."
        self.fields["course"].error_messages["invalid_choice"] = "No course with this id."

    def clean_payment_id(self) -> str:
        return str(self.cleaned_data["payment_id"]).strip()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        student, course, payment_id = data.get("student"), data.get("course"), data.get("payment_id")
        if student and (student.is_staff or student.is_superuser):
            raise forms.ValidationError(
                f"User {student.pk} is staff or a superuser, not a student: only students can hold purchases."
            )
        existing = Purchase.objects.filter(payment__provider_payment_id=payment_id).first() if payment_id else None
        if existing and student and course and (existing.student_id, existing.course_id) != (student.pk, course.pk):
            raise forms.ValidationError(
                f"Payment {payment_id} already has purchase {existing.pk} for student {existing.student_id}, "
                f"course {existing.course_id}. Refund it first if it is wrong."
            )
        return data


@admin.register(Purchase)
class PurchaseAdmin(admin.ModelAdmin):
    list_display = ("id", "payment", "student", "course", "status", "created_at", "timeline")
    list_filter = ("status", "course")
    list_select_related = ("payment", "student", "course")
    search_fields = ("=payment__provider_payment_id", "student__username", "student__email")
    search_help_text = "Exact payment id, or the student's username or email"
    ordering = ("-id",)
    raw_id_fields = ("student",)
    actions = ("rerun_allocation", "refund", "move_to_course", "resync_students")
    view_fields = ("payment", "student", "course", "status", "trainer", "sessions_summary", "created_at", "updated_at")

    # -- permissions: add through the service, change only through actions ---------------------------

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May run the actions (they change purchases through services)."""
        return bool(request.user.has_perm("purchases.change_purchase"))

    # -- add ---------------------------------------------------------------------------------------

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = PurchaseAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [(None, {"fields": PurchaseAddForm.Meta.fields})]
        return [(None, {"fields": self.view_fields}), ("Events", {"fields": ("verdict", "timeline")})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else (*self.view_fields, "verdict", "timeline")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except ApplicationError as exc:  # validated by the form; only a concurrent change gets here
            self.message_user(request, f"Nothing was created: {exc.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Purchase, form: Any, change: bool) -> None:
        """Create through `purchase_create` (never `obj.save()`), then show the purchase it returned."""
        data, course = form.cleaned_data, form.cleaned_data["course"]
        result = services.purchase_create(
            payment_id=data["payment_id"],
            student_id=data["student"].pk,
            course_id=course.pk,
            amount=data["amount"] if data["amount"] is not None else course.price,
            currency=data["currency"] or course.currency,
            actor=admin_actor(request),
        )
        setattr(request, _RESULT, result)
        obj.pk = result.purchase.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        result = getattr(request, _RESULT, None)
        return super().log_addition(request, obj, message) if result is None or result.created else None

    def response_add(self, request: HttpRequest, obj: Purchase, post_url_continue: str | None = None) -> HttpResponse:
        result = getattr(request, _RESULT, None)
        if result is not None and not result.created:
            self.message_user(
                request, f"Payment {obj.payment} already had purchase {obj.pk}: nothing changed.", messages.WARNING
            )
        else:
            self.message_user(
                request,
                format_html(
                    "Created purchase {} and emitted purchase.created: the relay allocates a trainer, schedules "
                    'sessions and updates the student\'s app. <a href="{}">Follow it on the timeline</a>.',
                    obj.pk,
                    trace_url(obj.payment.provider_payment_id),
                ),
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:purchases_purchase_change", args=[obj.pk]))

    # -- display -----------------------------------------------------------------------------------

    @admin.display(description="timeline")
    def timeline(self, obj: Purchase) -> str:
        return format_html('<a href="{}">events and deliveries</a>', trace_url(obj.payment.provider_payment_id))

    @admin.display(description="delivery verdict")
    def verdict(self, obj: Purchase) -> str:
        trace = payment_trace(payment_id=obj.payment.provider_payment_id)
        return f"{trace.verdict.state}: {trace.verdict.message}" if trace else "no events (purged?)"

    @admin.display(description="trainer")
    def trainer(self, obj: Purchase) -> str:
        allocation = getattr(obj, "allocation", None)
        if allocation is None:
            return "-"
        return f"{allocation.trainer}" + (" (released)" if allocation.released_at else "")

    @admin.display(description="sessions")
    def sessions_summary(self, obj: Purchase) -> str:
        counts = Counter(obj.sessions.values_list("status", flat=True))
        return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "-"

    # -- actions: each calls a service with the admin user as the actor ----------------------------

    @admin.action(description="Re-run allocation (pending or waitlisted purchases)", permissions=["operate"])
    def rerun_allocation(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        outcome: Counter[str] = Counter()
        rows = queryset.values_list("id", "payment__provider_payment_id", "status")
        for purchase_id, payment_id, status in rows:
            if status not in (Purchase.Status.PENDING, Purchase.Status.WAITLISTED):
                outcome["skipped (already active or refunded)"] += 1
                continue
            # The allocation joins the payment's chain, with the admin as its cause.
            cause = Cause(actor=admin_actor(request), correlation_id=payment_id)
            allocated = trainer_allocate(purchase_id=purchase_id, cause=cause) is not None
            outcome["allocated" if allocated else "waitlisted (no trainer has free capacity)"] += 1
        self.message_user(request, "Allocation: " + ", ".join(f"{n} {what}" for what, n in outcome.items()) + ".")

    @admin.action(description="Refund selected purchases", permissions=["operate"])
    def refund(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> HttpResponse | None:
        refundable = queryset.exclude(status=Purchase.Status.REFUNDED).select_related("payment", "student", "course")
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Refund purchases?",
                "opts": self.model._meta,
                "purchases": list(refundable),
                "already_refunded": queryset.filter(status=Purchase.Status.REFUNDED).count(),
                "selected_ids": [str(pk) for pk in queryset.values_list("pk", flat=True)],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/purchases/purchase/refund_confirmation.html", context)
        refunded = 0
        for payment_id in refundable.values_list("payment__provider_payment_id", flat=True):
            refunded += refunds.purchase_refund(payment_id=payment_id, actor=admin_actor(request)).refunded
        self.message_user(request, f"Refunded {refunded} purchase(s): trainers freed, future sessions get cancelled.")
        return None

    @admin.action(description="Move selected purchases to another course", permissions=["operate"])
    def move_to_course(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> HttpResponse | None:
        """`purchase_move`, as `fix_purchase --move-to-course`: refund and new purchase in one transaction."""
        movable = queryset.exclude(status=Purchase.Status.REFUNDED).select_related("payment", "student", "course")
        course_id = as_id(request.POST.get("course", ""))  # anything else (abc, 1.5) shows the choice again
        course = None if course_id is None else Course.objects.filter(pk=course_id).first()
        if request.POST.get("confirm") != "yes" or course is None:
            context = {
                **self.admin_site.each_context(request),
                "title": "Move purchases to another course?",
                "opts": self.model._meta,
                "purchases": list(movable),
                "courses": Course.objects.order_by("title"),
                "selected_ids": [str(pk) for pk in queryset.values_list("pk", flat=True)],
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/purchases/purchase/move_confirmation.html", context)
        moved, refused = 0, []
        for payment_id in movable.values_list("payment__provider_payment_id", flat=True):
            try:
                moved += moves.purchase_move(
                    payment_id=payment_id, course_id=course.pk, actor=admin_actor(request)
                ).created
            except ApplicationError as exc:
                refused.append(f"{payment_id}: {exc.message}")
        self.message_user(request, f"Moved {moved} purchase(s) to {course.title}: each refunded and bought anew.")
        if refused:
            self.message_user(request, "Not moved: " + "; ".join(refused), messages.WARNING)
        return None

    @admin.action(
        description="Resync the students' apps (invalidate cache, tell the app to refetch)", permissions=["operate"]
    )
    def resync_students(self, request: HttpRequest, queryset: QuerySet[Purchase]) -> None:
        student_ids = sorted(set(queryset.values_list("student_id", flat=True)))
        for student_id in student_ids:
            services.student_resync_request(student_id=student_id, actor=admin_actor(request))
        self.message_user(request, f"Requested a resync for {len(student_ids)} student(s).")


@admin.register(Payment)
class PaymentAdmin(ReadOnlyModelAdmin):
    list_display = ("provider_payment_id", "amount", "currency", "received_at", "refunded_at")
    search_fields = ("=provider_payment_id",)
    ordering = ("-id",)


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyModelAdmin):
    """What the payment provider sent us: "did the webhook even arrive?" comes before the trace."""

    list_display = ("provider_event_id", "type", "payment_id", "outcome", "received_at")
    list_filter = ("outcome", "type")
    search_fields = ("=payment_id", "=provider_event_id")
    ordering = ("-id",)
    fields = (
        *("provider_event_id", "type", "payment_id", "outcome", "problem", "received_at"),
        *("raw_body_text", "payload"),
    )
    readonly_fields = fields

    @admin.display(description="raw body (the provider's exact bytes)")
    def raw_body_text(self, obj: ProviderEvent) -> str:
        size = len(bytes(obj.raw_body)) if obj.raw_body is not None else 0
        return format_html(
            '<pre style="white-space: pre-wrap">{}</pre><p>{} bytes</p>', selectors.raw_body_text(obj.raw_body), size
        )


@admin.register(Course)
class CourseAdmin(admin.ModelAdmin):
    """Reference data, edited through `course_save`: a new title refreshes the buyers' apps."""

    list_display = ("id", "title", "sessions_count", "session_minutes", "price", "currency")
    search_fields = ("title",)

    def save_model(self, request: HttpRequest, obj: Course, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in form.fields if name in form.cleaned_data}
        saved = services.course_save(course_id=obj.pk if change else None, fields=fields, actor=admin_actor(request))
        obj.pk = saved.pk
