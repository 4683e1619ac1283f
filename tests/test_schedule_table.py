import re


from vampdiffusion.cli import main
from vampdiffusion.config import load_config
from vampdiffusion.diffusion.schedule_table import schedule_report


def test_vamp_schedule_prints_table_and_one_histogram_per_sampler(capsys):
    assert main(["schedule", "--config", "v1", "--samples", "20000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+999\s+0\s", out, re.M)                  # ᾱ_T = 0 printed at the terminal step
    assert "terminal SNR (t=999): 0" in out
    for name in ("uniform:", "lognormal(P_mean=-1.2, P_std=1.2):", "logit_normal(m=0.0, s=1.0):"):
        assert name in out
    assert out.count("950-999") == 3
    assert "<- diffusion.timestep_sampling" in out


def test_report_shows_lognormal_skipping_the_high_noise_region():
    text = schedule_report(load_config("v1"), 50_000, 10, 0)
    block = text.split("lognormal(")[1].split("\n\n")[0]
    above = float(re.search(r"t > 900: ([0-9.]+)%", block).group(1))
    assert above < 1.0


def test_vamp_schedule_rejects_bad_arguments(capsys):
    assert main(["schedule", "--samples", "0"]) == 2
    assert "number of draws must be >= 1" in capsys.readouterr().err
