"""A synthetic spoken-digit set made with espeak-ng: the offline stand-in for the Free Spoken Digit Dataset.

``make data-spoken-digits`` (``python -m pipeline.data.spoken_digits DIR``) speaks the words
"zero" ... "nine" with the English accents and voice variants espeak-ng ships, at random speeds
and pitches, trims the silence around each word, resamples to 8 kHz mono and writes
``DIR/<digit>/<digit>_<n>.wav`` (16-bit PCM), a ``manifest.csv`` (file, label, voice, speed,
pitch) and a ``README.md`` that says the speech is synthetic. It is formant synthesis, not human
speech: far more uniform than recordings, so figures measured on it say little about real audio.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile
import soxr

from pipeline.data.audio import SYNTHETIC_MARKER


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
SPEEDS = (110, 221)   # words per minute, [low, high)
PITCHES = (20, 81)    # espeak-ng pitch 0-99, [low, high)
SILENCE = 0.02        # amplitude below which leading and trailing samples are cut


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed."""


def espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise EspeakMissing("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    return binary


def voice_variants(binary: str) -> list[str]:
    """The voice variants espeak-ng ships (``m1``, ``f3``, ``klatt``, ...), from ``--voices=variant``."""
    listing = subprocess.run([binary, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    variants = sorted({line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if len(line.split()) >= 5})
    return [v for v in variants if v not in ("fast",)]  # "fast" speeds speech up past recognition


def trim_silence(audio: np.ndarray, threshold: float = SILENCE) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def speak(binary: str, word: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """One word as float32 mono at ``sample_rate``, silence trimmed."""
    wav = subprocess.run([binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word], capture_output=True, check=True).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return trim_silence(soxr.resample(audio, rate, sample_rate).astype(np.float32))


def make_spoken_digits(out_dir: str | Path, per_class: int = 300, sample_rate: int = 8000, seed: int = 0, workers: int | None = None) -> Path:
    """Write the set into ``out_dir`` (replaced atomically); returns it. Seeded: the same call gives the same voices."""
    binary, out_dir = espeak_binary(), Path(out_dir)
    variants = voice_variants(binary)
    rng = np.random.default_rng(seed)
    jobs = []
    for label, word in enumerate(WORDS):
        for index in range(per_class):
            voice = f"{ACCENTS[rng.integers(len(ACCENTS))]}+{variants[rng.integers(len(variants))]}"
            jobs.append((label, index, word, voice, int(rng.integers(*SPEEDS)), int(rng.integers(*PITCHES))))
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for label in range(len(WORDS)):
        (tmp / str(label)).mkdir(parents=True)

    def render(job: tuple[int, int, str, str, int, int]) -> list[str | int]:
        label, index, word, voice, speed, pitch = job
        name = f"{label}/{label}_{index:04d}.wav"
        soundfile.write(tmp / name, speak(binary, word, voice, speed, pitch, sample_rate), sample_rate, subtype="PCM_16")
        return [name, label, voice, speed, pitch]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:  # each job waits on an espeak-ng process
        rows = list(pool.map(render, jobs))
    with open(tmp / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "voice", "speed", "pitch"])
        writer.writerows(rows)
    (tmp / "README.md").write_text(
        f"{SYNTHETIC_MARKER} spoken digits: {len(rows)} clips ({per_class} per digit) spoken by espeak-ng formant synthesis, not by people.\n\n"
        f"Made by `python -m pipeline.data.spoken_digits` (seed {seed}): accents {', '.join(ACCENTS)} x {len(variants)} voice variants, "
        f"speeds {SPEEDS[0]}-{SPEEDS[1] - 1} wpm, pitches {PITCHES[0]}-{PITCHES[1] - 1}; silence trimmed; {sample_rate} Hz mono 16-bit WAV.\n"
        "Folders are the labels (0-9). It stands in for the Free Spoken Digit Dataset offline; results on it do not carry over to real speech.\n"
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = make_spoken_digits(args.out_dir, args.per_class, args.sample_rate, args.seed)
    except EspeakMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.per_class * len(WORDS)} SYNTHETIC spoken-digit clips (espeak-ng) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
