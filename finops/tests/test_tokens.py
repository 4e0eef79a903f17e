"""finops.tokens.token_bound is an upper bound (issue #16 item 3): of the mock's count (proven, any text), of the
UTF-8 length's hard bound (any text), and of OpenAI's real BPE encodings cl100k_base and o200k_base (measured on
the issue's samples and on generated text of every realistic kind). The real encodings come from `bpe-openai`
(requirements-dev.txt), which ships them: no download."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import bpe_openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finops.tokens import count_message_tokens, count_tokens, prompt_token_bound, token_bound

ROOT = Path(__file__).resolve().parents[2]
ENCODINGS = [bpe_openai.get_encoding(name) for name in ("cl100k_base", "o200k_base")]


def bpe(text: str) -> int:
    """The most tokens either of OpenAI's encodings gives `text`."""
    return max(len(encoding.encode(text)) for encoding in ENCODINGS)


CHINESE_91 = (
    "成本控制是每个组织在使用大语言模型时必须认真对待的问题。预算上限、缓存与路由共同决定了每一次请求的花费，"
    "财务团队需要能够信任账本中的每一行记录。当客户端断开连接或者上游返回错误时，系统仍然要完成结算。"
)[:91]
BASE64_46K = base64.b64encode(bytes(range(256)) * 135).decode()  # 34,560 bytes → 46,080 characters
CODE = (ROOT / "apps/gateway/streams.py").read_text(encoding="utf-8")[:4000]
ENGLISH = (
    "Finance can trust the ledger and the caps only if every request reserves what it can cost before the call, "
    "is billed once from the provider's usage after it, and leaves exactly one row, whatever the client does."
)


# Per sample: the bound, cl100k_base, o200k_base and the mock's count (the gateway's counter before #16). Asserted
# here, quoted in docs/adr/013-reservation-upper-bound.md.
SAMPLE_COUNTS = {
    "chinese-91": (273, 92, 63, 11),
    "base64-46k": (46080, 33165, 31185, 2790),
}


def test_the_samples_counts_are_the_ones_the_adr_quotes():
    for name, text in (("chinese-91", CHINESE_91), ("base64-46k", BASE64_46K)):
        counts = (token_bound(text), *(len(encoding.encode(text)) for encoding in ENCODINGS), count_tokens(text))
        assert counts == SAMPLE_COUNTS[name], name


def test_the_issues_samples_are_not_undercounted():
    assert len(CHINESE_91) == 91 and len(BASE64_46K) >= 46_000
    # The mock's word count (the gateway's counter before #16): a handful of "words" for the paragraph, one token
    # per run between '+' and '/' for the blob (one token for URL-safe base64 without them).
    assert count_tokens(CHINESE_91) < 15
    assert count_tokens(BASE64_46K) * 10 < bpe(BASE64_46K)
    assert count_tokens(BASE64_46K.replace("+", "A").replace("/", "B")) == 1
    for text in (CHINESE_91, BASE64_46K, CODE, ENGLISH):
        assert bpe(text) <= token_bound(text) <= len(text.encode("utf-8"))
    assert token_bound(CHINESE_91) == 3 * 91  # every CJK character at its UTF-8 length: proven, not measured


@pytest.mark.parametrize(
    ("text", "at_most"),
    [(ENGLISH, 2.5), (CODE, 2.5), (CHINESE_91, 3.5), (BASE64_46K, 1.5)],
    ids=["english", "code", "chinese", "base64"],
)
def test_the_bound_stays_within_a_small_factor_of_the_real_count(text, at_most):
    """An upper bound that is too loose blocks requests early: the factor over the real BPE count, per kind."""
    assert token_bound(text) <= at_most * bpe(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_the_bound_is_never_below_the_mocks_count_nor_above_the_bytes(text):
    """Proven in the code (every mock token holds a character the bound charges at least 1 for); checked here."""
    assert count_tokens(text) <= token_bound(text) <= len(text.encode("utf-8"))


WORDS = sorted(set(re.findall(r"[A-Za-z]{1,14}", (ROOT / "docs/architecture.md").read_text(encoding="utf-8"))))
word = st.sampled_from(WORDS).flatmap(lambda w: st.sampled_from([w, w.lower(), w.capitalize(), w.upper()]))
prose = st.lists(st.tuples(word, st.sampled_from([" ", " ", " ", ", ", ". ", "\n", "-", "'s "])), max_size=60).map(
    lambda pairs: "".join(w + sep for w, sep in pairs)
)
camel = st.lists(word.map(str.capitalize), min_size=1, max_size=5).map("".join)
blob = st.binary(min_size=1, max_size=3000).flatmap(lambda b: st.sampled_from([base64.b64encode(b).decode(), b.hex()]))
numbers = st.text(alphabet="0123456789 ,.-:", max_size=300)
punctuation = st.text(alphabet="!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ", max_size=300)
whitespace = st.text(alphabet=" \t\n\r", max_size=300)
cjk = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=300)
non_ascii = st.text(alphabet=st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), max_size=100)
printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
kinds = st.one_of(prose, camel, blob, numbers, punctuation, whitespace, cjk, non_ascii, printable)


@settings(max_examples=400, deadline=None)
@given(st.lists(kinds, min_size=1, max_size=5).map("".join))
def test_the_bound_covers_openais_bpe_on_every_realistic_kind_of_text(text):
    """Prose, identifiers, base64 and hex, numbers, punctuation, whitespace, CJK, any non-ASCII and random printable
    ASCII, and mixtures of them. Not covered (the ADR says so): long runs of random lower-case letters."""
    assert token_bound(text) >= bpe(text)


def test_a_prompt_bound_counts_the_chat_format_tool_calls_and_tools():
    tools = [{"type": "function", "function": {"name": "lookup_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    bare = prompt_token_bound(messages)
    assert bare > count_message_tokens(messages)
    assert prompt_token_bound(messages, tools) > bare
    assert prompt_token_bound([{"role": "user", "content": CHINESE_91}]) >= bpe(CHINESE_91) + 4
