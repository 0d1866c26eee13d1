"""Small byte-level BPE tokenizers with the real models' special tokens and chat formats.

The tiny test models (see `tiny_models`) need a tokenizer that mlx-lm and transformers load the same way
they load the real ones: a `tokenizer.json`, a `tokenizer_config.json` naming the eos token and carrying
the chat template, and the special tokens the engine's chat formatting and stop handling look for.

Public names:
  TokenizerSpec                      what one model family's tokenizer needs (special tokens, template, eos)
  TOKENIZER_SPECS                    family ("gpt_oss" | "gemma4" | "gemma4_vision") -> TokenizerSpec
  GEMMA_IMAGE_TOKENS                 gemma-4's image markup tokens (boi, image, eoi), in gemma4_vision only
  build_tokenizer(family)            -> tokenizers.Tokenizer (trained once per process; deterministic)
  trained_tokenizer_json(family)     -> str, the tokenizer.json text
  token_id(family, token)            -> int
  eos_token_ids(family)              -> list[int], the ids generation_config.json lists
  write_tokenizer_files(family, dir) writes tokenizer.json, tokenizer_config.json, special_tokens_map.json
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from agent.testing.tiny_templates import GEMMA_TEMPLATE, HARMONY_TEMPLATE

# Big enough for a few hundred merges, small enough to embed. Role and channel words are included so the
# chat markup encodes to a few tokens, as it does with the real vocabularies.
_CORPUS = """
The quick brown fox jumps over the lazy dog, and the dog does not mind at all.
A provider serves two models to many users at once, one token at a time.
Each request has a prompt and a limit on how many tokens it may produce.
The memory gate decides whether a model can be loaded beside the others that are already resident.
Keys and values are cached for every layer, so the cost of a sequence grows with its length.
Sliding window layers keep only the most recent tokens; full attention layers keep them all.
When the budget is short the agent stops admitting new work rather than killing a stream.
The coordinator routes each request to a provider that has room, and tries the next one if it is refused.
Hello! How are you today? I am well, thank you. What would you like to talk about?
Please summarize the following paragraph in one sentence and answer in plain English.
Water boils at one hundred degrees at sea level, and it freezes at zero.
The capital of France is Paris; the capital of Italy is Rome; the capital of Spain is Madrid.
Reasoning: low medium high. Think step by step, then give the final answer.
system user assistant developer model analysis commentary final thought channel message
You are a helpful assistant. Knowledge cutoff and current date are given below.
One, two, three, four, five, six, seven, eight, nine, ten. 0 1 2 3 4 5 6 7 8 9 10 100 1000
Numbers, names, places and dates appear in ordinary text more often than one might expect.
A small model with random weights says nothing useful, but it says it quickly and the same way every time.
"""

_VOCAB_SIZE = 640  # a target: the corpus may support fewer merges; the trained size is what counts



@dataclass(frozen=True, slots=True)
class TokenizerSpec:
    special_tokens: tuple[str, ...]  # in id order, from 0
    eos_token: str  # tokenizer_config.json's eos_token
    stop_tokens: tuple[str, ...]  # generation_config.json's eos_token_id list, in the real models' order
    pad_token: str
    chat_template: str
    bos_token: str | None = None  # when set, encoding prepends it (gemma's post-processor does)
    tool_tokens: tuple[str, ...] = ()  # special tokens of the tool format, added after the trained vocabulary
    unk_token: str | None = None


# gemma-4's image markup (the release's names): begin-of-image, the soft-token placeholder, end-of-image.
GEMMA_IMAGE_TOKENS = ("<|image>", "<|image|>", "<image|>")

TOKENIZER_SPECS: dict[str, TokenizerSpec] = {
    # Real ids: <|endoftext|> 199999, <|return|> 200002, <|call|> 200012; ours are small.
    "gpt_oss": TokenizerSpec(
        special_tokens=(
            "<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>",
            "<|return|>", "<|call|>", "<|constrain|>",
        ),
        eos_token="<|return|>",
        stop_tokens=("<|return|>", "<|endoftext|>", "<|call|>"),
        pad_token="<|endoftext|>",
        chat_template=HARMONY_TEMPLATE,
    ),
    # Same order as the real vocabulary's head (<pad> 0, <eos> 1, <bos> 2, <unk> 3); <turn|> is 106 there.
    "gemma4": TokenizerSpec(
        special_tokens=(
            "<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>",
        ),
        # Added after training, so the vocabulary and merges of the tokens above stay as they were.
        tool_tokens=("<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
                     '<|"|>'),
        eos_token="<eos>",
        stop_tokens=("<eos>", "<turn|>", "<|tool_response>"),  # the model waits for a tool's result there
        pad_token="<pad>",
        chat_template=GEMMA_TEMPLATE,
        bos_token="<bos>",
        unk_token="<unk>",
    ),
}
# The vision variant's vocabulary: the same, with the image tokens added last (so no other id moves).
TOKENIZER_SPECS["gemma4_vision"] = dataclasses.replace(
    TOKENIZER_SPECS["gemma4"], tool_tokens=TOKENIZER_SPECS["gemma4"].tool_tokens + GEMMA_IMAGE_TOKENS
)


@functools.cache
def trained_tokenizer_json(family: str) -> str:
    spec = TOKENIZER_SPECS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.strip().splitlines(), trainer=trainer)
    tokenizer.add_special_tokens(list(spec.tool_tokens))
    if spec.bos_token is not None:
        # Like gemma's own tokenizer: plain encoding prepends <bos>. Chat prompts carry it from the template,
        # and mlx-lm does not add it again to a prompt that already starts with it.
        bos, bos_id = spec.bos_token, tokenizer.token_to_id(spec.bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tokenizer.to_str()


def build_tokenizer(family: str) -> Tokenizer:
    """A fresh copy of the family's trained tokenizer (training is cached; callers may mutate the copy)."""
    return Tokenizer.from_str(trained_tokenizer_json(family))


def token_id(family: str, token: str) -> int:
    found = build_tokenizer(family).token_to_id(token)
    if found is None:
        raise KeyError(f"{token!r} is not in the tiny {family} vocabulary")
    return found


def eos_token_ids(family: str) -> list[int]:
    return [token_id(family, token) for token in TOKENIZER_SPECS[family].stop_tokens]


def _tokenizer_config(spec: TokenizerSpec) -> dict:
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": spec.eos_token,
        "pad_token": spec.pad_token,
        "bos_token": spec.bos_token,
        "unk_token": spec.unk_token,
        "chat_template": spec.chat_template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
    }
    return {key: value for key, value in config.items() if value is not None}


def write_tokenizer_files(family: str, out_dir: Path) -> None:
    spec = TOKENIZER_SPECS[family]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(trained_tokenizer_json(family), encoding="utf-8")
    config = _tokenizer_config(spec)
    _write_json(out_dir / "tokenizer_config.json", config)
    special = {key: config[key] for key in ("bos_token", "eos_token", "pad_token", "unk_token") if key in config}
    _write_json(out_dir / "special_tokens_map.json", special)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
