"""The answers kept for conditional requests: bounded, compressed, and what gidgethub reads back is what it
stored."""

from __future__ import annotations

import json
import sys

from ghapp.answers import CompressedAnswers


def listing(n: int) -> dict[str, object]:
    return {
        "total_count": n,
        "jobs": [
            {
                "id": i,
                "status": "in_progress",
                "labels": ["self-hosted", "linux", "x64"],
                "steps": [],
                "name": "build",
            }
            for i in range(n)
        ],
    }


def test_an_answer_reads_back_as_stored_and_costs_less_than_its_json() -> None:
    answers = CompressedAnswers(maxsize=10)
    body = listing(100)
    answers["/repos/acme/app/actions/runs/1/jobs"] = ('W/"tag"', None, body, "https://next")
    assert answers["/repos/acme/app/actions/runs/1/jobs"] == ('W/"tag"', None, body, "https://next")
    assert answers.stored_bytes < len(json.dumps(body)) / 5
    assert answers.stored_bytes < sys.getsizeof(body["jobs"])  # less than the list of references alone


def test_the_least_recently_used_answer_goes_first_at_maxsize() -> None:
    answers = CompressedAnswers(maxsize=2)
    answers["a"] = ("1", None, [1], None)
    answers["b"] = ("2", None, [2], None)
    assert answers["a"][2] == [1]  # a is now the most recently used
    answers["c"] = ("3", None, [3], None)
    assert sorted(answers) == ["a", "c"]
    assert len(answers) == 2
    del answers["a"]
    assert list(answers) == ["c"]
