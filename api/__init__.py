"""The HTTP API (DRF): one module per resource; views are thin and call services and selectors."""
