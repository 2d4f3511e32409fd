"""Tests of fault injection and bad inputs (the reliability ledger)."""
