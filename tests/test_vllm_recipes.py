"""The paper recipes' vLLM settings agree (issue 23): every in-process `--backend vllm` line caps the
context as the served recipe does, and `vllm serve` loads the Hugging Face tokenizer as the in-process
backend does."""

from __future__ import annotations

import re
from pathlib import Path

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "paper"


def commands(path: Path) -> list[str]:
    """The shell commands of a script, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def served_context() -> str:
    serves = [c for c in commands(RECIPES / "vllm_serve.bash") if re.search(r"\bvllm serve \"\$@\"", c)]
    lengths = {re.search(r"--max-model-len (\S+)", c).group(1) for c in serves}
    assert len(serves) == 2 and len(lengths) == 1
    return lengths.pop()


def test_in_process_vllm_recipes_cap_the_context_as_the_served_recipe():
    length = served_context()
    lines = [c for path in sorted(RECIPES.glob("*.sbatch")) for c in commands(path) if "--backend vllm" in c]
    assert len(lines) >= 5  # generate_trees (1) and evaluate (4)
    for line in lines:
        assert f"--max-model-len {length}" in line, line


def test_vllm_serve_loads_the_hugging_face_tokenizer():
    for line in [c for c in commands(RECIPES / "vllm_serve.bash") if re.search(r"\bvllm serve \"\$@\"", c)]:
        assert "--tokenizer-mode hf" in line, line
