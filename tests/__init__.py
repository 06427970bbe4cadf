"""Flywheel's tests, one folder per room; shared helpers in support/."""
