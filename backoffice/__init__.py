"""The operators' interface: the admin (admin/), the management commands and the traces they show.

Thin like the API: every change goes through the same services; see docs/architecture.md.
"""
