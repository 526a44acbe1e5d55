"""Sleep for language models: context-frozen decision-token training (checked on gradients),
the training-signal scorer, a two-day stream where replay keeps day 1 and naive fine-tuning
loses it, and the night's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram.data.facts import generate_days
from engram.data.text import CharTokenizer
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sleep import (
    IGNORE,
    Hippocampus,
    Layout,
    NightConfig,
    Scorer,
    Sleep,
    decision_loss,
    surprise,
)
from engram.lm.sleep.episodes import training_pair
from engram.replay.priority import PrioritySignals

ALPHABET = "\n !',.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def tokenizer() -> CharTokenizer:
    return CharTokenizer(sorted(ALPHABET))


def tiny(parts: tuple[str, ...] = (), seed: int = 0, block: int = 64) -> HippocampalTransformer:
    torch.manual_seed(seed)
    config = HippocampalTransformerConfig(vocab_size=len(ALPHABET), n_layer=1, n_head=2, n_embd=32,
                                          block_size=block, parts=parts)
    return HippocampalTransformer(config, list(sorted(ALPHABET)))


def batch(seed: int = 0, prefix: int = 40, length: int = 48):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(len(ALPHABET), (3, length), generator=g)
    targets = torch.randint(len(ALPHABET), (3, length), generator=g)
    targets[:, :prefix] = IGNORE
    targets[0, -2:] = IGNORE  # a ragged decision span
    return inputs, targets


@pytest.mark.parametrize("parts", [(), ("place", "grid", "theta_gamma")], ids=["plain", "hippocampal"])
def test_context_frozen_loss_equals_the_full_loss_and_gradients_fall_only_on_decisions(parts):
    inputs, targets = batch()
    prefix = 40
    grads = {}
    for frozen in (True, False):
        model = tiny(parts)
        loss = decision_loss(model, inputs, targets, prefix, frozen=frozen)
        loss.sum().backward()
        grads[frozen] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    # the same logits at the decision positions: equal loss values
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-5, atol=1e-6)
    frozen, full = grads[True][1], grads[False][1]
    # no gradient reaches the context positions' embeddings through a frozen pass; a full pass
    # sends them gradient through the keys and values
    assert torch.count_nonzero(frozen["wpe.weight"][:prefix]) == 0
    assert torch.count_nonzero(full["wpe.weight"][:prefix]) > 0
    # parameters acting only at the decision positions get the same gradient either way
    torch.testing.assert_close(frozen["wpe.weight"][prefix:], full["wpe.weight"][prefix:],
                               rtol=1e-4, atol=1e-6)
    # elsewhere they differ, by exactly the cut path
    assert not torch.allclose(frozen["blocks.0.attn.c_attn.weight"], full["blocks.0.attn.c_attn.weight"])


def test_the_gradient_comes_from_decision_targets_only():
    inputs, targets = batch()
    model = tiny()
    decision_loss(model, inputs, targets, 40).sum().backward()
    one = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    changed = inputs.clone()
    changed[:, 41:] = torch.roll(changed[:, 41:], 1, 0)  # other decision inputs: other gradient
    decision_loss(model, changed, targets, 40).sum().backward()
    assert not torch.allclose(model.wpe.weight.grad, one["wpe.weight"])
    bad = targets.clone()
    bad[0, 3] = 5
    with pytest.raises(ValueError, match="targets: expected IGNORE at every position before prefix"):
        decision_loss(model, inputs, bad, 40)


def _day_sleep(mode: str, old: float, stream, nights: tuple[int, ...], seed: int = 0):
    model = tiny(seed=seed)
    h = Hippocampus(tokenizer(), Layout(64, 12))
    config = NightConfig(steps=40, batch=8, lr=1e-2, mode=mode, old=old, base=0.0, dream=0.0,
                         prioritized=False, seed=seed)
    sleep = Sleep(model, h, config)
    nll = []
    for day in nights:
        h.add(list(stream.days[day - 1]))
        sleep.night(day)
        tokens, roles = h.tokens(h.indices(day=1))
        nll.append(float(surprise(model, tokens, roles, h.layout.prefix).mean()))
    return nll


def test_replay_keeps_day_one_on_a_two_day_stream_where_naive_fine_tuning_loses_it():
    stream = generate_days(2, 6, 0, seed=0)
    naive = _day_sleep("all", 0.0, stream, (1, 2))
    replay = _day_sleep("frozen", 0.5, stream, (1, 2))
    # both learn day 1 overnight (from ~ln 60 = 4.1 nats) ...
    assert naive[0] < 1.0 and replay[0] < 1.0
    # ... and after night 2 naive fine-tuning has lost it while the sleep kept it
    assert naive[1] > 2 * naive[0]
    assert replay[1] < naive[1] / 2


def test_the_scorer_ranks_flagged_surprising_and_unfinished_moments_first():
    stream = generate_days(2, 4, 1, seed=4)
    model = tiny()
    h = Hippocampus(tokenizer(), Layout(64, 12))
    h.add(list(stream.days[0]), model=model)
    h.add(list(stream.days[1]), model=model)
    meta = h.buffer.metadata()
    assert torch.all(meta["novelty"] > 0)  # the model's own surprise, not a placeholder
    only_reward = Scorer(PrioritySignals(reward=1, novelty=0, salience=0, unfinished=0))
    priority = only_reward.priorities(h)
    corrected = [i for i, e in enumerate(h.episodes) if e.fact.correction]
    others = [i for i, e in enumerate(h.episodes) if not e.fact.correction]
    assert priority[corrected].min() > priority[others].max()
    # the episode the correction superseded is no longer replayed
    old = next(i for i, e in enumerate(h.episodes) if not h.active[i])
    assert (h.episodes[old].fact.subject, h.episodes[old].fact.attribute) == (
        h.episodes[corrected[0]].fact.subject, h.episodes[corrected[0]].fact.attribute)
    margins = Scorer(PrioritySignals()).unfinished(model, h)
    assert torch.equal(h.buffer.metadata()["unfinished"][torch.tensor(h.indices())] > 0,
                       torch.tensor(margins > 0))


def test_training_pairs_score_decisions_or_every_token():
    stream = generate_days(1, 2, 0, seed=0)
    h = Hippocampus(tokenizer(), Layout(64, 12))
    h.add(list(stream.days[0]))
    tokens, roles = h.tokens([0])
    _, decision = training_pair(tokens, roles, "frozen")
    _, every = training_pair(tokens, roles, "all")
    kept = decision[decision != IGNORE]
    value = h.episodes[0].fact.value
    assert tokenizer().decode(kept.tolist()).startswith(value)
    assert (every != IGNORE).sum() > (decision != IGNORE).sum()


def test_a_night_refuses_a_zero_budget_a_foreign_checkpoint_and_a_missing_day(tmp_path):
    with pytest.raises(ValueError, match="steps: expected a positive integer, got 0"):
        NightConfig(steps=0)
    with pytest.raises(ValueError, match="old \\+ base \\+ dream: expected < 1"):
        NightConfig(old=0.5, base=0.3, dream=0.2)
    stream = generate_days(1, 3, 0, seed=0)
    h = Hippocampus(tokenizer(), Layout(64, 12))
    h.add(list(stream.days[0]))
    path = tmp_path / "night.pt"
    Sleep(tiny(), h, NightConfig(steps=2, batch=4, base=0.0)).night(1, checkpoint=path)
    with pytest.raises(ValueError, match="holds another night"):
        Sleep(tiny(seed=1), h, NightConfig(steps=2, batch=4, base=0.0)).night(1, checkpoint=path)
    with pytest.raises(ValueError, match="day: expected episodes of day 2"):
        Sleep(tiny(), h, NightConfig(steps=2, batch=4)).night(2)
    with pytest.raises(ValueError, match="layout: expected episodes of at most block_size 32"):
        Sleep(tiny(block=32), h, NightConfig())


def test_a_night_reports_its_budget_and_what_it_replayed_and_why():
    stream = generate_days(2, 4, 1, seed=0)
    model = tiny()
    h = Hippocampus(tokenizer(), Layout(64, 12))
    base = np.array(tokenizer().encode(" ".join(c.text() for c in stream.days[0]) * 3))
    sleep = Sleep(model, h, NightConfig(steps=4, batch=8), base=base, scorer=Scorer(PrioritySignals()))
    h.add(list(stream.days[0]), model=model)
    sleep.night(1)
    h.add(list(stream.days[1]), model=model)
    report = sleep.night(2)
    assert report.drawn == {"old": 8, "base": 8, "dream": 8, "day": 8}
    assert report.tokens_forward == 4 * 8 * 64
    # frozen: 6 episodes a step skip the 52 context positions' backward
    assert report.tokens_gradient == 4 * (8 * 64 - 6 * 52)
    assert report.replayed and sum(r["times"] for r in report.replayed) <= 4 * 4
    assert {"priority", "reward", "novelty", "salience", "unfinished"} <= set(report.replayed[0])


def test_a_probe_laid_out_like_the_episodes_scores_the_answer_where_the_night_trained_it():
    from engram.data.facts import answer_text, probe_questions, question_prompt
    from engram.lm.sleep.episodes import dream_episode, encode_episodes
    from engram.lm.sleep.probe import answer_scores

    model, tok, layout = tiny(("grid",)).eval(), tokenizer(), Layout(64, 16)
    fact = generate_days(1, 1, 0, seed=0).days[0][0].facts[0]
    question = probe_questions([fact], "train")[0].text
    tokens, roles = encode_episodes([dream_episode(fact, question, "", 1)], tok, layout)
    inputs, targets = training_pair(tokens, roles, "frozen")
    with torch.no_grad():
        trained = -decision_loss(model, inputs, targets, layout.prefix, frozen=False)
    trained = float(trained * (targets != IGNORE).sum())  # the night's log-likelihood of the value
    prompt, answer = [question_prompt(question)], [answer_text(fact.value)]
    assert answer_scores(model, tok, prompt, answer, width=layout.context)[0] == pytest.approx(
        trained, abs=1e-4)
    assert abs(answer_scores(model, tok, prompt, answer)[0] - trained) > 1e-3  # elsewhere: not
    with pytest.raises(ValueError, match="width"):
        answer_scores(model, tok, prompt, answer, width=65)


def test_the_pretraining_mixture_keeps_the_base_validation_text_and_trains_on_every_skill_document():
    from engram.data.facts import skill_text
    from engram.data.text import split_text
    from engram.lm.experiments.sleep import mixture

    base = "".join(f"Paragraph {i} of the base text.\n\n" for i in range(200))
    skill = skill_text(30, seed=1)
    text, fraction = mixture(base, skill, seed=0)
    train, val = split_text(text, fraction)
    assert val == split_text(base, 0.9)[1]
    documents = [d for d in skill.split("\n\n") if d.strip()]
    assert len(documents) == 30 and all(d in train for d in documents)
    paragraphs = [p for p in split_text(base, 0.9)[0].split("\n\n") if p]
    kept = [p for p in train.split("\n\n") if p.startswith("Paragraph")]
    assert kept == paragraphs  # the base text's order is kept, documents only come between
    assert mixture(base, skill, seed=0) == (text, fraction) != mixture(base, skill, seed=1)


def test_a_shared_base_is_pretrained_once_per_kind_without_any_subject_of_any_seeds_stream(tmp_path):
    from engram.lm.experiments.sleep import Config, _night_config, jobs
    from engram.runs import RunFolder

    cfg = Config(seeds=(3, 4), arms=("naive", "sleep", "sleep-gpt"), days=3, skill_documents=10,
                 shared_base=True, shares=(0.0, 0.125, 0.75), baseline_optimizer="adamw",
                 optimizer="apollo")
    pre, arms = jobs(cfg, RunFolder(tmp_path))
    bases = [job.config for job in pre]
    assert sorted(b.kind for b in bases) == ["gpt", "ht"] and len({b.folder for b in bases}) == 2
    told = {f.subject for s in (3, 4) for f in generate_days(3, 6, 1, seed=s).facts_after(3).values()}
    assert all(set(b.exclude) == told for b in bases)
    assert {a.config.base for a in arms if a.config.arm != "sleep-gpt"} == {
        b.folder for b in bases if b.kind == "ht"}
    night = {a.config.arm: _night_config(a.config, 3) for a in arms}
    assert night["naive"].optimizer == "adamw" and night["naive"].dream == 0
    assert night["sleep"].optimizer == "apollo" and night["sleep"].ewc == 100
    assert (night["sleep"].old, night["sleep"].base, night["sleep"].dream) == (0.0, 0.125, 0.75)
    with pytest.raises(ValueError, match="shares"):
        Config(shares=(0.5, 0.5, 0.25))
