"""Fuzzing both WebSocket endpoints of a real replica with generated frames (issue #10)."""
