"""The YAML loader keeps the line of each key, and refuses what would build objects or blow up."""

from __future__ import annotations

import pytest

from airflow_mlops.config.yamlfile import MAX_NODES, YamlError, load_yaml

TEXT = """\
# a comment
name: x
features:
  derived:
    a: b + 1
  joins:
    - source: weather
      keys: [origin]
    - source: planes
"""


def test_lines_of_keys_and_items() -> None:
    doc = load_yaml(TEXT)
    assert doc.data["features"]["joins"][1]["source"] == "planes"
    assert doc.line_of(("name",)) == 2
    assert doc.line_of(("features", "derived", "a")) == 5
    assert doc.line_of(("features", "joins", 0, "keys")) == 8
    assert doc.line_of(("features", "joins", 1)) == 9
    assert doc.line_of(("features", "joins", 0, "keys", 0)) == 8
    # a key that is not there: the mapping it is missing from; at the top: the document
    assert doc.line_of(("features", "label", "expr")) == 3
    assert doc.line_of(("owner",)) == 2


def test_duplicate_key_names_its_line() -> None:
    with pytest.raises(YamlError) as err:
        load_yaml("a: 1\nb: 2\na: 3\n")
    assert err.value.line == 3 and "duplicate key 'a'" in err.value.message


def test_syntax_error_names_its_line() -> None:
    with pytest.raises(YamlError) as err:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n")
    assert err.value.line is not None and "not valid YAML" in err.value.message


def test_tags_that_build_objects_are_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(YamlError, match="could not determine a constructor"):
        load_yaml(f"a: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(YamlError, match=f"more than {MAX_NODES} values once aliases are expanded"):
        load_yaml("\n".join(lines) + "\n")


def test_empty_document() -> None:
    assert load_yaml("# nothing\n").data is None
