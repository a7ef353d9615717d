"""Reliability and security suite: bad input, faults, load, secrets, property tests."""
