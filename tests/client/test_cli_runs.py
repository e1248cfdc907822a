"""Finding and naming runs from the CLI: `--name/--tag/--notes` at submission, `edit`, the list
filters and sorts, dataset names in place of ids, `datasets list|show|delete`, `aliases
list|set|delete`, `submit --estimate`, and `generate` saying why it printed no words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import write_corpus

from .conftest import OVERRIDES, Server, sets


def rows(text: str) -> list[dict[str, str]]:
    """The rows of a command's tab-separated output, by column."""
    header, *lines = text.splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def test_names_tags_notes_edit_and_list_filters(server: Server, trained: dict[str, Any]) -> None:
    quick = {**OVERRIDES, "max_max_epoch": 1, "max_steps_per_epoch": 3}
    args = ("submit", "-d", "tiny", "-p", "test", *sets(quick))
    first = server.ok(*args, "--name", "Labelled Alpha", "--tag", "cli-a", "--tag", "cli-b", "--notes", "x", "--quiet")
    first_id = first.strip()
    assert first_id.startswith("job_") and first == f"{first_id}\n"
    second = server.json(*args, "--name", "labelled beta", "--tag", "cli-a")
    assert second["dataset_id"] == trained["dataset"]["id"]  # the dataset by its name
    assert second["name"] == "labelled beta" and second["tags"] == ["cli-a"]

    listed = rows(server.ok("list", "--search", "LABELLED", "--sort", "created_at"))
    assert [r["job"] for r in listed] == [first_id, second["id"]]
    assert listed[0]["name"] == "Labelled Alpha" and listed[0]["tags"] == "cli-a,cli-b"
    assert [r["job"] for r in rows(server.ok("list", "--tag", "cli-a", "--tag", "cli-b"))] == [first_id]
    assert [r["job"] for r in rows(server.ok("list", "-q", first_id))] == [first_id]
    assert {r["job"] for r in rows(server.ok("list", "--tag", "cli-a", "--dataset", "tiny", "--preset", "test"))} == {
        first_id,
        second["id"],
    }
    assert rows(server.ok("list", "--tag", "cli-a", "--preset", "small")) == []

    edited = server.ok("edit", second["id"], "--name", "renamed", "--add-tag", "cli-c", "--notes", "second look")
    assert edited.strip() == f"job {second['id']}: name renamed; tags cli-a, cli-c; notes second look"
    again = server.json("edit", second["id"], "--remove-tag", "cli-a")
    assert again["tags"] == ["cli-c"] and again["name"] == "renamed"
    status = server.ok("status", second["id"])
    assert "name      renamed" in status and "tags      cli-c" in status and "notes     second look" in status
    assert "estimate  " in status and " in all" in status  # the estimate made at submission
    cleared = server.json("edit", second["id"], "--notes", "")
    assert cleared["notes"] is None and cleared["name"] == "renamed"
    assert [r["job"] for r in rows(server.ok("list", "--tag", "cli-a", "--limit", "1"))] == [first_id]

    for job in (first_id, second["id"]):
        server.cli("cancel", job)


def test_best_runs_first(server: Server, trained: dict[str, Any]) -> None:
    ranked = rows(server.ok("list", "--sort", "valid_ppl", "--status", "succeeded"))
    values = [float(r["best valid"]) for r in ranked]
    assert values and values == sorted(values)


def test_submit_estimate_queues_nothing(server: Server, trained: dict[str, Any]) -> None:
    before = server.http("GET", "/v1/jobs", params={"limit": 200}).json()["items"]
    text = server.ok("submit", "-d", "tiny", "-p", "test", *sets(), "--estimate")
    head, times = text.splitlines()
    assert head.startswith(f"test on {trained['dataset']['id']}: ") and " parameters" in head and "iB to train" in head
    assert " steps an epoch at " in times and " in all on " in times
    found = server.json("submit", "-d", "tiny", "-p", "test", *sets(), "--estimate")
    assert found["fits"] is True and found["config"]["hidden_size"] == OVERRIDES["hidden_size"]
    assert server.http("GET", "/v1/jobs", params={"limit": 200}).json()["items"] == before


def test_datasets_list_show_delete(server: Server, trained: dict[str, Any], tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "spare", train=50, valid=10, test=10, seed=7)
    spare = server.ok("upload", str(corpus), "--name", "spare-set", "--quiet").strip()
    assert spare.startswith("ds_")
    listed = {r["dataset"]: r for r in rows(server.ok("datasets", "list"))}
    assert listed[spare]["name"] == "spare-set" and listed[trained["dataset"]["id"]]["name"] == "tiny"
    assert listed[spare]["size"].endswith(("KiB", "bytes"))
    shown = server.json("datasets", "show", "spare-set")
    assert shown["id"] == spare
    assert server.ok("datasets", "delete", "spare-set").strip() == f"dataset {spare} deleted"
    assert spare not in server.ok("datasets", "list")


def test_aliases_list_set_delete(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    assert server.ok("aliases", "set", "cli-alias", job_id).strip() == f"alias cli-alias -> {job_id}"
    listed = {r["alias"]: r["target"] for r in rows(server.ok("aliases", "list"))}
    assert listed["cli-alias"] == job_id
    assert server.ok("aliases", "delete", "cli-alias").strip() == "alias cli-alias deleted"
    assert "cli-alias" not in server.ok("aliases", "list")


def test_scorings_take_names_tags_and_dataset_names(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    args = ("scorings", "submit", "-m", job_id, "-d", "tiny", "--split", "test", "--name", "tiny test split")
    scoring = server.json(*args, "--tag", "cli-s", "--tag", "cli-t", "--notes", "a look")
    assert scoring["dataset_id"] == trained["dataset"]["id"] and scoring["tags"] == ["cli-s", "cli-t"]
    server.ok("scorings", "watch", scoring["id"])
    listed = rows(server.ok("scorings", "list", "--tag", "cli-s", "-q", "TINY TEST"))
    assert [r["scoring"] for r in listed] == [scoring["id"]] and listed[0]["name"] == "tiny test split"
    edited = server.ok("scorings", "edit", scoring["id"], "--clear-tags", "--notes", "done")
    assert edited.strip() == f"scoring {scoring['id']}: name tiny test split; tags -; notes done"


def test_generate_says_when_the_model_ends_the_text_at_once(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    base = ("generate", "-m", job_id, "--prompt", "the cat sat on the mat", "--max-tokens", "3")
    body = {"model": job_id, "prompt": "the cat sat on the mat", "max_tokens": 3, "n": 1}

    def ends_at_once(seed: int) -> bool:
        choice = server.http("POST", "/v1/generate", json=body | {"seed": seed}).json()["choices"][0]
        return choice["finish_reason"] == "eos" and not choice["tokens"]

    seed = next((s for s in range(200) if ends_at_once(s)), None)
    assert seed is not None, "no seed in 200 made the model end the sentence at once"
    done = server.cli(*base, "--seed", str(seed))
    assert done.returncode == 0 and done.stdout == "the cat sat on the mat\n"
    assert done.stderr.splitlines() == [
        "the model ended the text at once (it generated </s>); try --temperature or a longer prompt"
    ]
    spoken = server.cli(*base, "--seed", str(seed), "--json")
    assert json.loads(spoken.stdout)["choices"][0]["finish_reason"] == "eos" and "ended the text" in spoken.stderr
