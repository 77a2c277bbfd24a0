"""A logged prompt without its token ids -> the prompt tokens the trainer used, and whether that is verified.

How the prompt text was logged decides how it is rebuilt and what the check is (`PromptRule.form`):
- "trl": TRL's completions log (and our stores written before prompt ids were recorded) holds the prompt the
  trainer tokenised: text, tokenised as is (`processing_class(text=...)`), or a conversation, tokenised through
  the chat template with the generation prompt and the run's `chat_template_kwargs`. Verified: the text's
  tokens decode back to it (special tokens kept); the conversation's tokens decode back to the rendered
  template. A conversation is not verifiable when the run gave the trainer tools (their schemas are rendered
  into the prompt but not logged) or when only its printed form was stored.
- "verl": verl's rollout dump holds the prompt decoded with skip_special_tokens=True from tokens that went
  through the chat template; it is tokenised as plain text without added special tokens (verl's dataset).
  Verified: the tokens decode back to the text (special tokens skipped, as verl did), and the chat template
  renders no special token (else the logged text lost tokens no check can bring back).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

TRL_FORM, VERL_FORM = "trl", "verl"


@dataclass(frozen=True)
class PromptRule:
    form: str                                      # "trl" | "verl": how the logged prompt text was made
    chat_template_kwargs: dict = field(default_factory=dict)   # the run's (TRL's GRPOConfig.chat_template_kwargs)
    conversation_unverifiable: str | None = None   # why no conversation of this run can be verified, if so
    printed_conversations: bool = False            # a text prompt may be a conversation's printed form (our stores)


@dataclass(frozen=True)
class RebuiltPrompt:
    ids: list
    verified: bool
    why_not: str | None = None                     # what makes it unverified


def stored_conversation(prompt):
    """A conversation stored as its printed form (str of a list of messages) -> the messages; else None."""
    if not isinstance(prompt, str) or not prompt.startswith("[{"):
        return None
    try:
        value = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return None


def chat_template_special_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer's chat template puts around a one-message conversation ([] without one)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"]
    ids = ids[0] if ids and isinstance(ids[0], list) else ids
    special = set(tokenizer.all_special_ids)
    return [int(i) for i in ids if int(i) in special]


def _flat(ids) -> list[int]:
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    return [int(i) for i in (ids[0] if ids and isinstance(ids[0], list) else ids)]


def trl_prompt(tokenizer, prompt, rule: PromptRule) -> RebuiltPrompt:
    if isinstance(prompt, str):
        if rule.printed_conversations and stored_conversation(prompt) is not None:
            return RebuiltPrompt(_flat(tokenizer(text=prompt)), False, "a conversation stored as printed text "
                                 "(a store written before prompt ids were recorded)")
        content = _flat(tokenizer(text=prompt, add_special_tokens=False))
        ok = tokenizer.decode(content, skip_special_tokens=False) == prompt
        return RebuiltPrompt(_flat(tokenizer(text=prompt)), ok, None if ok else "its tokens do not decode back to it")
    messages = [dict(m) for m in prompt]
    kwargs = dict(add_generation_prompt=True, **rule.chat_template_kwargs)
    ids = _flat(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs))
    if rule.conversation_unverifiable:
        return RebuiltPrompt(ids, False, rule.conversation_unverifiable)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    ok = tokenizer.decode(ids, skip_special_tokens=False) == rendered
    return RebuiltPrompt(ids, ok, None if ok else "its tokens do not decode back to the rendered chat template")


def verl_prompt(tokenizer, prompt, template_special_ids: list[int]) -> RebuiltPrompt:
    text = str(prompt)
    ids = _flat(tokenizer(text=text, add_special_tokens=False))
    if template_special_ids:
        return RebuiltPrompt(ids, False, "verl logs the prompt decoded with skip_special_tokens=True: the chat "
                                         "template's special tokens are not in the text")
    ok = tokenizer.decode(ids, skip_special_tokens=True) == text
    return RebuiltPrompt(ids, ok, None if ok else "its tokens do not decode back to it")


class PromptBuilder:
    """Rebuilds the prompts of one run under its rule (the chat template is inspected once)."""

    def __init__(self, tokenizer, rule: PromptRule):
        if rule.form not in (TRL_FORM, VERL_FORM):
            raise ValueError(f"prompt form {rule.form!r} is not one of {TRL_FORM!r}, {VERL_FORM!r}")
        self.tokenizer, self.rule = tokenizer, rule
        self.template_special_ids = chat_template_special_ids(tokenizer) if rule.form == VERL_FORM else []
        self.problems: dict[str, None] = {}          # why prompts were not verified (each reason once, in order)

    def __call__(self, prompt) -> RebuiltPrompt:
        if self.rule.form == VERL_FORM:
            rebuilt = verl_prompt(self.tokenizer, prompt, self.template_special_ids)
        else:
            rebuilt = trl_prompt(self.tokenizer, prompt, self.rule)
        if not rebuilt.verified:
            self.problems[rebuilt.why_not] = None
        return rebuilt
