"""Build the shipped spoken prompts with espeak-ng and sox (``callpark prompts build``).

Each prompt of :data:`callpark.model.prompts.PROMPT_TEXT` is spoken by espeak-ng (US
English, 150 words a minute), then sox converts it to 8 kHz 16-bit mono without dither,
trims the silence around the words and normalises the level. The results are committed
in ``callpark/data/prompts/`` so that runs do not depend on the voice installed; rebuild
them after changing a wording or the voice.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from callpark.errors import CallparkError
from callpark.model.prompts import PROMPT_TEXT, validate_prompt

SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "prompts"
VOICE = "en-us"
SPEED_WPM = 150
# trim leading and trailing silence (below 0.5 % for 20 ms), then normalise to -3 dBFS
SOX_EFFECTS = ["silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse", "norm", "-3"]


def build(out_dir: Path = SHIPPED_DIR) -> list[Path]:
    """Write every prompt as ``<name>.wav`` into ``out_dir``; returns the files written."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise CallparkError(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, words in PROMPT_TEXT.items():
            raw = Path(tmp) / f"{name}.wav"
            out = out_dir / f"{name}.wav"
            _run(["espeak-ng", "-v", VOICE, "-s", str(SPEED_WPM), "-w", str(raw), words])
            _run(["sox", "-D", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(out), *SOX_EFFECTS])
            validate_prompt(out.read_bytes())
            written.append(out)
    return written


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CallparkError(f"{argv[0]} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
