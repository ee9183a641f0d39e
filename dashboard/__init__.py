"""The student's dashboard read model (docs/architecture.md)."""
