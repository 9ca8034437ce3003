"""The protobuf text-format reader: values, nesting, comments, quoting, and errors."""
import math

import pytest

from cnntrain.errors import ConfigError
from cnntrain.tools.prototxt import Ident, Message, parse_prototxt, read_prototxt

EDGE_CASES = r"""
# a comment line
name: 'it\'s "quoted" # not a comment'   # a comment after a value
note: "tab\there" " and " 'joined'        # adjacent strings are one string
escapes: "\101\x42\u0043\n\\"
layer {                                   # '{' without ':'
  name: "a"
  num: -3 hex: 0x1F big: 1e-4 dot: .5 f: 1.5f exp: 5E+02 neg_inf: -inf nan: nan
  flag: true other: false enum: MAX
  dim: 1 dim: 3                           # a repeated field
}
layer: {                                  # optional ':' before '{'
  name: "b"; list: [1, 2, 3], empty: []
  angle < x: 1 >
  msgs: [{ v: 1 }, { v: 2 }]
}
"""


def test_values_nesting_comments_and_quoting():
    msg = parse_prototxt(EDGE_CASES, "edge.prototxt")
    assert msg.get("name") == 'it\'s "quoted" # not a comment'
    assert msg.get("note") == "tab\there and joined"
    assert msg.get("escapes") == "ABC\n\\"
    a, b = msg.all("layer")
    assert isinstance(a, Message) and a.get("name") == "a"
    assert (a.get("num"), a.get("hex"), a.get("big"), a.get("dot"), a.get("f"), a.get("exp")) == \
        (-3, 31, 1e-4, 0.5, 1.5, 500.0)
    assert isinstance(a.get("num"), int) and isinstance(a.get("exp"), float)
    assert a.get("neg_inf") == -math.inf and math.isnan(a.get("nan"))
    assert a.get("flag") == Ident("true") and isinstance(a.get("enum"), Ident)
    assert a.all("dim") == [1, 3] and a.get("dim") == 3
    assert b.all("list") == [1, 2, 3] and b.all("empty") == []
    assert b.get("angle").get("x") == 1
    assert [m.get("v") for m in b.all("msgs")] == [1, 2]
    assert a.line == 6 and msg.line_of("layer") == 6 and b.line == 12 and b.line_of("name") == 13
    assert msg.keys() == ["name", "note", "escapes", "layer"]


@pytest.mark.parametrize("text, line, words", [
    ('layer {\n  name: "x"\n', 2, "'}' is missing for the message opened on line 1"),
    ('a: 1\nb: "open\n', 2, "unterminated string"),
    ("a: 1\nb 2\n", 2, "expected ':' or '{' after 'b'"),
    ("a: }\n", 1, "expected a value for 'a'"),
    ("a: [1 2]\n", 1, "expected ',' or ']'"),
    ("a: 1\n}\n", 2, "expected a field name, got '}'"),
    ('a: "\\q"\n', 1, "unknown escape"),
    ("a: 1\n  b: @\n", 2, "unexpected text '@'"),
    ("a: -x\n", 1, "a minus sign goes before a number"),
])
def test_syntax_errors_name_the_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as err:
        parse_prototxt(text, "net.prototxt")
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"net.prototxt:{line}: ") and words in str(err.value)


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_prototxt(tmp_path / "missing.prototxt")
    bad = tmp_path / "bad.prototxt"
    bad.write_bytes(b"name: \"\xff\"")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_prototxt(bad)
