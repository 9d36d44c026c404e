"""Applying change events to the target: the service loop, mapping, the applier."""
