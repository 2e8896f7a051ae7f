"""Prompts for Text-to-SQL, and the SQL pulled back out of a model's generation.

Prompts are kept as chat messages (`build_prompt`: a system and a user message). How a model
sees them depends on its tokenizer, decided in one place (`has_chat_template`) and used by
training and prediction alike:

- a tokenizer with a chat template renders the messages with it (`apply_chat_template`), and
  training records stay TRL conversational prompt/completion pairs;
- a tokenizer without one (many base models and GGUF files) gets the plain format: the
  messages' texts separated by a blank line, then a newline, and the answer after it, ended
  by the tokenizer's eos token so that the model learns to stop:

      You are a SQLite expert. Answer with one SQL query only, no explanation.

      Database schema:
      singer(singer_id*, name, country, age)

      Question: How many singers are there?
      SQL:
      SELECT count(*) FROM singer<eos>

  Training gives TRL the prompt (up to and including "SQL:\n") and the completion (the SQL,
  without ';', and eos) as plain strings. TRL 1.x's SFTTrainer (`_prepare_dataset` in
  trl/trainer/sft_trainer.py) appends eos only to a completion that lacks it, tokenizes
  prompt and prompt + completion with the tokenizer's special tokens (a BOS where the
  tokenizer adds one), and trains on the completion only. Generation tokenizes `prompt_text`
  without special tokens, so `prompt_text` starts with that BOS itself: the model sees the
  same tokens in both, and its answer ends at eos (or at a token holding ';').

The prepared data (train.jsonl, dev.jsonl) always holds the chat messages; the choice is made
when a tokenizer reads them, so one prepared set serves every model.
"""

from __future__ import annotations

import re

from ..core.errors import SqloraError

SYSTEM_PROMPT = "You are a SQLite expert. Answer with one SQL query only, no explanation."
# written by preprocess beside the prompts, and kept with the adapter: how its prompts were made
PROMPT_FORMAT_FILE = "prompt_format.json"

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>",
              "<|im_start|>")
_QUOTES = "'\"`"
_FENCE = re.compile(r"```[^\n]*\n?(.*?)(?:```|\Z)", re.S)
_CTE = r"with\s+(?:recursive\s+)?[\w\"`]+\s*(?:\([^)]*\)\s*)?as\s*\("
_SQL_START = re.compile(rf"\b(?:select|{_CTE})", re.I)
_SQL_AT_LINE_START = re.compile(rf"^[ \t]*(?:[A-Za-z ]{{0,20}}:[ \t]*)?\(*(select\b|{_CTE})", re.I | re.M)
_LABEL_LINE = re.compile(r"[ \t]*[A-Za-z][A-Za-z ]{0,30}:")


def build_prompt(schema_text: str, question: str, evidence: str = "",
                 system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """System and user messages asking for the SQL that answers question on this schema; the
    evidence (BIRD's hint, such as "eligible free rate = `Free Meal Count` / `Enrollment`"), when
    given, comes on a line before the question."""
    hint = f"Evidence: {' '.join(evidence.split())}\n" if evidence.strip() else ""
    user = f"Database schema:\n{schema_text}\n\n{hint}Question: {question.strip()}\nSQL:"
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]


def has_chat_template(tokenizer) -> bool:
    """Whether prompts are rendered with the tokenizer's chat template (else the plain format)."""
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The text a model continues with its answer, to be tokenized without special tokens."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _special_prefix(tokenizer) + plain_prompt(messages)


def training_example(tokenizer, record: dict) -> dict:
    """The prompt and completion TRL's SFTTrainer trains on for one training record: the chat
    messages where the tokenizer has a chat template, else the plain format's strings."""
    if has_chat_template(tokenizer):
        return {"prompt": record["prompt"], "completion": record["completion"]}
    if not tokenizer.eos_token:
        raise SqloraError("the tokenizer has neither a chat template nor an eos token: a model trained "
                          "on it could not learn where its answer ends")
    return {"prompt": plain_prompt(record["prompt"]),
            "completion": plain_answer(record["completion"]) + tokenizer.eos_token}


def training_length(tokenizer, example: dict) -> int:
    """Tokens in one `training_example` as TRL tokenizes it: prompt and completion together."""
    if isinstance(example["prompt"], list):
        return len(tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True,
                                                 return_dict=False))
    return len(tokenizer(example["prompt"] + example["completion"])["input_ids"])


def plain_prompt(messages: list[dict]) -> str:
    """Chat messages as one plain text: their contents, a blank line apart, then a newline."""
    return "\n\n".join(message["content"] for message in messages) + "\n"


def plain_answer(messages: list[dict]) -> str:
    """The assistant's answer as plain text (without the eos token)."""
    return "".join(message["content"] for message in messages)


def _special_prefix(tokenizer) -> str:
    """The special tokens (a BOS, say) the tokenizer puts before a text, as text; "" for none."""
    with_special = tokenizer("x")["input_ids"]
    alone = tokenizer("x", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(alone) + 1):
        if with_special[start:start + len(alone)] == alone:
            return tokenizer.decode(with_special[:start]) if start else ""
    return ""


def training_record(example: dict, schema_text: str, evidence: str = "") -> dict:
    """TRL conversational prompt-completion record for one Spider question."""
    return {
        "prompt": build_prompt(schema_text, example["question"], evidence),
        "completion": [{"role": "assistant", "content": clean_sql(example["query"])}],
        "db_id": example["db_id"],
        "question": example["question"],
    }


def dev_record(index: int, example: dict, schema_text: str, evidence: str = "") -> dict:
    """A question to predict; `gold` is its line in dev_gold.sql (line `index`, 0-based)."""
    return {
        "index": index,
        "db_id": example["db_id"],
        "question": example["question"],
        "prompt": build_prompt(schema_text, example["question"], evidence),
        "gold": one_line(example["query"]),
    }


def one_line(sql: str) -> str:
    """SQL as the reference evaluator's gold file holds it: newlines and tabs made spaces."""
    return re.sub(r"[ ]*[\r\n\t]+[ ]*", " ", sql).strip()


def extract_sql(generation: str) -> str:
    """The first SQL statement of a raw generation, on one line; "" when there is none."""
    text = generation.rpartition("</think>")[2]  # after a reasoning block, if any
    for token in END_TOKENS:
        text = text.split(token, 1)[0]
    text = _fenced_sql(text)
    start = _sql_start(text)
    if start is None:
        return ""
    return clean_sql(_first_statement(text[start:]))


# texts that could follow a generation; what extract_sql takes from it is final when none changes it
_CONTINUATIONS = ("x", " x", "\nx", "\n\nSELECT x")
# where a statement may end (see _first_statement); a generation without one is not final
_MAY_END = re.compile(r";|```|\n[ \t]*(?:\n|[A-Za-z][A-Za-z ]{0,30}:)")


def sql_complete(generation: str) -> bool:
    """Whether the SQL that `extract_sql` takes from a generation so far is final: it ends at a
    ';', a blank line, a `Label:` line or a closed ``` block, so more text would not change it.
    Generating can stop there instead of running on to its token limit, as a model that writes
    prose after its SQL (a base model) does. A later ``` block holding other SQL is the one thing
    such a stop leaves out; an unfinished `<think>` block is never final."""
    if "<think>" in generation and "</think>" not in generation:
        return False
    if not _MAY_END.search(generation) and not any(token in generation for token in END_TOKENS):
        return False  # the common case, decided without parsing
    sql = extract_sql(generation)
    return bool(sql) and all(extract_sql(generation + more) == sql for more in _CONTINUATIONS)


def clean_sql(sql: str) -> str:
    """Whitespace outside string literals collapsed to single spaces, no trailing ';'.

    Inside literals only newlines and tabs become spaces, so values like 'New  York' survive.
    """
    out: list[str] = []
    quote = None
    for char in sql:
        if quote:
            out.append(" " if char in "\r\n\t" else char)
            if char == quote:
                quote = None
        elif char in _QUOTES:
            quote = char
            out.append(char)
        elif char.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(char)
    return "".join(out).strip().rstrip(";").rstrip()


def _fenced_sql(text: str) -> str:
    """Inside of the first ``` block that holds SQL, else the text as it is."""
    for match in _FENCE.finditer(text):
        if _SQL_START.search(match.group(1)):
            return match.group(1)
    return text


def _sql_start(text: str) -> int | None:
    # A query that starts a line beats a "select" earlier in a sentence of prose.
    match = _SQL_AT_LINE_START.search(text)
    if match:
        return match.start(1) - _leading_parens(text, match.start(1))
    match = _SQL_START.search(text)
    return None if match is None else match.start() - _leading_parens(text, match.start())


def _leading_parens(text: str, at: int) -> int:
    count = 0
    while at - count > 0 and text[at - count - 1] == "(":
        count += 1
    return count


def _first_statement(text: str) -> str:
    """Text up to the first ';' outside quotes, a blank line, a fence, or a `Label:` line."""
    quote = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = None
        elif char == ";" or text.startswith("```", i):
            return text[:i]
        elif char in _QUOTES:
            quote = char
        elif text.startswith("--", i):
            end = text.find("\n", i)
            text = text[:i] + ("" if end < 0 else text[end:])
            continue
        elif char == "\n":
            rest = text[i + 1:]
            if not rest.split("\n", 1)[0].strip() or _LABEL_LINE.match(rest):
                return text[:i]
        i += 1
    return text


def chat_end_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the chat template's end token and the tokenizer's eos.

    Some tokenizers say `<|endoftext|>` is eos while their chat template closes turns with
    `<|im_end|>`, and a tokenizer converted from GGUF may not mark that token special at all:
    the end token is read off the template itself, so generation stops at whichever comes.
    A tokenizer without a chat template (the plain prompt format, see above) ends answers
    with its eos token only.
    """
    if not has_chat_template(tokenizer):
        return [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "SELECT 1"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    after_answer = text[text.rfind("SELECT 1") + len("SELECT 1"):]
    ids = set()
    for token_id in tokenizer.encode(after_answer, add_special_tokens=False):
        if tokenizer.decode([token_id]).strip():
            ids.add(token_id)
            break
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)
