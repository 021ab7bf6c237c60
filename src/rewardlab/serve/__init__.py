"""Serving rewardlab over HTTP: the annotation app with its vote store, the reward server
and its client (``RemoteReward``)."""
