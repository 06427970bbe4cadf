"""Tests of buffer."""
