"""Bank node service."""
