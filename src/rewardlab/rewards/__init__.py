"""Rewards: one contract (``Reward``), a registry, and aggregation (``combine``)."""

from .base import Reward, RewardError, RewardOutput
from .registry import available, load, register

__all__ = ["Reward", "RewardError", "RewardOutput", "available", "load", "register"]
