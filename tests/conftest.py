"""Shared fixtures: tiny configurations so the whole suite runs in minutes on two CPU cores."""

from __future__ import annotations

import os
import sys

# The root modules (configuration_mygpt, modeling_mygpt, ...) are importable from a source checkout too.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests never reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
