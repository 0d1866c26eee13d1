"""The tiny models' chat templates: reduced copies of the real models' own, rendering what the engine sends
(system, developer, user and assistant turns, reasoning effort or thinking, and tools: declarations, calls and
tool results) exactly as the real templates do, so the engine's tests exercise the real path.
tests/test_tool_templates.py pins their rendering.

Public names: HARMONY_TEMPLATE (gpt-oss), GEMMA_TEMPLATE (gemma-4).
"""

HARMONY_TEMPLATE = """\
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

GEMMA_TEMPLATE = """\
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
