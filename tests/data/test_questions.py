import json

import pytest

from pbt_cli.data.answers import normalize_answer
from pbt_cli.data.questions import Question, check_source, load_questions, select_questions
from pbt_cli.errors import PbtError


def test_embedded_set_has_both_splits_and_valid_records():
    train = load_questions("embedded:train")
    validation = load_questions("embedded:validation")
    assert len(train) >= 200 and len(validation) >= 100
    assert not {q.question_id for q in train} & {q.question_id for q in validation}
    for q in train + validation:
        assert q.normalized_aliases
        assert list(q.normalized_aliases) == sorted({normalize_answer(a) for a in q.aliases})
        assert q.is_correct(q.answer_value)


def test_unknown_source_lists_the_known_forms():
    with pytest.raises(PbtError, match="embedded:train"):
        load_questions("squad:train")
    with pytest.raises(PbtError, match="splits"):
        load_questions("embedded:test")


def test_selection_is_stable_and_shards_cover_each_question_once():
    questions = load_questions("embedded:train")
    first = select_questions(questions, limit=50, seed=7)
    again = select_questions(list(reversed(questions))[::-1], limit=50, seed=7)
    assert [q.question_id for q in first] == [q.question_id for q in again]
    shards = [select_questions(questions, limit=50, seed=7, shard_idx=i, num_shards=3) for i in range(3)]
    ids = [q.question_id for shard in shards for q in shard]
    assert sorted(ids) == sorted(q.question_id for q in first)
    assert len(ids) == len(set(ids)) == 50
    assert select_questions(questions, limit=50, seed=8)[0] != first[0] or \
        select_questions(questions, limit=50, seed=8)[1] != first[1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shard_idx": 3, "num_shards": 3}, "out of range"),
    ({"num_shards": 0}, "at least 1"),
    ({"limit": 0}, "--limit"),
])
def test_bad_selection_is_one_clear_error(kwargs, message):
    with pytest.raises(PbtError, match=message):
        select_questions(load_questions("embedded:validation"), **kwargs)


def test_local_jsonl_file_and_missing_fields(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": "q1", "question": "Capital of Italy?",
                                "answer": {"value": "Rome", "aliases": ["Rome", "Roma"]}}) + "\n")
    [question] = load_questions(str(path))
    assert question.normalized_aliases == ("roma", "rome")  # computed when the file has none
    path.write_text(json.dumps({"question_id": "q1", "answer": {"value": "Rome"}}) + "\n")
    with pytest.raises(PbtError, match=r"line 1: missing 'question'"):
        load_questions(str(path))
    path.write_text(json.dumps({"question_id": "q1", "question": "x?", "answer": {"aliases": []}}) + "\n")
    with pytest.raises(PbtError, match="no gold aliases"):
        load_questions(str(path))
    path.write_text("{not json\n")
    with pytest.raises(PbtError, match="line 1: not valid JSON"):
        load_questions(str(path))


def test_record_round_trip_keeps_triviaqa_schema():
    record = {"question_id": "x", "question": "Q?", "answer": {"value": "Paris", "aliases": ["Paris"],
                                                               "normalized_aliases": ["paris"]}}
    assert Question.from_record(record, "test").to_record() == record


def test_check_source_is_offline(tmp_path):
    check_source("embedded:validation")
    check_source("trivia_qa:train")
    with pytest.raises(PbtError, match="does not exist"):
        check_source(str(tmp_path / "missing.jsonl"))
