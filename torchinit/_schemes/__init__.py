"""Planning: the scheme protocol and registry, plans and their checks, variance-scaling schemes and
overrides, ``legacy``, LSUV, recipes, and the report. Knows nothing of how tensors are written.
"""
