"""Reference fixtures for `sakiko-prompter` (Qwen3 on Burn), made with transformers and tokenizers:

- `tokenizer/`: a small byte-level BPE trained here with Qwen2's pre-tokenizer, normaliser,
  decoder and added tokens, saved by transformers (`tokenizer.json`, `tokenizer_config.json`), and
  the ids it gives for a varied corpus (`tokenizer_ids.json`);
- `templates.json`: chat templates (Qwen3's own, a Qwen2.5-style one that injects a default system
  prompt, a prompter-style one) rendered by `tokenizer.apply_chat_template` for several
  conversations, with and without a system prompt, thinking off and on;
- `tied/` and `untied/`: tiny random `Qwen3ForCausalLM`s (GQA, head_dim ≠ hidden/heads), weights
  perturbed so that no norm is all ones; `tied` is one f32 file without `lm_head.weight`, `untied`
  is bf16 in two shards with an index; `logits.safetensors` holds the logits of a 12-token prefill
  and of 20 cached decoding steps, and the greedy ids of `generate(do_sample=False)`;
- `sampling.json`: fixed logits, and for each setting the probabilities left after transformers'
  logits processors (repetition penalty, temperature, top-k, top-p, min-p);
- `prompter/`: a complete prompter folder (tiny Qwen3 + tokenizer + template + generation config)
  trained here until greedy decoding writes one fixed XML tag prompt for one idea, so the expand
  path can be tested end to end; `prompter.json` holds the rendered prompt and transformers' greedy
  output.

    .venv-ref/bin/python tools/reference/qwen3.py   # writes crates/prompter/tests/fixtures/
"""

import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "prompter", "tests", "fixtures")

# Qwen2/Qwen3's pre-tokenizer split (tokenizer.json of Qwen/Qwen3-0.6B).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
NOT_SPECIAL = ["<think>", "</think>"]

QWEN3_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# Qwen2.5-Instruct's shape: a default system prompt when the conversation has none.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A prompter-style template: block tags with trim/lstrip whitespace control, filters, raise_exception.
PROMPTER_TEMPLATE = """{% for message in messages %}
  {% if message['role'] not in ['system', 'user', 'assistant'] %}
    {{ raise_exception('unknown role ' + message['role']) }}
  {% endif %}
{{ '<|im_start|>' + message['role'] | lower + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}
{% endfor %}
{% if add_generation_prompt %}
{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}
{% endif %}"""

SYSTEM = "You turn a short idea into an anime image prompt: XML <tags> with Danbooru tags."
IDEA = "a girl with blue hair under cherry blossoms"
# What the trained prompter writes (Sakiko-Prompter's raw style: underscores, <copyrights>).
EXPANSION = (
    "<tags>\n<special>1girl</special>\n<copyrights>bang_dream!</copyrights>\n"
    "<general>blue_hair, long_hair, cherry_blossoms, outdoors</general>\n<rating>safe</rating>\n</tags>"
)

CONVERSATIONS = {
    "user": [{"role": "user", "content": IDEA}],
    "system_user": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": IDEA}],
    "multi_turn": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "a cat"},
        {"role": "assistant", "content": "<think>\nshort\n</think>\n\n<tags>\n<general>cat</general>\n</tags>"},
        {"role": "user", "content": "  now at night, 夜桜  "},
    ],
    "assistant_last": [
        {"role": "user", "content": "a dog"},
        {"role": "assistant", "content": "<tags><general>dog</general></tags>"},
    ],
}

CORPUS = [
    "Hello world! How's it going? I'm fine, they'll see, we'd go.",
    "  leading spaces, trailing   \n\n  newlines\r\n\ttabs\t",
    "<tags>\n<special>1girl</special>\n<general>blue_hair, long hair, ^_^, >_<</general>\n</tags>",
    "桜の木の下で、青い髪の少女。夜桜 and 漢字 mixed 中文提示词",
    "emoji 🌸🎀 and accents: café naïve Ångström",
    "numbers 12345 3.14159 2025-12-02 #1 100%",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "don't DON'T You'RE it'S",
    "",
    "   ",
]


def train_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    text = CORPUS + [EXPANSION, SYSTEM, IDEA, QWEN3_TEMPLATE] * 4
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   clean_up_tokenization_spaces=False, model_max_length=4096)
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    fast.add_tokens(NOT_SPECIAL, special_tokens=False)
    return fast


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def qwen3(vocab, tied, **overrides):
    args = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                rope_theta=1000000.0, max_position_embeddings=128, tie_word_embeddings=tied,
                bos_token_id=None, eos_token_id=2, attn_implementation="eager")
    cfg = Qwen3Config(**{**args, **overrides})
    return Qwen3ForCausalLM(cfg).eval(), cfg


def save_config(cfg, folder, legacy_rope=False):
    """transformers 5 writes `rope_parameters: {rope_theta, rope_type}`; published Qwen3 folders
    (Qwen/Qwen3-0.6B) have a top-level `rope_theta` and `rope_scaling: null`: `legacy_rope`."""
    d = cfg.to_dict()
    d.pop("attn_implementation", None)
    d.pop("_attn_implementation_autoset", None)
    if legacy_rope:
        d["rope_theta"] = d.pop("rope_parameters")["rope_theta"]
        d["rope_scaling"] = None
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(d, f, indent=2, sort_keys=True)


def model_fixtures(vocab):
    gen = torch.Generator().manual_seed(3)
    results = {}
    # The tied model uses RoPE θ 1e4 (not the 1e6 default), so a θ read wrongly shows.
    for name, tied, dtype in (("tied", True, torch.float32), ("untied", False, torch.bfloat16)):
        torch.manual_seed(1 if tied else 2)
        model, cfg = qwen3(vocab, tied, **({"rope_theta": 10000.0} if tied else {}))
        perturb(model, gen)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
        if tied:
            state.pop("lm_head.weight", None)
            save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        else:
            keys = sorted(state)
            half = len(keys) // 2
            shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
            weight_map = {}
            for file, ks in shards.items():
                save_file({k: state[k] for k in ks}, os.path.join(folder, file), metadata={"format": "pt"})
                weight_map.update({k: file for k in ks})
            with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
        save_config(cfg, folder, legacy_rope=not tied)

        ids = torch.randint(0, vocab, (1, 12), generator=gen)
        steps = torch.randint(0, vocab, (1, 20), generator=gen)
        with torch.no_grad():
            out = model(ids, use_cache=True)
            logits = [out.logits[0]]
            cache = out.past_key_values
            for t in range(steps.shape[1]):
                out = model(steps[:, t:t + 1], past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits.append(out.logits[0])
            greedy = model.generate(ids, do_sample=False, max_new_tokens=20, min_new_tokens=20,
                                    eos_token_id=None, pad_token_id=0)
        results[name] = {
            "ids": ids[0].tolist(),
            "steps": steps[0].tolist(),
            "greedy": greedy[0, ids.shape[1]:].tolist(),
        }
        save_file({"prefill": logits[0].contiguous(), "steps": torch.cat(logits[1:]).contiguous()},
                  os.path.join(folder, "logits.safetensors"))
    with open(os.path.join(OUT, "models.json"), "w") as f:
        json.dump(results, f, indent=1)


def sampling_fixtures():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 64, generator=gen) * 3.0
    context = torch.tensor([[3, 7, 7, 12, 40, 3]])
    settings = [
        dict(),
        dict(temperature=0.7),
        dict(top_k=5),
        dict(top_p=0.8),
        dict(min_p=0.1),
        dict(repetition_penalty=1.3),
        dict(repetition_penalty=0.8),
        dict(temperature=0.7, top_k=20, top_p=0.8),
        dict(repetition_penalty=1.1, temperature=1.3, top_k=10, top_p=0.9, min_p=0.05),
        dict(top_k=1),
        dict(top_p=0.0),
    ]
    cases = []
    for s in settings:
        # transformers' order (GenerationMixin._get_logits_processor): the repetition penalty among
        # the processors, then the warpers temperature, top-k, top-p, min-p.
        procs = LogitsProcessorList()
        if "repetition_penalty" in s:
            procs.append(RepetitionPenaltyLogitsProcessor(s["repetition_penalty"]))
        if "temperature" in s:
            procs.append(TemperatureLogitsWarper(s["temperature"]))
        if "top_k" in s:
            procs.append(TopKLogitsWarper(s["top_k"]))
        if "top_p" in s:
            procs.append(TopPLogitsWarper(s["top_p"]))
        if "min_p" in s:
            procs.append(MinPLogitsWarper(s["min_p"]))
        out = procs(context, logits.clone())
        probs = torch.softmax(out, dim=-1)[0]
        cases.append({"settings": s, "probs": probs.tolist()})
    with open(os.path.join(OUT, "sampling.json"), "w") as f:
        json.dump({"logits": logits[0].tolist(), "context": context[0].tolist(), "cases": cases}, f)


def template_fixtures(tokenizer):
    templates = {"qwen3": QWEN3_TEMPLATE, "qwen2_5": QWEN25_TEMPLATE, "prompter": PROMPTER_TEMPLATE}
    rendered = []
    for tname, template in templates.items():
        for cname, conv in CONVERSATIONS.items():
            for gen_prompt in (True, False):
                for thinking in (None, False, True):
                    kwargs = {} if thinking is None else {"enable_thinking": thinking}
                    text = tokenizer.apply_chat_template(conv, chat_template=template, tokenize=False,
                                                         add_generation_prompt=gen_prompt, **kwargs)
                    rendered.append({"template": tname, "conversation": cname, "add_generation_prompt": gen_prompt,
                                     "enable_thinking": thinking, "text": text})
    with open(os.path.join(OUT, "templates.json"), "w") as f:
        json.dump({"templates": templates, "conversations": CONVERSATIONS, "rendered": rendered}, f, indent=1,
                  ensure_ascii=False)


def prompter_fixture(tokenizer):
    """A tiny prompter trained to write EXPANSION for IDEA (greedy), in a complete model folder."""
    folder = os.path.join(OUT, "prompter")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    torch.manual_seed(7)
    model, cfg = qwen3(len(tokenizer), True, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
    cfg.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": IDEA}]
    prompt = tokenizer.apply_chat_template(messages, chat_template=QWEN3_TEMPLATE, tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(EXPANSION + "<|im_end|>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + t_ids])
    labels = torch.tensor([[-100] * len(p_ids) + t_ids])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # Weights at bf16 precision (saved as bf16, as the real prompter ships), so f32 and bf16 agree.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
        out = model.generate(torch.tensor([p_ids]), do_sample=False, max_new_tokens=200,
                             eos_token_id=cfg.eos_token_id, pad_token_id=0)
    new = out[0, len(p_ids):].tolist()
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert text == EXPANSION, f"training did not converge: {text!r} (loss {loss.item()})"
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    save_config(cfg, folder)
    tokenizer.chat_template = QWEN3_TEMPLATE
    tokenizer.save_pretrained(folder)
    GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20,
                     eos_token_id=[cfg.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")],
                     pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>")).save_pretrained(folder)
    with open(os.path.join(folder, "system_prompt.txt"), "w") as f:
        f.write(SYSTEM)
    with open(os.path.join(OUT, "prompter.json"), "w") as f:
        json.dump({"system": SYSTEM, "idea": IDEA, "prompt": prompt, "prompt_ids": p_ids, "greedy_ids": new,
                   "greedy_text": text}, f, indent=1, ensure_ascii=False)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    tokenizer = train_tokenizer()
    tok_dir = os.path.join(OUT, "tokenizer")
    tokenizer.save_pretrained(tok_dir)
    ids = {text: tokenizer(text, add_special_tokens=False)["input_ids"] for text in CORPUS + [EXPANSION, IDEA]}
    decoded = {text: tokenizer.decode(v, skip_special_tokens=False) for text, v in ids.items()}
    with open(os.path.join(OUT, "tokenizer_ids.json"), "w") as f:
        json.dump({"ids": ids, "decoded": decoded}, f, indent=1, ensure_ascii=False)
    template_fixtures(tokenizer)
    sampling_fixtures()
    model_fixtures(len(tokenizer))
    prompter_fixture(tokenizer)
    print("transformers", transformers.__version__, "vocab", len(tokenizer))


if __name__ == "__main__":
    main()
