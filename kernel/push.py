"""The push contract shared by the relay (sender) and the WebSocket consumer: Channels group names and message types."""

PUSH_MESSAGE_TYPE = "outbox.events"


def student_group(student_id: int) -> str:
    return f"student.{student_id}"
