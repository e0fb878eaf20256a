"""Contract tests between the operator and the trainer; those marked ``integration`` get a real control plane
from ``support.fixtures``."""
