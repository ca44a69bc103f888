"""Alembic migrations of the kitaru_core store (run automatically when a store is opened)."""
