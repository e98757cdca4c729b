"""Prompt files and safe file names for generated images."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

MAX_PROMPT_FILE_BYTES = 10 * 1024 * 1024
MAX_PROMPTS = 10_000
MAX_PROMPT_CHARS = 2_000


class PromptFileError(ValueError):
    """The prompt file cannot be used; the message names the file (and line)."""


def parse_prompts(text: str, source: str = "<prompts>") -> list[tuple[int, str]]:
    """(line number, prompt) for every line that is not blank and does not start with '#'."""
    out = []
    # Lines end at \n, \r\n or \r only (as editors count them); str.splitlines would also break
    # at \f, \x1c-\x1e, \x85, \u2028 and shift every later line number.
    for n, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = line.replace("\ufeff", "").strip()  # byte-order marks of concatenated files
        if any(unicodedata.category(ch) == "Cc" for ch in line):
            line = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in line).strip()
        if not line or line.startswith("#"):  # after the clean-up: "\x00# note" is a comment too
            continue
        line = " ".join(line.split())  # the prompt as used: the limit applies to it
        if len(line) > MAX_PROMPT_CHARS:
            raise PromptFileError(f"{source}, line {n}: prompt of {len(line)} characters; at most {MAX_PROMPT_CHARS} allowed")
        out.append((n, line))
        if len(out) > MAX_PROMPTS:
            raise PromptFileError(f"{source}: more than {MAX_PROMPTS} prompts; split the file")
    return out


def read_prompt_file(path: str | Path) -> list[tuple[int, str]]:
    """Read a UTF-8 prompt file, one prompt per line; clear errors for every way it can be wrong."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"prompt file {path} does not exist")
    if not path.is_file():
        raise PromptFileError(f"{path} is not a file")
    size = path.stat().st_size
    if size > MAX_PROMPT_FILE_BYTES:
        raise PromptFileError(f"prompt file {path} is {size / 2**20:.1f} MiB; at most {MAX_PROMPT_FILE_BYTES // 2**20} MiB")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PromptFileError(f"{path}, line {line}: not valid UTF-8 (byte {data[e.start]:#04x}); save the file as UTF-8") from None
    prompts = parse_prompts(text, str(path))
    if not prompts:
        raise PromptFileError(f"prompt file {path} holds no prompts (only blank lines or # comments); write one prompt per line")
    return prompts


def slugify(text: str, max_len: int = 48) -> str:
    """A readable, safe file-name stem: ascii letters, digits and dashes only (never empty, no '..')."""
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", norm).strip("-")[:max_len].strip("-")
    return slug or "prompt"
