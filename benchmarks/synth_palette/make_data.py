"""python benchmarks/synth_palette/make_data.py VARIANT OUT [--vae-path DIR]: the demo's synth -> prepare -> encode
stages (4000 posts at 64 px, tiny preset) for one variant of variants.py, into OUT/{synth,prepared,latents}."""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("variant", choices=variants.NAMES)
ap.add_argument("out", type=Path)
ap.add_argument("--vae-path", default="")
a = ap.parse_args()
variants.apply(a.variant)
from vampdiffusion import demo  # noqa: E402

d = demo.DemoArgs(out=a.out, vae_path=a.vae_path)
cfg = demo.demo_config(d, [])
t = time.time()
demo.run_synth(d, a.out / "synth")
demo.run_prepare(cfg, a.out / "synth", a.out / "prepared")
demo.run_encode(cfg, a.out / "prepared", a.out / "latents")
print(a.variant, "data in", round(time.time() - t), "s")
