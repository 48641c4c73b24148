"""Settings for bench/api.py's server only: the product's settings, with a URLconf that adds
the two floors (bench/floors.py). The product never imports this module."""

from config.settings import *  # noqa: F403 - the same settings, one thing changed

ROOT_URLCONF = "bench.floors"
