"""Aggregator service."""
