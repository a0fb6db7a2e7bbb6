"""Counting a prompt's tokens for a remote model (rag/remote.py) whose tokenizer is not here.

`load_tokenizer(name)` loads the remote model's own tokenizer when one is
configured (`generator_tokenizer`); otherwise `CharTokenizer` counts
conservatively from characters (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.config import Config
from rag.prompt import LLAMA31_TEMPLATE


class CharTokenizer:
    """A stand-in tokenizer whose count is a conservative upper bound of real token counts.

    The remote endpoint tokenizes with its own model; without that tokenizer we
    can only over-estimate, so that a prompt counted within budget here is within
    budget there. Pieces, measured against the offline SmolLM2 tokenizer (49k
    byte-level BPE; Llama 3's 128k vocabulary needs fewer tokens still):

    - a word of ASCII letters (lower case, or capitalized), with the one space
      before it, is one token per 3 letters; a run of capitals ("NASA", "THE
      ANNUAL REPORT") one per 2, as tokenizers split them finer. English prose
      runs ~4.4 characters per token in SmolLM2 and Llama 3; this counts ~2.6
      (xquad en: 41,076 real tokens, 69,534 counted; ALL CAPS prose ~1.3x over).
    - every other ASCII character (digits, punctuation, whitespace) is one
      token: some tokenizers split digits one by one (SmolLM2, Qwen) and
      punctuation often stands alone.
    - every other character is as many tokens as its UTF-8 bytes (2 for
      accented Latin, Cyrillic, Arabic; 3 for Chinese, Japanese, Thai, Hindi; 4
      for emoji). A byte-level BPE never needs more than one token per byte,
      and a small vocabulary gets close: SmolLM2 needs ~1.6 bytes per token on
      Chinese and Thai (2 tokens per character), so one token per character
      would undercount it by half. For Llama 3 (~1.3 Chinese characters per
      token) this is ~4x over: set `generator_tokenizer` to use the budget fully.

    Measured over the eval corpora the count is 1.3-2.4x the real one (xquad en,
    zh, th, ar, hi; covidqa; 10-K pages with tables; code). Random strings are
    the exception: base64 or hex runs can take more tokens than counted; the
    endpoint then rejects the prompt as too long, which comes back as an error
    event, never a hang.

    Token ids encode the text itself, so `decode` inverts any prefix of an
    encoding (a prefix that ends inside a multi-token character leaves that
    character out). `chat_template` is None and `apply_chat_template` renders
    the pinned Llama 3.1 template: the remote applies its own template, and the
    Llama one spelled out in characters counts more than any ChatML-like one.
    """

    chat_template = None
    # ids: below 0x110000 a character (its code point); CONT a continuation token
    # of a multi-byte character; above CONT up to 4 ASCII bytes packed little-endian.
    CONT = 0x110000
    LETTERS_PER_TOKEN = 3  # a lower-case or capitalized word
    CAPITALS_PER_TOKEN = 2  # a run of capitals
    _WORD = re.compile(r" ?(?:[A-Z]?[a-z]+|[A-Z]+(?![a-z]))")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        del add_special_tokens  # there are no special tokens
        ids: list[int] = []
        pos = 0
        for match in self._WORD.finditer(text):
            self._encode_chars(text[pos:match.start()], ids)
            word = match.group()
            space = word[0] == " "
            letters = word[1:] if space else word
            step = (self.CAPITALS_PER_TOKEN if letters[-1].isupper()
                    else self.LETTERS_PER_TOKEN)
            for i in range(0, len(letters), step):
                piece = letters[i:i + step]
                if i == 0 and space:
                    piece = " " + piece
                ids.append(self.CONT + int.from_bytes(piece.encode("ascii"), "little"))
            pos = match.end()
        self._encode_chars(text[pos:], ids)
        return ids

    def _encode_chars(self, text: str, ids: list[int]) -> None:
        for char in text:
            size = len(char.encode("utf-8", "surrogatepass"))
            ids.extend([self.CONT] * (size - 1))
            ids.append(ord(char))

    def decode(self, ids: Sequence[int], **_: Any) -> str:
        out = []
        for value in ids:
            value = int(value)
            if value < self.CONT:
                out.append(chr(value))
            elif value > self.CONT:
                out.append((value - self.CONT).to_bytes(4, "little").rstrip(b"\0")
                           .decode("ascii"))
        return "".join(out)

    def apply_chat_template(self, messages: Sequence[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True, **_: Any) -> Any:
        by_role = {m["role"]: m["content"] for m in messages}
        text = LLAMA31_TEMPLATE.format(system=by_role.get("system", ""),
                                       user=by_role.get("user", ""))
        return self.encode(text) if tokenize else text


def load_tokenizer(name: str, config: Config | None = None) -> Any:
    """The tokenizer in folder or hub id `name` (mlx_lm's TokenizerWrapper).

    A hub id is taken from the hub cache, else downloaded (tokenizer files only)
    when the hub answers; raises rag.models.ModelError otherwise.
    """
    from rag.models import ModelError, cached_snapshot, hub_endpoint, hub_reachable

    folder = Path(name).expanduser()
    try:
        if not folder.exists():
            cached = cached_snapshot(name)
            if cached is None:
                timeout = config.hub_timeout if config is not None else 3.0
                if not hub_reachable(hub_endpoint(), timeout):
                    raise ModelError(f"generator tokenizer {name}: not a folder, not in the "
                                     "hub cache, and the model hub cannot be reached")
                from huggingface_hub import snapshot_download

                cached = snapshot_download(name, allow_patterns=[
                    "tokenizer*", "special_tokens_map.json", "*.model", "vocab*",
                    "merges.txt", "chat_template*", "config.json"])
            folder = Path(cached)
        from mlx_lm.tokenizer_utils import load

        return load(folder)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - loaders raise many types; one message
        reason = " ".join(str(exc).split())[:300]
        raise ModelError(f"generator tokenizer {name}: cannot load ({reason})") from exc


