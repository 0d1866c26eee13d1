"""Small byte-level BPE tokenizers with the real models' special tokens and chat formats.

The tiny test models (see `tiny_models`) need a tokenizer that mlx-lm and transformers load the same way
they load the real ones: a `tokenizer.json`, a `tokenizer_config.json` naming the eos token and carrying
the chat template, and the special tokens the engine's chat formatting and stop handling look for.

Public names:
  TokenizerSpec                      what one model family's tokenizer needs (special tokens, template, eos)
  TOKENIZER_SPECS                    family ("gpt_oss" | "gemma4") -> TokenizerSpec
  build_tokenizer(family)            -> tokenizers.Tokenizer (trained once per process; deterministic)
  trained_tokenizer_json(family)     -> str, the tokenizer.json text
  token_id(family, token)            -> int
  eos_token_ids(family)              -> list[int], the ids generation_config.json lists
  write_tokenizer_files(family, dir) writes tokenizer.json, tokenizer_config.json, special_tokens_map.json
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

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

_HARMONY_TEMPLATE = """\
{#- Harmony, rendered like gpt-oss's own template (HF openai/gpt-oss-20b chat_template.jinja): function tools
    as a TypeScript `functions` namespace in the developer message, one call per assistant message
    (`to=functions.NAME`, arguments `tojson`, ended by <|call|>), tool results as messages from
    `functions.NAME`, a call's reasoning kept until a later final answer. Reduced: parameter types are the
    primitives, enums, arrays of primitives and objects without properties (others render `any`), and
    current_date is optional (the real template always prints today's date), so prompts, and so token
    counts, are the same every day. -#}
{%- macro ts_type(spec) -%}
{%- if spec.type == "array" -%}
{%- set item = spec["items"]["type"] if spec["items"] is defined and spec["items"] else none -%}
{{- ("number" if item == "integer" else item) + "[]" if item in ["string", "number", "integer", "boolean"] else "any[]" -}}
{%- elif spec.type == "string" and spec.enum -%}{{- '"' + spec.enum | join('" | "') + '"' -}}
{%- elif spec.type in ["number", "integer"] -%}{{- "number" -}}
{%- elif spec.type in ["string", "boolean"] -%}{{- spec.type -}}
{%- elif spec.type == "object" and not spec.properties -%}{{- "object" -}}
{%- else -%}{{- "any" -}}
{%- endif -%}
{%- if spec.nullable and spec.type in ["array", "string"] and not spec.enum -%}{{- " | null" -}}{%- endif -%}
{%- endmacro -%}
{%- macro functions_namespace(tools) -%}
{{- "## functions\\n\\nnamespace functions {\\n\\n" -}}
{%- for tool in tools -%}
{%- set fn = tool.function -%}
{{- "// " + fn.description + "\\ntype " + fn.name + " = " -}}
{%- if fn.parameters and fn.parameters.properties -%}
{{- "(_: {\\n" -}}
{%- for name, spec in fn.parameters.properties.items() -%}
{%- if spec.description -%}{{- "// " + spec.description + "\\n" -}}{%- endif -%}
{{- name + ("" if name in (fn.parameters.required or []) else "?") + ": " + ts_type(spec) -}}
{%- if spec.default is defined -%}
{{- ", // default: " + (spec.default if spec.enum else spec.default | tojson) -}}
{%- endif -%}
{{- ",\\n" -}}
{%- endfor -%}
{{- "}) => any;\\n\\n" -}}
{%- else -%}
{{- "() => any;\\n\\n" -}}
{%- endif -%}
{%- endfor -%}
{{- "} // namespace functions" -}}
{%- endmacro -%}
{%- set effort = reasoning_effort if reasoning_effort is defined and reasoning_effort else "medium" -%}
{{- "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\\n" -}}
{{- "Knowledge cutoff: 2024-06\\n" -}}
{%- if current_date is defined and current_date %}{{ "Current date: " + current_date + "\\n" }}{% endif -%}
{{- "\\nReasoning: " + effort + "\\n\\n" -}}
{{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." -}}
{%- if tools -%}{{- "\\nCalls to these tools must go to the commentary channel: 'functions'." -}}{%- endif -%}
{{- "<|end|>" -}}
{%- set has_developer = messages and messages[0].role in ["system", "developer"] -%}
{%- if (has_developer and messages[0].content) or tools -%}
{{- "<|start|>developer<|message|>" -}}
{%- if has_developer and messages[0].content -%}{{- "# Instructions\\n\\n" + messages[0].content + "\\n\\n" -}}{%- endif -%}
{%- if tools -%}{{- "# Tools\\n\\n" + functions_namespace(tools) -}}{%- endif -%}
{{- "<|end|>" -}}
{%- endif -%}
{%- set last_call = namespace(name=none) -%}
{%- for message in messages[1 if has_developer else 0:] -%}
{%- if message.role == "user" -%}
{{- "<|start|>user<|message|>" + message.content + "<|end|>" -}}
{%- elif message.role == "assistant" and message.tool_calls -%}
{#- A call's reasoning is kept until a later final answer, as the real template keeps it. -#}
{%- set answered = namespace(found=false) -%}
{%- for later in messages[loop.index0 + (2 if has_developer else 1):] -%}
{%- if later.role == "assistant" and not later.tool_calls -%}{%- set answered.found = true -%}{%- endif -%}
{%- endfor -%}
{%- set call = message.tool_calls[0].function -%}
{%- if message.content and message.thinking -%}
{{- raise_exception("Cannot pass both content and thinking in an assistant message with tool calls!") -}}
{%- elif (message.content or message.thinking) and not answered.found -%}
{{- "<|start|>assistant<|channel|>analysis<|message|>" + (message.content or message.thinking) + "<|end|>" -}}
{%- endif -%}
{{- "<|start|>assistant to=functions." + call.name + "<|channel|>commentary json<|message|>" -}}
{{- call.arguments | tojson + "<|call|>" -}}
{%- set last_call.name = call.name -%}
{%- elif message.role == "tool" -%}
{%- if last_call.name is none -%}
{{- raise_exception("Message has tool role, but there was no previous assistant message with a tool call!") -}}
{%- endif -%}
{{- "<|start|>functions." + last_call.name + " to=assistant<|channel|>commentary<|message|>" -}}
{{- message.content | tojson + "<|end|>" -}}
{%- elif message.role == "assistant" and loop.last and not add_generation_prompt -%}
{%- if message.thinking is defined and message.thinking -%}
{{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" -}}
{%- endif -%}
{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|return|>" -}}
{%- elif message.role == "assistant" -%}
{#- Earlier turns drop their chain of thought, as the real template does. -#}
{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" -}}
{%- set last_call.name = none -%}
{%- else -%}
{{- raise_exception("this template renders system, developer, user, assistant and tool messages only") -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "<|start|>assistant" -}}{%- endif -%}
"""

_GEMMA_TEMPLATE = """\
{#- Gemma 4 turns. Thinking is switched on by <|think|> in the system turn; with it off, the generation
    prompt closes an empty thought channel so the model answers directly. Tools as gemma-4's own template
    (HF google/gemma-4 chat_template.jinja) renders them: `<|tool>declaration:NAME{...}<tool|>` in the
    system turn (keys sorted, types upper-cased, strings between <|"|>), calls `<|tool_call>call:NAME{...}
    <tool_call|>` in the model turn, each followed by the results that answer it
    `<|tool_response>response:NAME{value:...}<tool_response|>`, the model's turn going on after them.
    Reduced: a parameter's description, type, enum, nullable, array items and nested properties. -#}
{%- macro arg(value) -%}
{%- if value is string -%}{{- '<|"|>' + value + '<|"|>' -}}
{%- elif value is boolean -%}{{- 'true' if value else 'false' -}}
{%- elif value is mapping -%}{{- '{' -}}{%- for k, v in value | dictsort -%}{{- k + ':' + arg(v) -}}{{- ',' if not loop.last -}}{%- endfor -%}{{- '}' -}}
{%- elif value is sequence -%}{{- '[' -}}{%- for v in value -%}{{- arg(v) -}}{{- ',' if not loop.last -}}{%- endfor -%}{{- ']' -}}
{%- else -%}{{- value -}}
{%- endif -%}
{%- endmacro -%}
{%- macro required_list(names) -%}
{{- 'required:[' -}}{%- for name in names -%}{{- '<|"|>' + name + '<|"|>' -}}{{- ',' if not loop.last -}}{%- endfor -%}{{- ']' -}}
{%- endmacro -%}
{%- macro parameters(properties) -%}
{%- set ns = namespace(first=true) -%}
{%- for key, value in properties | dictsort if key not in ['description', 'type', 'properties', 'required', 'nullable'] -%}
{{- '' if ns.first else ',' -}}{%- set ns.first = false -%}
{%- set kind = value['type'] | upper -%}
{%- set p = namespace(text='') -%}
{%- if value['description'] -%}{%- set p.text = p.text + ',description:<|"|>' + value['description'] + '<|"|>' -%}{%- endif -%}
{%- if kind == 'STRING' and value['enum'] -%}{%- set p.text = p.text + ',enum:' + arg(value['enum']) -%}{%- endif -%}
{%- if kind == 'ARRAY' and value['items'] is mapping and value['items'] -%}
{%- set p.text = p.text + ',items:{' + items(value['items']) + '}' -%}
{%- endif -%}
{%- if value['nullable'] -%}{%- set p.text = p.text + ',nullable:true' -%}{%- endif -%}
{%- if kind == 'OBJECT' and value['properties'] is mapping -%}
{%- set p.text = p.text + ',properties:{' + parameters(value['properties']) + '}' -%}
{%- endif -%}
{%- if kind == 'OBJECT' and value['required'] -%}{%- set p.text = p.text + ',' + required_list(value['required']) -%}{%- endif -%}
{{- key + ':{' + (p.text + ',type:<|"|>' + kind + '<|"|>')[1:] + '}' -}}
{%- endfor -%}
{%- endmacro -%}
{%- macro items(spec) -%}
{%- set p = namespace(text='') -%}
{%- for key, value in spec | dictsort if value is not none -%}
{%- if key == 'properties' -%}{%- set p.text = p.text + ',properties:{' + parameters(value) + '}' -%}
{%- elif key == 'required' -%}{%- set p.text = p.text + ',' + required_list(value) -%}
{%- elif key == 'type' -%}{%- set p.text = p.text + ',type:' + arg(value | upper) -%}
{%- else -%}{%- set p.text = p.text + ',' + key + ':' + arg(value) -%}
{%- endif -%}
{%- endfor -%}
{{- p.text[1:] -}}
{%- endmacro -%}
{%- macro declaration(fn) -%}
{{- 'declaration:' + fn['name'] + '{description:<|"|>' + (fn['description'] or '') + '<|"|>' -}}
{%- set params = fn['parameters'] -%}
{%- if params -%}
{{- ',parameters:{' -}}
{%- if params['properties'] -%}{{- 'properties:{' + parameters(params['properties']) + '},' -}}{%- endif -%}
{%- if params['required'] -%}{{- required_list(params['required']) + ',' -}}{%- endif -%}
{%- if params['type'] -%}{{- 'type:<|"|>' + params['type'] | upper + '<|"|>}' -}}{%- endif -%}
{%- endif -%}
{{- '}' -}}
{%- endmacro -%}
{{- bos_token -}}
{%- set has_system = messages and messages[0].role in ["system", "developer"] -%}
{%- if enable_thinking or has_system or tools -%}
{{- "<|turn>system\\n" -}}
{%- if enable_thinking -%}{{- "<|think|>" -}}{%- endif -%}
{%- if has_system -%}{{- messages[0].content | trim -}}{%- endif -%}
{%- for tool in tools or [] -%}{{- '<|tool>' + declaration(tool['function']) + '<tool|>' -}}{%- endfor -%}
{{- "<turn|>\\n" -}}
{%- endif -%}
{%- set turns = messages[1 if has_system else 0:] -%}
{%- set last_user = namespace(index=-1) -%}
{%- for message in turns -%}{%- if message.role == "user" -%}{%- set last_user.index = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- set ns = namespace(previous=none, last=none) -%}
{%- for message in turns if message.role != "tool" -%}
{%- set role = "model" if message.role == "assistant" else message.role -%}
{%- set index = turns.index(message) -%}
{%- if not (role == "model" and ns.previous == "assistant") -%}{{- "<|turn>" + role + "\\n" -}}{%- endif -%}
{%- set ns.previous, ns.last = message.role, none -%}
{%- if message.tool_calls -%}
{%- set thinking = message.reasoning or message.reasoning_content -%}
{%- if thinking and index > last_user.index -%}{{- "<|channel>thought\\n" + thinking + "\\n<channel|>" -}}{%- endif -%}
{%- for call in message.tool_calls -%}
{%- set arguments = call.function.arguments -%}
{{- '<|tool_call>call:' + call.function.name + '{' -}}
{%- if arguments is mapping -%}{%- for k, v in arguments | dictsort -%}{{- k + ':' + arg(v) -}}{{- ',' if not loop.last -}}{%- endfor -%}
{%- else -%}{{- arguments -}}{%- endif -%}
{{- '}<tool_call|>' -}}
{%- endfor -%}
{%- set ns.last = "tool_call" -%}
{%- set answered = namespace(stop=false) -%}
{%- for result in turns[index + 1:] -%}
{%- if result.role != "tool" -%}{%- set answered.stop = true -%}{%- endif -%}
{%- if not answered.stop -%}
{%- set name = namespace(value=result.name or "unknown") -%}
{%- for call in message.tool_calls if call.id == result.tool_call_id -%}{%- set name.value = call.function.name -%}{%- endfor -%}
{{- '<|tool_response>response:' + name.value + '{value:' + arg(result.content) + '}<tool_response|>' -}}
{%- set ns.last = "tool_response" -%}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- set content = message.content.split("<channel|>")[-1] if role == "model" else message.content -%}
{{- content | trim -}}
{%- if ns.last == "tool_call" -%}{{- "<|tool_response>" -}}
{%- elif not (ns.last == "tool_response" and not message.content) -%}{{- "<turn|>\\n" -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and ns.last not in ["tool_call", "tool_response"] -%}
{{- "<|turn>model\\n" -}}
{%- if not enable_thinking -%}{{- "<|channel>thought\\n<channel|>" -}}{%- endif -%}
{%- endif -%}
"""


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
        chat_template=_HARMONY_TEMPLATE,
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
        chat_template=_GEMMA_TEMPLATE,
        bos_token="<bos>",
        unk_token="<unk>",
    ),
}


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
