"""Durable writes: the finished file has the mode a plain open() gives (0666 less the umask), not mkstemp's 0600."""
import os
import stat
import subprocess
import sys

import pytest

WRITE = """
import os, sys
from pathlib import Path
from PIL import Image
from vampdiffusion.atomic import atomic_write, atomic_write_json
out = Path(sys.argv[1])
atomic_write_json(out / "report.json", {"kept": 1})
atomic_write(out / "image.png", lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG"))
"""


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_umask_mode_not_0600(tmp_path, umask):
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-c", f"import os; os.umask({umask}); exec({WRITE!r})", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for name in ("report.json", "image.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png", "report.json"]   # no temp file left
