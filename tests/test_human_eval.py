"""Human evaluation: the blind A/B page is built from a mygpt-evaluate report, hides which model wrote which text,
is driven by the keyboard in a real browser (headless Chromium, network blocked), exports votes that map back to
the right models, and the score's interval and test match published values."""

from __future__ import annotations

import json
import math
import os
import re

import pytest

from mygpt.commands.human_eval import main
from mygpt.human_eval import (
    binomial_two_sided_p,
    build_study,
    pairs_from_report,
    pairs_from_samples,
    render_page,
    score_votes,
    wilson_interval,
    write_page,
)
from tests.browser import offline

CHROMIUM = "/usr/bin/chromium"
MODELS = ("runs/mygpt-cpu", "gpt2")


def fake_report(n_prompts: int = 3, samples: int = 2) -> dict:
    """The parts of a mygpt-evaluate report.json the page reads. A's texts say 'alpha', B's 'beta'."""
    prompts = [{"prompt": f"ROMEO:\nPrompt {i} </script><!--", "reference": "..."} for i in range(n_prompts)]
    models = [{"name": name, "generation": {"samples": [
        {"prompt": p["prompt"], "continuations": [f"Thou art {word} {i}.{j}" for j in range(samples)]}
        for i, p in enumerate(prompts)]}} for name, word in zip(MODELS, ("alpha", "beta"))]
    return {"prompts": prompts, "models": models}


def votes_file(tmp_path, study: dict, choices: dict[str, str], name: str = "votes.json",
               changes: dict | None = None) -> str:
    """A votes file as the page exports it, for the choices {item id: left/right/tie}."""
    data = {"format": "mygpt-human-eval-votes/1", "study": study["id"], "models": study["models"],
            "items": [i["id"] for i in study["items"]], "rater": None,
            "votes": [{"item": i["id"], "choice": choices[i["id"]], "left": i["left"]} for i in study["items"]
                      if i["id"] in choices]}
    data.update(changes or {})
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_pairs_come_from_the_report_sample_by_sample():
    pairs, a, b = pairs_from_report(fake_report())
    assert (a, b) == MODELS and len(pairs) == 6
    assert pairs[3] == {"prompt": "ROMEO:\nPrompt 1 </script><!--", "a": "Thou art alpha 1.1",
                        "b": "Thou art beta 1.1", "prompt_index": 1, "sample": 1}
    pairs, a, b = pairs_from_report(fake_report(), model_a="gpt2", model_b="runs/mygpt-cpu")
    assert pairs[0]["a"] == "Thou art beta 0.0"
    with pytest.raises(ValueError, match="'gpt3' is not in the report; its models are: runs/mygpt-cpu, gpt2"):
        pairs_from_report(fake_report(), model_a="gpt3", model_b="gpt2")
    with pytest.raises(ValueError, match="3 prompts but 2 samples of model A"):
        pairs_from_samples(["p"] * 3, ["x", "y"], ["x", "y", "z"])
    assert len(pairs_from_samples(["p", "q"], ["x", ["y", "y2"]], ["u", ["v"]])) == 2  # unpaired extras left out


def test_study_is_seeded_shuffled_and_each_side_holds_the_model_the_truth_names():
    pairs, a, b = pairs_from_report(fake_report(n_prompts=10, samples=2))
    study = build_study(pairs, a, b, seed=1)
    assert study == build_study(pairs, a, b, seed=1) and study["id"] != build_study(pairs, a, b, seed=2)["id"]
    lefts = [item["left"] for item in study["items"]]
    assert 0 < sum(lefts) < len(lefts)  # both sides used
    assert [item["prompt"] for item in study["items"]] != [p["prompt"] for p in pairs]  # order shuffled
    for item in study["items"]:
        assert ("alpha" in item["left_text"]) == (item["left"] == 0)
        assert ("beta" in item["right_text"]) == (item["left"] == 0)


def test_page_is_self_contained_and_names_no_model_outside_its_data():
    pairs, a, b = pairs_from_report(fake_report())
    page = render_page(build_study(pairs, a, b))
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page, re.I)
    assert not re.search(r"https?://", page)
    data = re.search(r'<script type="application/json" id="study">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["items"][0]["prompt"].endswith("</script><!--")  # the hostile prompt stayed data
    outside = page.replace(data, "")
    assert "gpt2" not in outside and "mygpt-cpu" not in outside


def test_wilson_interval_and_sign_test_match_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score interval).
    for (k, n), expected in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                             (1, 29): (0.0061, 0.1718)}.items():
        assert tuple(round(x, 4) for x in wilson_interval(k, n)) == expected
    # Exact sign test: 8 of 10 -> 2 * (1 + 10 + 45) / 1024; 5 of 10 -> 1; 0 of 5 -> 2 / 32.
    assert binomial_two_sided_p(8, 10) == 112 / 1024 and binomial_two_sided_p(5, 10) == 1.0
    assert binomial_two_sided_p(0, 5) == 2 / 32
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0..n"):
        wilson_interval(3, 2)


def test_score_maps_sides_back_to_models_and_excludes_ties(tmp_path):
    pairs, a, b = pairs_from_report(fake_report(n_prompts=5, samples=2))
    study = build_study(pairs, a, b, seed=3)
    _, key = write_page(study, tmp_path / "page.html")
    # The rater prefers model A's text on the first 7 pairs, B's on 2, and calls the last a tie.
    choices = {}
    for n, item in enumerate(study["items"]):
        a_side = "left" if item["left"] == 0 else "right"
        b_side = "right" if a_side == "left" else "left"
        choices[item["id"]] = a_side if n < 7 else b_side if n < 9 else "tie"
    score = score_votes([votes_file(tmp_path, study, choices)], key=key)
    assert (score["model_a"], score["wins_a"], score["wins_b"], score["ties"], score["votes"]) == (a, 7, 2, 1, 10)
    assert score["win_rate_a"] == 7 / 9 and score["win_rate_ties_half"] == 7.5 / 10
    assert (score["ci95_low"], score["ci95_high"]) == wilson_interval(7, 9)
    assert score["p_value"] == binomial_two_sided_p(7, 9)
    # Two raters' files add up.
    two = score_votes([votes_file(tmp_path, study, choices, "r1.json"), votes_file(tmp_path, study, choices,
                                                                                   "r2.json")], key=key)
    assert (two["wins_a"], two["wins_b"], two["ties"], len(two["raters"])) == (14, 4, 2, 2)


def test_bad_votes_are_refused_with_the_reason(tmp_path):
    pairs, a, b = pairs_from_report(fake_report())
    study = build_study(pairs, a, b)
    _, key = write_page(study, tmp_path / "page.html")
    first = study["items"][0]
    with pytest.raises(FileNotFoundError, match="votes file .*missing.json' does not exist"):
        score_votes([str(tmp_path / "missing.json")])
    unknown = votes_file(tmp_path, study, {first["id"]: "left"}, name="unknown.json")
    data = json.loads(open(unknown).read())
    data["votes"][0]["item"] = "q999"
    open(unknown, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match="a vote for pair 'q999', which is not in study"):
        score_votes([unknown], key=key)
    data["votes"][0].update(item=first["id"], left=1 - first["left"])  # sides swapped by hand
    open(unknown, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match="disagrees with the key"):
        score_votes([unknown], key=key)
    with pytest.raises(ValueError, match="choice 'maybe'; valid: left, right, tie"):
        score_votes([votes_file(tmp_path, study, {first["id"]: "maybe"}, name="maybe.json")])
    other = votes_file(tmp_path, study, {first["id"]: "left"}, name="other.json",
                       changes={"study": "0123456789abcdef"})
    with pytest.raises(ValueError, match="holds votes of study 0123456789abcdef"):
        score_votes([other], key=key)
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a votes file exported by the human-evaluation page"):
        score_votes([str(tmp_path / "junk.json")])


def test_command_writes_the_page_and_scores_votes(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(fake_report()), encoding="utf-8")
    page = tmp_path / "study" / "human.html"
    assert main(["page", "--report", str(report), "--output", str(page), "--seed", "4"]) == 0
    key = json.loads((tmp_path / "study" / "human.key.json").read_text())
    assert key["models"] == list(MODELS) and len(key["left"]) == 6
    html = page.read_text(encoding="utf-8")
    study = json.loads(re.search(r'id="study">(.*?)</script>', html, re.S).group(1))
    votes = votes_file(tmp_path, study, {i["id"]: "tie" for i in study["items"]})
    out = tmp_path / "score.json"
    assert main(["score", "--votes", votes, "--key", str(page.with_name("human.key.json")),
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["ties"] == 6 and "every vote is a tie" in capsys.readouterr().out
    for argv, message in ((["page", "--report", str(tmp_path / "nope.json")], "evaluation report .* does not exist"),
                          (["score", "--votes", str(tmp_path / "nope.json")], "votes file .* does not exist"),
                          (["rate"], "give a subcommand, page or score"),
                          (["page", "--report", str(report), "--model_a", "gpt2", "--model_b", "gpt2"],
                           "both 'gpt2'")):
        with pytest.raises(SystemExit, match=message):
            main(argv)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: install Debian's chromium "
                    "(apt-get install chromium) and Playwright (pip install playwright) to run the browser test")
def test_keyboard_votes_survive_a_reload_and_export_to_the_right_models(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")
    pairs, a, b = pairs_from_report(fake_report(n_prompts=4, samples=2))
    study = build_study(pairs, a, b, seed=5)
    page_path, key = write_page(study, tmp_path / "human.html")
    attempted, errors = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))

            offline(page, attempted, ("file:", "blob:"))  # blob: the vote export's download
            page.goto(page_path.as_uri())
            visible = page.inner_text("body")
            assert a not in visible and b not in visible  # blind
            # Plan: prefer model A (the 'alpha' text) on pairs 1-5, B on 6-7, tie on 8; keys vary on purpose.
            keys = {"left": ["a", "ArrowLeft"], "right": ["b", "ArrowRight"]}
            for n in range(8):
                assert page.inner_text("#progress").startswith(f"Pair {n + 1} of 8")
                alpha_left = "alpha" in page.inner_text("#left-text")
                if n == 7:
                    page.keyboard.press("t" if n % 2 else "ArrowDown")
                    continue
                want_left = alpha_left if n < 5 else not alpha_left
                page.keyboard.press(keys["left" if want_left else "right"][n % 2])
                if n == 2:  # reload mid-way: the votes so far are kept in localStorage, and the page resumes
                    # Chromium hands a page's storage writes to the browser process asynchronously; a reload at
                    # once can race them. A second page of the same origin sees the votes only once they have
                    # arrived there (reading the study never writes), so wait for that, then reload.
                    checker = context.new_page()
                    offline(checker, attempted, ("file:", "blob:"))
                    checker.goto(page_path.as_uri())
                    checker.wait_for_function(
                        "() => Object.keys(localStorage).filter(k => k.startsWith('mygpt-human-eval:')).some("
                        "k => Object.keys(JSON.parse(localStorage.getItem(k)).votes || {}).length >= 3)",
                        timeout=10_000)
                    checker.close()
                    page.reload()
                    assert page.inner_text("#progress").startswith("Pair 4 of 8 · 3 voted")
            assert page.is_visible("#done")
            # All voted: the page stays on the last pair. Go back one pair and change its vote (B) into one for A.
            page.keyboard.press("ArrowUp")
            assert page.inner_text("#progress").startswith("Pair 7 of 8 · 8 voted")
            page.keyboard.press("ArrowLeft" if "alpha" in page.inner_text("#left-text") else "ArrowRight")
            with page.expect_download() as download_info:
                page.keyboard.press("e")
            download = download_info.value
            exported = tmp_path / download.suggested_filename
            download.save_as(exported)
        finally:
            browser.close()
    assert attempted == [] and errors == []
    assert download.suggested_filename == f"votes-{study['id']}.json"
    score = score_votes([str(exported)], key=key)
    # Pairs 1-5 and 7 for A, pair 6 for B, pair 8 a tie.
    assert (score["model_a"], score["wins_a"], score["wins_b"], score["ties"]) == (a, 6, 1, 1)
