"""Tiny random-weight stand-ins for the default models, written to disk as the real ones ship.

The defaults (Llama 3.1 8B Instruct 4-bit, multilingual-e5-base) are too big to
run in tests, so these builders write folders of the same architectures and file
layouts, small enough to build in well under a second (mlx-lm's own tests build
tiny models the same way):

- `write_llama31`: mlx-lm `llama` with Llama 3.1's llama3 rope_scaling, 4-bit
  quantized like mlx-community's conversion; a byte-level BPE tokenizer carrying
  Llama 3.1's special tokens (same order, `<|eot_id|>` as eos) and its chat template.
- `write_xlmr`: mlx-embeddings `xlm-roberta` (pad_token_id 1, 514 positions) with
  a Unigram/Metaspace tokenizer.json laid out like XLM-R's (`<s> <pad> </s> <unk>` = 0..3).

Only the weights and vocabularies are made up.
"""

# ruff: noqa: E501
from __future__ import annotations

import json
import string
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

# Meta-Llama-3.1-8B-Instruct's tokenizer_config.json "chat_template", verbatim (hence the
# long lines: ruff's E501 is off for this file).
LLAMA31_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Llama 3.1's first special tokens, in their order after the BPE vocabulary (128000...).
LLAMA31_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
LLAMA31_ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# Llama 3's pre-tokenizer split (tokenizer.json of every Llama 3.x).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_BPE_CORPUS = [
    "You answer questions using only the numbered sources in the user's message.",
    "Sources:\n\n[1] Aurora Observatory History (p. 3)\nThe Aurora observatory was completed "
    "in 1932 on the summit of Mount Keller.\n\nQuestion: When was the observatory completed?",
    "Saffron is harvested by hand from the crocus flower in autumn. Ça coûte très cher.",
]


def llama31_tokenizer() -> Tokenizer:
    """A byte-level BPE (Llama 3's split, 384 pieces) plus Llama 3.1's special tokens."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_BPE_CORPUS * 4, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in LLAMA31_SPECIALS])
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, tok.token_to_id(bos))])])
    return tok


def write_llama31(folder: Path, *, seed: int = 3) -> Path:
    """A 2-layer Llama 3.1 (hidden 64, 4 heads, 2 KV heads), 4-bit like the default.

    Seed 3: greedy output on a RAG prompt varies token to token (seed 0 repeats one).
    """
    from mlx_lm.models import llama

    folder.mkdir(parents=True, exist_ok=True)
    tok = llama31_tokenizer()
    ids = {s: tok.token_to_id(s) for s in LLAMA31_SPECIALS}
    stops = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
        "vocab_size": tok.get_vocab_size(), "rope_theta": 500000.0,
        "max_position_embeddings": 131072, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
        "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": stops,
        "rope_scaling": dict(LLAMA31_ROPE_SCALING), "torch_dtype": "bfloat16",
        "quantization": {"group_size": 64, "bits": 4},
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    nn.quantize(model, group_size=64, bits=4)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    _write_json(folder / "config.json", config)
    _write_json(folder / "generation_config.json", {
        "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": stops, "do_sample": True,
        "temperature": 0.6, "top_p": 0.9})
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {
        "added_tokens_decoder": _added_tokens(ids), "bos_token": "<|begin_of_text|>",
        "chat_template": LLAMA31_CHAT_TEMPLATE, "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"})
    _write_json(folder / "special_tokens_map.json", {
        "bos_token": _token_json("<|begin_of_text|>"), "eos_token": _token_json("<|eot_id|>")})
    return folder


XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in XLM-R; <mask> is last


def xlmr_tokenizer() -> Tokenizer:
    """XLM-R's tokenizer.json layout: Unigram over ▁-marked pieces, `<s> $A </s>`."""
    chars = string.ascii_letters + string.digits + string.punctuation
    words = ["query", "passage", "the", "tides", "harbour", "aurora", "observatory", "mirror"]
    vocab = [(s, 0.0) for s in XLMR_SPECIALS] + [("▁", -3.0)]
    vocab += [("▁" + w, -4.0) for w in words] + [(":", -4.0)]
    vocab += [("▁" + c, -7.0) for c in chars] + [(c, -6.0) for c in chars] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in XLMR_SPECIALS + ["<mask>"]])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok


def write_xlmr(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer XLM-RoBERTa encoder (hidden 64, 4 heads), float32 weights."""
    from mlx_embeddings.models import xlm_roberta

    folder.mkdir(parents=True, exist_ok=True)
    tok = xlmr_tokenizer()
    config = {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "hidden_act": "gelu", "max_position_embeddings": 514, "type_vocab_size": 1,
        "vocab_size": tok.get_vocab_size(), "pad_token_id": 1, "bos_token_id": 0,
        "eos_token_id": 2, "layer_norm_eps": 1e-5, "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    }
    mx.random.seed(seed)
    model = xlm_roberta.Model(xlm_roberta.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "mlx"})
    _write_json(folder / "config.json", config)
    tok.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "mask_token": "<mask>", "model_max_length": 512})
    return folder


def _token_json(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}


def _added_tokens(ids: dict[str, int]) -> dict[str, dict]:
    return {str(i): {**_token_json(s), "special": True} for s, i in ids.items()}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
