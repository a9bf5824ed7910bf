"""Planner: turns day-ahead prices and a battery spec into an optimal charge/discharge Schedule."""
