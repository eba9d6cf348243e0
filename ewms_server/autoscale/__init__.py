"""Autoscaling: sizing an autoscaled task's workers from its backlog, within caps shared fairly."""
