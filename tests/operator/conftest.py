"""Operator tests: unit tests of the pure core need nothing; those marked ``integration`` get a real control plane
from ``support.fixtures``."""
