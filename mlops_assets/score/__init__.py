"""Batch scoring of each day's transactions by the aliased (champion) model."""
