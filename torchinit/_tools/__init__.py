"""Tools on top of the library: the audit, its report and plot, the CLI and the demo. Nothing in the
library imports them.
"""
