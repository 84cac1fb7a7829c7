"""The maths floor: laws and their constants, fans, gains, the draw core, the initializers and the keyed
stream. Knows nothing of modules or schemes.
"""
