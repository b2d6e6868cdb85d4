"""docs/configuration.md matches what scripts/gen_config_docs.py renders from the pipeline config schema."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from airflow_mlops.config import PipelineConfig, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"
DOC = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_up_to_date(gen: ModuleType) -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.is_file() else None
    problem = gen.stale_message(current, gen.render())
    assert problem is None, problem


def _schema_key_paths(schema: dict[str, Any]) -> set[str]:
    """Every key path of the JSON schema pydantic derives, independent of the generator's own walk."""
    defs = schema.get("$defs", {})
    found: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
        for arm in node.get("anyOf", []):
            walk(arm, path)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ".<name>")
        for sub in node.get("patternProperties", {}).values():  # mappings with constrained keys
            walk(sub, path + ".<name>")
        for name, sub in node.get("properties", {}).items():
            key = f"{path}.{name}" if path else name
            found.add(key)
            walk(sub, key)

    walk(schema, "")
    return found


def test_every_schema_key_is_in_the_reference() -> None:
    rows = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE))
    keys = _schema_key_paths(PipelineConfig.model_json_schema())
    assert "ingest.sensor.poke_interval_seconds" in keys and "sources.<name>.path" in keys
    missing = sorted(keys - rows)
    assert not missing, f"keys of the schema missing from docs/configuration.md: {missing}"


def test_annotated_example_is_the_shipped_config(gen: ModuleType) -> None:
    original = gen.EXAMPLE.read_text(encoding="utf-8")
    annotated = gen.annotate_example(original)
    assert annotated.count("\n# ") > original.count("\n# ")
    assert yaml.safe_load(annotated) == yaml.safe_load(original)
    assert parse_pipeline(annotated, "annotated example") == parse_pipeline(original, "example")
    assert f"```yaml\n{annotated}```" in DOC.read_text(encoding="utf-8")


def test_check_reports_a_stale_page_with_the_command(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "configuration.md"
    page.write_text("# Configuration\n\nwritten by hand\n")
    monkeypatch.setattr(gen, "OUTPUT", page)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "run python scripts/gen_config_docs.py" in err and "-written by hand" in err
    assert gen.main([]) == 0
    assert page.read_text() == gen.render()
    assert gen.main(["--check"]) == 0


def test_a_type_without_wording_is_refused(gen: ModuleType) -> None:
    class Odd(BaseModel):
        ports: set[int]

    with pytest.raises(gen.SchemaRenderError, match="ports"):
        gen.render_section(gen.Section("odd", Odd))
