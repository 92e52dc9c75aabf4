"""REST handlers, grouped by resource."""
