"""GGUF files: real files written by the ``gguf`` library pass; lying headers, chat
templates that reach Python internals and GGUF/pickle polyglots do not."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.supplychain import scan_bytes, scan_file
from mlwarden.supplychain.policy import DEFAULT_POLICY

gguf = pytest.importorskip("gguf")
quantize = pytest.importorskip("gguf.quants").quantize

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
NAMESPACE_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{%- set ns.system = m.content -%}{%- endif -%}"
    "{%- endfor -%}{{ ns.system }}{% for m in messages[1:] %}{{ m['content'] }}"
    "{{ messages[loop.index0 - 1].role }}{% endfor %}"
)
#: the published CVE-2024-34359 proof of concept, its command made harmless
SSTI = (
    "{% for x in ().__class__.__base__.__subclasses__() %}"
    "{% if 'warning' in x.__name__ %}{{ x()._module.__builtins__['__import__']('os')"
    ".popen('true') }}{% endif %}{% endfor %}"
)
ATTR_FILTER = "{{ (messages|attr('\\x5f\\x5fclass\\x5f\\x5f')) }}"
CYCLER = "{{ cycler['_' ~ '_init_' ~ '_'] }}"


def write(path: Path, template: str | None = None, *, quant: bool = False) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(300)])
    w.add_token_scores([0.5] * 300)
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.random.default_rng(0).random((16, 32)).astype(np.float32))
    w.add_tensor("output.weight", np.random.default_rng(0).random((32, 16)).astype(np.float16))
    if quant:
        for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
            weights = np.random.default_rng(0).random((4, 64)).astype(np.float32)
            w.add_tensor(f"blk.{qtype.name}.weight", quantize(weights, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("template", [None, LLAMA3_TEMPLATE, NAMESPACE_TEMPLATE])
def test_real_gguf_files_are_safe(tmp_path: Path, template: str | None) -> None:
    result = scan_file(write(tmp_path / "model.gguf", template, quant=True))
    assert result.format == "gguf"
    assert result.verdict.value == "safe", [i.message for i in result.findings]


def test_named_chat_templates_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template(
        [{"name": "default", "template": LLAMA3_TEMPLATE}, {"name": "tool_use", "template": SSTI}]
    )
    w.add_tensor("w", np.ones((2, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    result = scan_file(path)
    assert result.verdict.value == "unsafe"
    assert any("tokenizer.chat_template.tool_use" in i.message for i in result.findings)


@pytest.mark.parametrize(
    ("template", "verdict"),
    [(SSTI, "unsafe"), (ATTR_FILTER, "suspicious"), (CYCLER, "suspicious")],
)
def test_template_injection_is_flagged(tmp_path: Path, template: str, verdict: str) -> None:
    result = scan_file(write(tmp_path / "evil.gguf", template))
    assert result.verdict.value == verdict
    assert {i.rule for i in result.findings} == {"MLW-SCN-013"}


def test_template_that_does_not_parse_but_names_dunders(tmp_path: Path) -> None:
    result = scan_file(write(tmp_path / "x.gguf", "{{ x.__class__ {% endfor"))
    assert result.verdict.value == "unsafe"


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_string(key: str, value: bytes, declared: int | None = None) -> bytes:
    k = key.encode()
    n = len(value) if declared is None else declared
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, n) + value


@pytest.mark.parametrize(
    "data",
    [
        _header(n_kv=1) + _kv_string("general.name", b"x", declared=1 << 40),  # huge string
        _header(n_kv=1 << 40),  # count no file could hold
        _header(version=9),  # unknown version
        _header(n_kv=1)
        + struct.pack("<Q", 1)
        + b"a"
        + struct.pack("<IIQ", 9, 4, 1 << 40),  # array count
        _header(n_kv=1) + struct.pack("<Q", 1) + b"a" + struct.pack("<I", 77),  # value type
        b"GGUF\x03\x00\x00\x00",  # cut short
    ],
)
def test_lying_headers_are_errors_never_safe(data: bytes) -> None:
    result = scan_bytes(data)
    assert result.verdict.value == "error", result.findings


def test_tensor_infos_that_disagree_with_the_file(tmp_path: Path) -> None:
    good = write(tmp_path / "m.gguf").read_bytes()
    result = scan_bytes(good[:-40])  # tensor data cut off
    assert result.verdict.value == "suspicious"
    assert any("past the end of the file" in i.message for i in result.findings)
    name = b"token_embd.weight"
    at = good.index(name) + len(name)
    n_dims = struct.unpack("<I", good[at : at + 4])[0]
    type_at = at + 4 + 8 * n_dims
    bad_type = good[:type_at] + struct.pack("<I", 99) + good[type_at + 4 :]
    assert "unknown ggml type 99" in " ".join(i.message for i in scan_bytes(bad_type).findings)
    bad_dims = good[: at + 4] + struct.pack("<Q", 0) + good[at + 12 :]
    assert scan_bytes(bad_dims).verdict.value == "suspicious"


def test_gguf_pickle_polyglot_is_caught() -> None:
    # 'G' is BINFLOAT: the GGUF magic, version and counts parse as a pickle prefix
    payload = b"cos\nsystem\n(S'true'\ntR."
    data = b"GGUF" + struct.pack("<I", 3) + b"0" + payload
    result = scan_bytes(data)
    assert result.verdict.value == "unsafe"
    assert any(i.global_ == "os.system" for i in result.findings)


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages[('_' * 2) ~ 'class' ~ ('_' * 2)] }}",
        "{{ messages[['_', '_cla', 'ss_', '_']|join] }}",
        "{{ (messages|first)[('%c' * 2)|format(95, 95) ~ 'class' ~ '__'] }}",
    ],
)
def test_computed_names_are_flagged(tmp_path: Path, template: str) -> None:
    result = scan_file(write(tmp_path / "m.gguf", template))
    assert result.verdict.value != "safe", template


def test_common_real_templates_stay_safe(tmp_path: Path) -> None:
    chatml = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    mistral = (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate') }}"
        "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
        "' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
    )
    indexed = "{% for i in range(messages|length) %}{{ messages[i]['content'] }}{{ messages[i - 1].role }}{% endfor %}"
    for template in (chatml, mistral, indexed):
        result = scan_file(write(tmp_path / "m.gguf", template))
        assert result.verdict.value == "safe", (template, [i.message for i in result.findings])


def test_tokenizer_config_chat_templates(tmp_path: Path) -> None:
    import json

    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<s>", "chat_template": LLAMA3_TEMPLATE}))
    assert scan_file(config).verdict.value == "safe"
    config.write_text(json.dumps({"chat_template": [{"name": "default", "template": SSTI}]}))
    result = scan_file(config)
    assert result.verdict.value == "unsafe"
    assert "chat_template.default" in result.findings[0].message


def test_jinja_template_files_and_ordinary_text(tmp_path: Path) -> None:
    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text(NAMESPACE_TEMPLATE)
    assert scan_file(jinja).verdict.value == "safe"
    jinja.write_text(SSTI)
    assert scan_file(jinja).verdict.value == "unsafe"
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Model\n\n```python\nclass Net:\n    def __init__(self):\n        pass\n```\n"
        "Use {{ like this }} and {% broken\n"
    )
    result = scan_file(readme)
    assert (result.verdict.value, result.findings) == ("safe", [])


# --- the pre-filter that spares the Jinja parser ------------------------------------------------

FRAGMENTS = [
    "{{ m['content'] }}",
    "{{ messages[loop.index0 - 1].role }}",
    "{{ messages[1:] }}",
    "{% for m in messages %}",
    "{% endfor %}",
    "{{ x.y }}",
    "{{ x._y }}",
    "{{ x . __class__ }}",
    "{{ x['_k'] }}",
    '{{ x["__globals__"] }}',
    "{{ x[a ~ b] }}",
    "{{ x[y|join] }}",
    "{{ x[y[0] ~ 'a'] }}",
    "{{ x|attr('a') }}",
    "{{ cycler }}",
    "{{ joiner() }}",
    "{{ lipsum }}",
    "{{ self }}",
    "{{ x.mro() }}",
    "{{ x['f_globals'] }}",
    "{{ '_' * 2 }}",
    "{{ '\\x5f' }}",
    "{{ '\\N{LOW LINE}' }}",
    "{{ x[('a' * 2)] }}",
    "{{ x[[1, 2]|first] }}",
    "{{ ns.value }}",
    "{% set ns = namespace(a=1) %}",
    "{{ '<|im_start|>' + m['role'] + '\\n' }}",
    "{{ x[m['k']] }}",
    "{{ x[ 'a' ] }}",
    "plain text ",
]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=6))
def test_prefilter_never_hides_what_the_parser_would_report(parts: list[str]) -> None:
    from mlwarden.supplychain import gguf_scan
    from mlwarden.supplychain.results import FileResult, Sink

    text = "".join(parts)
    result = FileResult(path="t")
    original = gguf_scan.could_escape
    gguf_scan.could_escape = lambda _text: True  # type: ignore[assignment]
    try:
        gguf_scan.check_chat_template(text, "t", Sink(result, DEFAULT_POLICY), known=False)
    finally:
        gguf_scan.could_escape = original  # type: ignore[assignment]
    if result.findings:
        assert gguf_scan.could_escape(text), text


def test_prefilter_skips_plain_templates() -> None:
    from mlwarden.supplychain.gguf_scan import could_escape

    for text in (LLAMA3_TEMPLATE, NAMESPACE_TEMPLATE.replace("self", "")):
        if "\\" not in text:
            assert not could_escape(text), text
    assert could_escape(SSTI) and could_escape(ATTR_FILTER) and could_escape(CYCLER)
