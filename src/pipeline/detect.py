"""Which modality lies at a path, for ``data=folder`` and for a prompt (``sample.prompt``): standard library
only, because the entry point asks before Hydra composes the config (the modality decides the
tokenizer's networks, its loss, the media and the evaluator), and a prompt of the wrong kind is
refused before torch loads; every command would otherwise pay for importing torch first.
"""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PIXEL_CSV = (".csv", ".csv.gz")


def _is_utf8_text(path: Path, probe: int = 4096) -> bool:
    """The first ``probe`` bytes decode as UTF-8 (a character cut at the probe's end aside) and hold no NUL byte."""
    with path.open("rb") as handle:
        head = handle.read(probe)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return False
    return b"\0" not in head


def detect_modality(path: str | Path) -> str | None:
    """``image``, ``audio`` or ``text`` from what lies at ``path``; None when it does not exist, cannot be read or says nothing.

    A file is a pixel CSV (image) or UTF-8 text; a folder holds class subfolders of audio or image files, or IDX files.
    """
    try:
        return _detect(Path(path).expanduser())
    except OSError:
        return None  # the data module reports the unreadable path in its own words


def _detect(path: Path) -> str | None:
    if path.is_file():
        if path.name.endswith(PIXEL_CSV):
            return "image"
        return "text" if _is_utf8_text(path) else None
    if not path.is_dir():
        return None
    if any(path.glob("*idx3*")):
        return "image"
    suffixes = {f.suffix.lower() for sub in path.iterdir() if sub.is_dir() for f in sub.iterdir() if f.is_file()}
    if suffixes & AUDIO_SUFFIXES:
        return "audio"
    return "image" if suffixes & IMAGE_SUFFIXES else None


def modality_override(argv: list[str]) -> str | None:
    """``modality=<detected>`` to add to a command line that asks for ``data=folder data.path=P`` without a ``modality=``."""
    overrides = dict(arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-"))
    if overrides.get("data") != "folder" or "modality" in overrides or "data.path" not in overrides:
        return None
    detected = detect_modality(overrides["data.path"])
    return f"modality={detected}" if detected else None


def prompt_kind_error(prompt: str, kind: str) -> str | None:
    """Why ``prompt`` cannot be a ``kind`` (``text`` or ``audio``) prompt, or None: a text model given an audio
    file, or a speech model given anything but a file."""
    path = Path(prompt).expanduser()
    if kind == "text" and path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
        return f"sample.prompt={prompt} is an audio file, but this DiT reads text prompts: pass a sentence, e.g. sample.prompt='a handwritten three'"
    if kind == "audio" and not path.is_file():
        return f"this DiT reads spoken prompts: sample.prompt must be an audio file ({', '.join(sorted(AUDIO_SUFFIXES))}), and {prompt!r} is not a file"
    return None
