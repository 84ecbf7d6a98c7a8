"""The pure-Python tone generator and Goertzel detector."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from callpark import audio


def test_tone_detected_at_its_level(tmp_path: Path) -> None:
    path = audio.write_tone(tmp_path / "t.wav", 1000, 0.5, level=0.4)
    rate, samples = audio.read_wav(path)
    assert rate == 8000 and len(samples) == 4000
    report = audio.analyse_tone(path, 1000)
    assert report.present() and report.presence == 1.0
    assert report.level == pytest.approx(0.4, abs=0.01)
    assert report.purity > 0.99
    assert not audio.tone_present(path, 600)
    assert not audio.tone_present(path, 1100)


def test_silence_and_noise_have_no_tone(tmp_path: Path) -> None:
    silent = audio.write_wav(tmp_path / "s.wav", [0] * 8000)
    assert audio.analyse_tone(silent, 1000).presence == 0.0
    rng = random.Random(7)
    noisy = audio.write_wav(tmp_path / "n.wav", [rng.randint(-12000, 12000) for _ in range(8000)])
    assert not audio.tone_present(noisy, 1000)


def test_melody_and_partial_presence(tmp_path: Path) -> None:
    path = audio.write_melody(tmp_path / "m.wav", [(440, 0.5), (0, 0.25), (880, 0.25)])
    a = audio.analyse_tone(path, 440)
    b = audio.analyse_tone(path, 880)
    assert a.presence == pytest.approx(0.5, abs=0.1)
    assert b.presence == pytest.approx(0.25, abs=0.1)
    assert audio.analyse_tone(path, 880, skip_s=0.75).presence == pytest.approx(1.0, abs=0.1)


def test_tone_in_noise_and_other_formats(tmp_path: Path) -> None:
    rng = random.Random(3)
    tone = audio.tone_samples(700, 1.0, rate=16000, level=0.3)
    mixed = [s + rng.randint(-1500, 1500) for s in tone]
    path = audio.write_wav(tmp_path / "x.wav", mixed, rate=16000)
    report = audio.analyse_tone(path, 700)
    assert report.present(min_presence=0.9) and report.level == pytest.approx(0.3, abs=0.02)
    with pytest.raises(ValueError):
        audio.tone_samples(100, 1, level=1.5)
