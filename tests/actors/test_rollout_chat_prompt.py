"""The chat-template shortcut (actors/engine/chat_prompt.py): the same ids as apply_chat_template for
every prompt, and the fallback when the shortcut would not be."""

import random

import pytest
from transformers import AutoTokenizer

from actors.engine.chat_prompt import ChatPrompt


@pytest.fixture(scope="module")
def tokenizer(model_path):
    return AutoTokenizer.from_pretrained(model_path)


def template_ids(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False)


def test_same_ids_as_the_template(tokenizer):
    chat = ChatPrompt(tokenizer)
    assert chat.fast
    rng = random.Random(0)
    pieces = ['Task: Click "ok".', "\n", "  ", "button", '"café ✓"', "日本", "\t", "<|im_end|>", "x", "\n\n", " "]
    texts = ["", " leading space", "trailing newline\n"] + [
        "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(200)]
    for text in texts:
        assert chat.ids(text) == template_ids(tokenizer, text), repr(text)


def test_a_template_that_changes_the_content_falls_back(tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = tokenizer.chat_template.replace("message['content']", "message['content'] | trim")
    chat = ChatPrompt(tokenizer)
    assert not chat.fast
    assert chat.ids("  padded  ") == template_ids(tokenizer, "  padded  ")
