"""The front door's machinery: ``reinit``, construction-time schemes (``build``, ``default_scheme``,
layer subclasses) and the scoped patches of torch they need.
"""
