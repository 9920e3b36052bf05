"""Tests of the example programs (examples/)."""
