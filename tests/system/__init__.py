"""Tests of the whole system: launch, the loop end to end, and the house rules (imports)."""
