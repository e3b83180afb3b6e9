"""stemflow."""
