"""A reader for the protobuf text format (``.prototxt``), written for this project.

It knows the syntax, not Caffe's schema: ``name { ... }`` or ``name: { ... }``
(also ``< ... >``) messages, ``key: value`` fields with numbers, quoted strings
(single or double quotes, C escapes, adjacent strings joined), bare identifiers
(enums and booleans), ``key: [a, b]`` lists, repeated fields, ``#`` comments and
optional ``,``/``;`` separators. Which identifiers are booleans or enums, and which
fields repeat, is decided by whoever reads the message (:mod:`caffe_import`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cnntrain.errors import ConfigError


class PrototxtError(ConfigError):
    """A syntax error in a prototxt file (exit code 2, like any config error)."""


class Ident(str):
    """A bare identifier value: an enum name, or true/false."""

    def __repr__(self) -> str:
        return f"Ident({str(self)!r})"


@dataclass
class Message:
    """A message: its fields in file order (a field may repeat) and their lines."""

    fields: list[tuple[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    line: int = 0

    def add(self, key: str, value: Any, line: int) -> None:
        self.fields.append((key, value))
        self.lines.append(line)

    def keys(self) -> list[str]:
        """Field names, each once, in order of first appearance."""
        return list(dict.fromkeys(k for k, _ in self.fields))

    def all(self, key: str) -> list[Any]:
        return [v for k, v in self.fields if k == key]

    def get(self, key: str, default: Any = None) -> Any:
        """The last value of ``key`` (protobuf's rule for a repeated singular field)."""
        values = self.all(key)
        return values[-1] if values else default

    def line_of(self, key: str) -> int:
        for (k, _), line in zip(self.fields, self.lines):
            if k == key:
                return line
        return self.line

    def __contains__(self, key: str) -> bool:
        return any(k == key for k, _ in self.fields)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.fields)


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+|\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.]))
  | (?P<signed_ident>-[A-Za-z_]\w*)
  | (?P<ident>[A-Za-z_][\w.]*)
  | (?P<punct>[{}<>\[\]:,;])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "?": "?"}


@dataclass
class _Token:
    kind: str
    text: str
    line: int
    value: Any = None


def _unescape(body: str, fail) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not digits:
                fail("\\x needs hex digits")
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt in "uU":
            n = 4 if nxt == "u" else 8
            digits = body[i + 2:i + 2 + n]
            if not re.fullmatch(r"[0-9a-fA-F]{%d}" % n, digits):
                fail(f"\\{nxt} needs {n} hex digits")
            out.append(chr(int(digits, 16)))
            i += 2 + n
        else:
            fail(f"unknown escape '\\{nxt}' in a string")
    return "".join(out)


def _number(text: str) -> int | float:
    body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x", "+0x")) \
        else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body) and text[-1] not in "fF":
        return int(body)
    return float(body)


def tokenize(text: str, file: str) -> list[_Token]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            snippet = text[pos:pos + 20].split("\n")[0]
            if text[pos] in "\"'":
                raise PrototxtError("unterminated string (strings must end on their line)",
                                    file=file, line=line)
            raise PrototxtError(f"unexpected text '{snippet}'", file=file, line=line)
        kind = m.lastgroup
        value = m.group()
        if kind == "ws":
            line += value.count("\n")
        elif kind != "comment":
            token = _Token(kind, value, line)

            def fail(message: str, line: int = line) -> None:
                raise PrototxtError(message, file=file, line=line)

            if kind == "string":
                token.value = _unescape(value[1:-1], fail)
            elif kind == "number":
                try:
                    token.value = _number(value)
                except ValueError:   # Python converts at most 4300 digits
                    fail(f"the number {value[:20]}... has too many digits")
            elif kind == "signed_ident":
                lowered = value[1:].lower()
                if lowered not in ("inf", "infinity", "nan"):
                    fail(f"unexpected '{value}': a minus sign goes before a number")
                token.kind, token.value = "number", -math.inf if lowered != "nan" else math.nan
            elif kind == "ident":
                token.value = Ident(value)
            tokens.append(token)
        pos = m.end()
    return tokens


MAX_DEPTH = 100


class _Parser:
    def __init__(self, tokens: list[_Token], file: str):
        self.tokens, self.file, self.i = tokens, file, 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def error(self, message: str, token: _Token | None) -> PrototxtError:
        line = token.line if token else (self.tokens[-1].line if self.tokens else None)
        return PrototxtError(message, file=self.file, line=line)

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of file (a '}' is missing?)", None)
        self.i += 1
        return token

    def message(self, close: str | None, line: int) -> Message:
        # Messages nest by recursion; no real net comes close to this depth.
        self.depth = getattr(self, "depth", 0) + 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"messages nested more than {MAX_DEPTH} deep", self.peek())
        try:
            return self._message(close, line)
        finally:
            self.depth -= 1

    def _message(self, close: str | None, line: int) -> Message:
        msg = Message(line=line)
        while True:
            token = self.peek()
            if token is None:
                if close is not None:
                    raise self.error(f"unexpected end of file: '{close}' is missing for the "
                                     f"message opened on line {line}", None)
                return msg
            if token.kind == "punct" and token.text == close:
                self.i += 1
                return msg
            if token.kind == "punct" and token.text in ",;":
                self.i += 1
                continue
            if token.kind != "ident":
                raise self.error(f"expected a field name, got '{token.text}'", token)
            self.i += 1
            self.field(msg, str(token.value), token)

    def field(self, msg: Message, key: str, key_token: _Token) -> None:
        token = self.take()
        colon = token.kind == "punct" and token.text == ":"
        if colon:
            token = self.take()
        if token.kind == "punct" and token.text in "{<":
            close = "}" if token.text == "{" else ">"
            msg.add(key, self.message(close, token.line), key_token.line)
            return
        if not colon:
            raise self.error(f"expected ':' or '{{' after '{key}', got '{token.text}'", token)
        if token.kind == "punct" and token.text == "[":
            for value in self.list_values(key):
                msg.add(key, value, key_token.line)
            return
        msg.add(key, self.scalar(key, token), key_token.line)

    def scalar(self, key: str, token: _Token) -> Any:
        if token.kind == "string":
            parts = [token.value]
            while (nxt := self.peek()) is not None and nxt.kind == "string":
                parts.append(nxt.value)  # "abc" "def" is one string, as in C
                self.i += 1
            return "".join(parts)
        if token.kind in ("number", "ident"):
            if token.kind == "ident" and token.value.lower() in ("inf", "infinity", "nan"):
                return math.nan if token.value.lower() == "nan" else math.inf
            return token.value
        raise self.error(f"expected a value for '{key}', got '{token.text}'", token)

    def list_values(self, key: str) -> list[Any]:
        values = []
        while True:
            token = self.take()
            if token.kind == "punct" and token.text == "]":
                return values
            if token.kind == "punct" and token.text in "{<":
                close = "}" if token.text == "{" else ">"
                values.append(self.message(close, token.line))
            else:
                values.append(self.scalar(key, token))
            token = self.take()
            if token.kind == "punct" and token.text == "]":
                return values
            if not (token.kind == "punct" and token.text == ","):
                raise self.error(f"expected ',' or ']' in the list of '{key}', got "
                                 f"'{token.text}'", token)


def parse_prototxt(text: str, file: str = "<prototxt>") -> Message:
    """Parse protobuf text format into a :class:`Message` tree."""
    parser = _Parser(tokenize(text, file), file)
    return parser.message(None, 1)


def read_prototxt(path: str | Path) -> Message:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start})", file=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=str(path)) from None
    return parse_prototxt(text, str(path))
