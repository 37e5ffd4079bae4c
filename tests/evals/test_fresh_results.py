"""Every number is current: stored results are reused only for the same inputs (content fingerprints)."""

from __future__ import annotations

import pytest
import test_ays as ays_case

from pbt_cli.errors import PbtError
from pbt_cli.models.spec import ModelSpec

# --- evaluations: results are reused only for the same inputs ------------------------------------------


def test_eval_refuses_results_of_a_changed_chat_template_or_question_file(tmp_path):
    from pbt_cli.evals.ays import AysConfig, run_ays
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.scripted import ScriptedGenerator

    questions = ays_case.write_questions(tmp_path / "questions.jsonl")
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")

    def run(**overrides):
        model = ScriptedGenerator(ays_case.model_reply, name="model-x")
        reader = ScriptedGenerator(ays_case.extractor_reply, name="reader")
        cfg = AysConfig(model=ModelSpec("model-x", chat_template=template), questions=str(questions),
                        extractor=ModelSpec("reader"), out=tmp_path / "results", **overrides)
        results, _ = run_ays(cfg, pool=GeneratorPool(preset={"model-x": model, "reader": reader}))
        return results, model

    first, _ = run()
    assert first["settings"]["model_fingerprints"]["model"]["chat_template"].startswith("sha256:")
    again, model = run()
    assert again.get("reused") and not model.calls
    template.write_text("{{ messages }} edited")
    with pytest.raises(PbtError, match="model_fingerprints") as refused:
        run()
    assert "\n" not in str(refused.value) and "--overwrite" in str(refused.value)
    rerun, model = run(overwrite=True)
    assert not rerun.get("reused") and model.calls
    ays_case.write_questions(questions, {**ays_case.CASES, "q-peru": ("What is the capital of Peru?", "Lima", [],
                                                                      "Lima", "Lima")})
    with pytest.raises(PbtError, match="data_fingerprints"):
        run()


def test_results_say_how_the_evaluated_weights_were_obtained(tmp_path):
    from pbt_cli.evals.ays import AysConfig, run_ays
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.scripted import ScriptedGenerator

    questions = ays_case.write_questions(tmp_path / "questions.jsonl")
    cfg = AysConfig(model=ModelSpec("owner/model", revision="abc"), questions=str(questions),
                    extractor=ModelSpec("reader"), out=tmp_path / "results")
    pool = GeneratorPool(preset={"owner/model": ScriptedGenerator(ays_case.model_reply, name="owner/model"),
                                 "reader": ScriptedGenerator(ays_case.extractor_reply, name="reader")})
    results, _ = run_ays(cfg, pool=pool)
    assert results["base_weights"]["model"] == {"loaded_as": "none", "source": "hub", "hub_id": "owner/model",
                                                "revision": "abc"}
    assert results["intervals"]["proportion"] == "wilson score"
