"""Integration tests: torchinit on real third-party architectures built from configs (never downloaded weights).

The transformers tests run in the main test environment; the torchvision/timm tests in the second pinned
environment that `.ci/run` builds (torchvision's wheels need the full torch build). Each module skips itself
when its library is absent. Nothing here is registered globally.
"""
