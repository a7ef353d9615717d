"""Reliability and security suite (issue 8): bad input, faults, load, secrets, property tests."""
