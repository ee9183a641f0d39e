"""Channels group names and message types shared by the relay (sender) and the consumer."""

PUSH_MESSAGE_TYPE = "outbox.events"


def student_group(student_id: int) -> str:
    return f"student.{student_id}"
