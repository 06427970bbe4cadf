"""A user message in the model's chat template, as prompt token ids, without rendering the
template per prompt.

The template is rendered once around a probe; every prompt is then prefix + text + suffix,
encoded by the fast tokenizer's backend — what apply_chat_template(tokenize=True) does (render,
then encode without special tokens) minus the Jinja rendering and the Python wrapper, which
took ~2x the time per step on the rollout loop thread. At construction the shortcut is checked
against apply_chat_template on a sample message; a template that does not render the content
verbatim (trims it, escapes it) or a tokenizer without a fast backend falls back to
apply_chat_template for every prompt.
"""

from __future__ import annotations

PROBE = "\x00probe\x00"
# Edges a template might touch: outer whitespace (trim), markup characters (escaping), unicode.
SAMPLE = ' Task: Click "ok" & <b>.\nElements:\nbutton "ok"\n  text "café ✓"\nPrevious actions:\nclick("ok")\n'


class ChatPrompt:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._affixes: tuple[str, str] | None = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        rendered = self._template(PROBE, tokenize=False)
        if backend is None or rendered.count(PROBE) != 1:
            return
        self._backend = backend
        self._affixes = tuple(rendered.split(PROBE))
        if self.ids(SAMPLE) != self._template(SAMPLE, tokenize=True):
            self._affixes = None

    @property
    def fast(self) -> bool:
        return self._affixes is not None

    def ids(self, user_text: str) -> list[int]:
        if self._affixes is None:
            return self._template(user_text, tokenize=True)
        prefix, suffix = self._affixes
        return self._backend.encode(prefix + user_text + suffix, add_special_tokens=False).ids

    def _template(self, user_text: str, *, tokenize: bool):
        return self.tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                                  add_generation_prompt=True, tokenize=tokenize,
                                                  return_dict=False)
