"""`pbt generate`'s reuse key holds content fingerprints of its models (pbt_cli/fingerprints.py)."""

from __future__ import annotations

import pytest
import test_generate as case

from pbt_cli.errors import PbtError
from pbt_cli.models.spec import ModelSpec


def test_trees_are_refused_when_an_agents_chat_template_changed_in_place(tmp_path):
    """`pbt generate`'s reuse key holds the agents' fingerprints too."""
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    agent = ModelSpec("agent-a", chat_template=template)
    case.generate(tmp_path / "trees", case.fixed("Paris"), case.fixed("London"), limit=2, max_turns=2,
                  model_a=agent)
    template.write_text("{{ messages }} and more")
    with pytest.raises(PbtError, match=r"other settings \(model_fingerprints\)"):
        case.generate(tmp_path / "trees", case.fixed("Paris"), case.fixed("London"), limit=2, max_turns=2,
                      model_a=agent)
