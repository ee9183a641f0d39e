"""The shared kernel: what every layer may import and that imports no project code.

See docs/architecture.md (the layers).
"""
