"""VARIANT=name python benchmarks/synth_palette/colour.py <benchmarks/demo_colour.py arguments>:
demo_colour.py with the variant's palette in the oracle."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.dirname(here))
import variants  # noqa: E402

variants.apply()
import demo_colour  # noqa: E402

demo_colour.main()
