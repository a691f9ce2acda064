"""The knowledge check: the answer follows the LLM's own statement of what the query asks."""

from __future__ import annotations

import json

import pytest
import torch

import pixelreason.models.segmenter as segmenter
from pixelreason.api import encode_image
from pixelreason.cli import main
from pixelreason.data.world.categories import class_labels
from pixelreason.data.world.samples import generate_sample
from pixelreason.models.backbone import Generation
from pixelreason.models.knowledge import (
    FACT_MARGIN,
    RANK_MARGIN,
    REFUSAL_MARGIN,
    RESTATED,
    Statements,
    asked_fact,
    asks_by_knowledge,
    fact_subject,
    restated_share,
    singular_fact,
    stated_class,
)
from pixelreason.models.presence import (
    NOTHING_FOUND,
    class_presence,
    mentioned_classes,
    named_classes,
)
from pixelreason.models.segmenter import PromptBatch
from pixelreason.prompting import Turn
from pixelreason.registry import load_model

LABELS = class_labels()


def _index(name: str) -> int:
    return next(i for i, names in enumerate(LABELS) if names[0] == name)


def test_stated_class_is_the_first_noun_and_the_words_after_it():
    assert stated_class("A lemon tastes very sour.", LABELS) == (
        _index("lemon"),
        " tastes very sour.",
    )
    assert stated_class("A wine glass is used for drinking wine.", LABELS) == (
        _index("wine glass"),
        " is used for drinking wine.",
    )
    # "orange" right before another name is a colour word, not the fruit
    assert stated_class("An orange cat chases mice.", LABELS) == (_index("cat"), " chases mice.")
    assert stated_class("It is the answer.", LABELS) is None


def test_restated_share_counts_the_query_words_among_the_statement_words():
    query = "Find the thing that is squeezed to make lemonade."
    assert restated_share(" is squeezed to make lemonade.", query) == 1.0
    other = restated_share(" is made of glass.", "Which cup is left of the plant?")
    assert other == pytest.approx(1 / 3) and other < RESTATED  # "of" alone
    # class names restate nothing: a statement that only repeats a name gets 0
    assert restated_share(" bread loaf .", "the object above the bread loaf") == 1.0
    assert restated_share(" bread loaf .", "the object above the bread loaf", LABELS) == 0.0
    assert restated_share(" Squeezed to make tea.", query) == pytest.approx(3 / 4)
    assert restated_share(" is.", query) == 0.0  # small words alone say nothing


@pytest.fixture(scope="module")
def default():
    model, _ = load_model("default")
    assert model.config.knowledge_start == " A"
    return model


def _ask(model, index: int, **options):
    sample = generate_sample(0, "zeroshot", index)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    answer = model.answer_batch([cache], [[Turn(sample.texts[0])]], **options)[0]
    return sample, cache, answer


def _prompt(model, index: int) -> tuple[PromptBatch, torch.Tensor]:
    """Zero-shot query `index`'s prompt, unpadded, read whole (no prefix states), and its
    token ids."""
    sample = generate_sample(0, "zeroshot", index)
    cache = model.encode_image(model.preprocessor.prepare_image(sample.image))
    ids = model.preprocessor.encode([Turn(sample.texts[0])], image=True).input_ids[None]
    embeds = model.backbone.embed(ids, cache.features)
    return PromptBatch(embeds, torch.ones(ids.shape, dtype=torch.long)), ids[0]


def test_continuation_logprobs_of_a_batch_equal_those_of_each_text_alone(default):
    prompts, _ = _prompt(default, 3)
    texts = [" A broccoli looks like a tiny tree.", " A carrot is orange."]
    together = default._continuation_logprobs(prompts, [0, 0], texts)
    alone = [default._continuation_logprobs(prompts, [0], [t])[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-3)
    tree = default._continuation_logprobs(prompts, [0], [" A broccoli looks like a tiny tree."])
    unlikely = default._continuation_logprobs(prompts, [0], [" A broccoli looks like a tiny cat."])
    assert tree[0] > unlikely[0]


def test_bundled_default_answers_zero_shot_queries_for_the_object_it_states(default):
    """On the first zero-shot queries, the check fires on several and each change follows the
    statement: it names a class the probe finds, restates the query, and the answer now grounds
    that class where the rejected one grounded another."""
    labels = default.config.probe_labels
    fired = 0
    for index in range(12):
        sample, cache, answer = _ask(default, index)
        check = answer.extras.get("knowledge_check")
        if check is None:
            continue
        fired += 1
        label, rest = stated_class(check["statement"], labels)
        assert restated_share(rest, sample.texts[0]) >= RESTATED
        assert label in named_classes(answer.text, labels)
        assert label not in named_classes(check["rejected"], labels)
        context = cache.context if default.config.presence_mask_head else None
        presence = class_presence(default.probe, cache.features, context)[0]
        assert presence[label] >= default.config.presence_threshold
    assert fired >= 3


def test_knowledge_check_names_the_zero_shot_target_more_often(default):
    """Off (`knowledge_start=""`) against on, the first 16 zero-shot queries: the answer grounds
    the target's category more often with the check."""

    def right(answer, sample) -> bool:
        wanted = {c for name in sample.target_names for c in mentioned_classes(name, LABELS)}
        return bool(wanted & set(named_classes(answer.text, LABELS)))

    on = off = 0
    for index in range(16):
        sample, _, with_check = _ask(default, index)
        _, _, without = _ask(default, index, knowledge_start="")
        assert "knowledge_check" not in without.extras
        on += right(with_check, sample)
        off += right(without, sample)
    assert on >= off + 4


def test_the_margin_gates_the_change(default, monkeypatch):
    """With an unreachable margin the check changes nothing."""
    _, _, answer = _ask(default, 3)
    assert "knowledge_check" in answer.extras
    monkeypatch.setattr(segmenter, "MARGIN", 1e9)
    _, _, answer = _ask(default, 3)
    assert "knowledge_check" not in answer.extras


def test_cli_turns_the_knowledge_check_off_and_checks_its_words(tmp_path, capsys):
    sample = generate_sample(0, "zeroshot", 11)  # "... built by builders ...": a house
    image = tmp_path / "scene.png"
    sample.image.save(image)
    argv = ["segment", str(image), sample.texts[0]]
    assert main([*argv, "--out", str(tmp_path / "on")]) == 0
    on = capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "off"), "--knowledge-start", ""]) == 0
    off = capsys.readouterr().out
    assert "house" in on.lower() and "house" not in off.lower()
    assert main([*argv, "--knowledge-start", "x" * 41]) == 2
    err = capsys.readouterr().err.strip()
    assert "--knowledge-start" in err and len(err.splitlines()) == 1


class _Decoder:
    """A stand-in for `answer_batch`'s decoder: each row's statement is " A" and its `words`;
    it goes on from the prefix given (which must begin that statement)."""

    def __init__(self, tokenizer, words: dict[int, str]) -> None:
        self.tokenizer, self.words, self.calls = tokenizer, words, []

    def __call__(self, rows, *, banned, prefix, max_new_tokens):
        self.calls.append((list(rows), [len(b) > 1 for b in banned], max_new_tokens))
        out = []
        for row, ids in zip(rows, prefix, strict=True):
            full = self.tokenizer.encode(" A" + self.words[row], add_special_tokens=False)
            assert full[: len(ids)] == list(ids)
            full = full[: len(ids) + max_new_tokens]
            out.append(Generation(torch.tensor(full), torch.zeros(len(full), 1)))
        return out


def test_statements_are_decoded_once_and_agree_with_answers_naming_their_class(default):
    tokenizer = default.preprocessor.tokenizer
    present = [[True] * len(LABELS), [i != _index("teapot") for i in range(len(LABELS))]]
    decoder = _Decoder(tokenizer, {0: " lemon is sour.", 1: " cup holds tea."})
    statements = Statements(decoder, tokenizer, LABELS, " A", 7, present)
    answers = ["The lemon <SEG>.", "The red mug <SEG>."]
    assert statements.disagreeing([0, 1], answers) == [1]  # row 0 states its own lemon
    assert statements.disagreeing([0, 1], ["The mug <SEG>.", "The cup <SEG>."]) == [0]
    assert len(decoder.calls) == 1 and decoder.calls[0][2] == 1  # the first tokens, once
    said = statements.texts([1], (True, False))
    assert said == {(1, True): "A cup holds tea.", (1, False): "A cup holds tea."}
    assert decoder.calls[1][1] == [True, False]  # bound: absent classes banned; free: not
    statements.texts([1], (False,))
    assert len(decoder.calls) == 2  # known already


def test_absence_check_says_the_image_lacks_the_object_the_llm_states(default, monkeypatch):
    """ "What here stores electricity?" of an image without a battery: the answer grounded a
    key; the free statement names the battery, which the probe does not find, so the answer
    now says that nothing fits, with no mask. With an unreachable margin it grounds again."""
    sample = generate_sample(1, "val", 15, kind="absent")
    assert not sample.target_masks and "electricity" in sample.texts[0]
    cache = default.encode_image(default.preprocessor.prepare_image(sample.image))
    answer = default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    check = answer.extras["knowledge_check"]
    assert check["absent"] == "battery" and "battery" in check["statement"].lower()
    assert answer.text.startswith(NOTHING_FOUND) and len(answer.scores) == 0
    context = cache.context if default.config.presence_mask_head else None
    presence = class_presence(default.probe, cache.features, context)[0]
    assert presence[_index("battery")] < default.config.presence_threshold
    monkeypatch.setattr(segmenter, "ABSENT_MARGIN", 1e9)
    answer = default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert len(answer.scores) == 1 and "knowledge_check" not in answer.extras


def test_absence_check_follows_a_stated_class_one_probe_part_reads(default, monkeypatch):
    """ "the thing that gives shade on a sunny day": the answer grounds a leaf, and the free
    statement "A tree gives shade on a sunny day." names a tree whose presence is under the
    threshold; one probe part reads it at `RESCUE_PRESENCE` or more, so the answer grounds
    the tree. With the floor out of reach the answer says that nothing fits."""
    sample = generate_sample(0, "test", 119)
    assert sample.texts[0] == "the thing that gives shade on a sunny day"
    cache = encode_image(default, sample.image)
    tree = _index("tree")
    assert class_presence(default.probe, cache.features, cache.context)[0, tree] < 0.1
    assert default.probe.strongest(cache.features, cache.context)[0, tree] >= 0.06
    answer = default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert answer.text == "The green tree <SEG>."
    check = answer.extras["knowledge_check"]
    assert check["statement"] == "A tree gives shade on a sunny day."
    assert "absent" not in check and "tree" not in check["rejected"]
    mask = answer.mask_logits[0].numpy() > 0
    target = sample.target_masks[0].astype(bool)
    assert (mask & target).sum() / (mask | target).sum() > 0.8
    monkeypatch.setattr(segmenter, "RESCUE_PRESENCE", 1.0)
    answer = default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    assert answer.text == NOTHING_FOUND and answer.extras["knowledge_check"]["absent"] == "tree"


def test_asks_by_knowledge_leaves_out_requests_by_name_and_relations():
    assert asks_by_knowledge("What here is squeezed to make lemonade?", LABELS)
    assert asks_by_knowledge("Find the thing that looks like a tiny tree.", LABELS)  # in passing
    assert not asks_by_knowledge("Segment the striped mug.", LABELS)
    assert not asks_by_knowledge("the cup left of the potted plant", LABELS)
    assert not asks_by_knowledge("the biggest fruit", LABELS)
    assert not asks_by_knowledge("Where is the book? What is closest to it?", LABELS)


@pytest.mark.parametrize(
    ("query", "fact"),
    [
        (
            "Which object in the picture folds up when it is not in use?",
            "folds up when it is not in use",
        ),
        ("What here is rich in vitamin C?", "is rich in vitamin C"),
        ("the thing that has holes in it", "has holes in it"),
        ("Find the thing that can fly and tell me why you chose it.", "can fly"),
        (
            "Segment the object that melts when it gets warm, and give a reason.",
            "melts when it gets warm",
        ),
        ("What would you use to cut paper?", "is used to cut paper"),
        ("Can you show me what hangs on a keychain?", "hangs on a keychain"),
        ("What in this picture sits on a saucer? Explain your answer.", "sits on a saucer"),
        (
            "I am playing a guessing game. The clue is that the answer grows underground. "
            "Which object in the image fits the clue?",
            "grows underground",  # the earliest clause, not "fits the clue"
        ),
        ("My friend told me that one of the things in this photo can fly.", "can fly"),
        ("Look carefully. Only one of these things purrs. Please segment it.", "purrs"),
        ("everything that is made from milk", "is made from milk"),
        ("Segment all the things that are baked into pies.", "is baked into pies"),
        ("Which objects here fold up when they are not in use?", "folds up when it is not in use"),
        ("Find every object that needs electricity.", "needs electricity"),
        ("Which one is it?", None),  # no fact in it
        ("I feel a cold coming on. What here should I pick?", None),  # about the asker
        ("It is raining. Which object in this picture would help me?", None),
        ("Segment the striped mug.", None),
        ("", None),
    ],
)
def test_asked_fact_is_the_clause_the_query_asks_about(query, fact):
    assert asked_fact(query) == fact


@pytest.mark.parametrize(
    ("many", "one"),
    [
        ("are rich in vitamin C", "is rich in vitamin C"),
        ("grow on trees", "grows on trees"),
        ("usually come in pairs", "usually comes in pairs"),
        ("fold up when they are not in use", "folds up when it is not in use"),
        ("have holes in them", "has holes in it"),
        ("can fly", "can fly"),
        ("go into a toaster", "goes into a toaster"),
        ("carry people from place to place", "carries people from place to place"),
        ("purr when they are happy", "purrs when it is happy"),
    ],
)
def test_singular_fact_puts_the_verb_and_pronouns_in_the_singular(many, one):
    assert singular_fact(many) == one


def test_fact_subject_writes_the_article_the_text_qa_writes():
    assert fact_subject(" A", ["lemon", "lemons"]) == " A lemon"
    assert fact_subject(" A", ["umbrella", "umbrellas"]) == " An umbrella"
    assert fact_subject(" A", ["scissors", "scissors"]) == " A pair of scissors"
    assert fact_subject(" A", ["glasses", "glasses"]) == " A pair of glasses"
    assert fact_subject(" A", ["fish", "fish"]) == " A fish"  # same plural, not a plural noun
    assert fact_subject(" The", ["umbrella", "umbrellas"]) == " The umbrella"


@pytest.mark.parametrize(
    ("index", "wanted"),
    [
        (105, "cat"),  # "... chases mice. Please segment it.": a red fish without the ranking
        (101, "bread loaf"),  # "... goes into a toaster.": a red candle without it
    ],
)
def test_ranking_follows_the_likeliest_subject(default, monkeypatch, index, wanted):
    """Zero-shot queries whose answer grounds another object: the LLM finds the target's class
    the likeliest subject of its statement by several nats, and with the ranking part the
    answer grounds it (its mask, region-snapped, is the target's); without it the answer stays
    wrong. The knowledge adapter is off: with it, the check's first part finds these two. The
    classes are scored as bare subjects after the query (`asked_fact` finds no fact): with
    the statement of the fact, the ranking finds these two too."""
    assert default.config.knowledge_ranking
    monkeypatch.setattr(default.config, "knowledge_adapter", False)
    monkeypatch.setattr(segmenter, "asked_fact", lambda query: None)
    sample = generate_sample(0, "zeroshot", index)
    cache = encode_image(default, sample.image)  # with its pixels, for region snap

    def ask():
        return default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]

    answer = ask()
    ranking = answer.extras["knowledge_ranking"]
    assert ranking["margin"] >= RANK_MARGIN
    assert ranking["subject"] == f"A {wanted}"
    assert _index(wanted) in named_classes(answer.text, LABELS)
    assert _index(wanted) not in named_classes(ranking["rejected"], LABELS)
    mask = answer.mask_logits[0].numpy() > 0
    target = sample.target_masks[0].astype(bool)
    assert (mask & target).sum() / (mask | target).sum() > 0.9
    monkeypatch.setattr(default.config, "knowledge_ranking", False)
    without = ask()
    assert "knowledge_ranking" not in without.extras
    assert _index(wanted) not in named_classes(without.text, LABELS)
    # an unreachable margin changes nothing either
    monkeypatch.setattr(default.config, "knowledge_ranking", True)
    monkeypatch.setattr(segmenter, "RANK_MARGIN", 1e9)
    assert ask().text == without.text


def test_ranking_scores_the_statement_of_the_asked_fact(default, monkeypatch):
    """ "Can you show me what is cut into slices to share?" (a fresh zero-shot query, seed 1):
    after the text question "What is cut into slices to share?", the statement "A pizza slice
    is cut into slices to share." is likelier than the answer's "A cherry ..." by more than
    `FACT_MARGIN` nats, and the answer grounds the pizza slice (its mask is the target's).
    With an unreachable margin the answer is the LLM's own (a star); with the classes scored
    as bare subjects after the query, a cherry."""
    sample = generate_sample(1, "zeroshot", 105)
    assert asked_fact(sample.texts[0]) == "is cut into slices to share"
    cache = encode_image(default, sample.image)

    def ask():
        return default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]

    answer = ask()
    ranking = answer.extras["knowledge_ranking"]
    assert ranking["margin"] >= FACT_MARGIN
    assert ranking["subject"] == "A pizza slice"
    assert _index("pizza slice") in named_classes(answer.text, LABELS)
    mask = answer.mask_logits[0].numpy() > 0
    target = sample.target_masks[0].astype(bool)
    assert (mask & target).sum() / (mask | target).sum() > 0.9
    monkeypatch.setattr(segmenter, "FACT_MARGIN", 1e9)
    without = ask()
    assert "knowledge_ranking" not in without.extras
    assert named_classes(without.text, LABELS) == [_index("star")]
    monkeypatch.setattr(segmenter, "FACT_MARGIN", FACT_MARGIN)
    monkeypatch.setattr(segmenter, "asked_fact", lambda query: None)
    bare = ask()
    assert bare.extras["knowledge_ranking"]["subject"] == "A cherry"
    assert named_classes(bare.text, LABELS) == [_index("cherry")]


def test_the_adapter_reads_the_image_once_and_scores_as_if_it_read_it_whole(default, monkeypatch):
    """The knowledge adapter's states of the image's part of the prompt are kept with the
    image beside the LLM's own, and the statements of an asked fact scored after them equal
    those scored after the text question read whole."""
    assert default._reads_adapter()
    sample = generate_sample(1, "zeroshot", 105)  # "... cut into slices to share?"
    cache = encode_image(default, sample.image)
    answer = default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]
    kept = [key for key in cache.prefix_states if key and key[0] == segmenter.KNOWING_KEY]
    assert len(kept) == 1 and kept[0][1:] in cache.prefix_states  # beside the LLM's own
    own = cache.prefix_states[kept[0][1:]]
    adapted = cache.prefix_states[kept[0]]
    assert not torch.equal(own[0][0], adapted[0][0])  # the adapter's states, not the LLM's
    classes = [_index(name) for name in ("pizza slice", "cherry", "star")]
    fact = "is cut into slices to share"
    scored = default._subject_scores(cache, None, 0, " A", classes, fact)
    monkeypatch.setattr(default, "reuse_states", False)
    whole = default._subject_scores(cache, None, 0, " A", classes, fact)
    assert scored == pytest.approx(whole, abs=1e-3)
    assert max(range(3), key=scored.__getitem__) == 0  # the pizza slice
    assert "knowledge_ranking" in answer.extras


def test_cli_turns_the_ranking_off(tmp_path):
    sample = generate_sample(0, "zeroshot", 105)  # "... chases mice.": the cat
    image = tmp_path / "scene.png"
    sample.image.save(image)
    texts = {}
    for flag in ("--knowledge-ranking", "--no-knowledge-ranking"):
        out = tmp_path / flag
        argv = ["segment", str(image), sample.texts[0], "--out", str(out), flag]
        assert main([*argv, "--no-knowledge-adapter"]) == 0
        texts[flag] = json.loads((out / "result.json").read_text())["text"]
    assert "cat <SEG>" in texts["--knowledge-ranking"]
    assert "cat" not in texts["--no-knowledge-ranking"]


def test_continuation_logprobs_after_one_prompt_equal_those_of_a_full_pass(default):
    """The scorer that reads the prompt once (from its image part's kept states, or whole)
    gives each continuation the log-probability of a full teacher-forced pass over prompt and
    text."""
    prompts, ids = _prompt(default, 3)
    embeds = prompts.embeds
    texts = [" A broccoli", " A cat", " A watermelon slice", " A lemon tastes very sour."]
    tokenizer = default.preprocessor.tokenizer
    tokens = [torch.tensor(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    full = []
    for text in tokens:
        sequence = torch.cat([embeds[0], default.backbone.embed(text[None], None)[0]])
        with torch.no_grad():
            logits = default.backbone(sequence[None], None).logits[0].log_softmax(-1)
        start = embeds.shape[1] - 1
        full.append(float(logits[start : start + len(text)].gather(1, text[:, None]).sum()))
    once = default.backbone.continuation_logprobs(embeds[0], tokens)
    assert once == pytest.approx(full, abs=1e-3)
    assert once[0] > once[1]  # "looks like a tiny tree": the broccoli
    shared = default._image_prefix([ids])
    assert shared > 64  # "USER: <image> x 64"
    past = default.backbone.prefix_states(embeds[:, :shared])
    kept = PromptBatch(embeds, prompts.attention, past, shared)
    assert default._continuation_logprobs(kept, [0] * len(texts), texts) == pytest.approx(
        full, abs=1e-3
    )
    with pytest.raises(ValueError, match="at least one token"):
        default.backbone.continuation_logprobs(embeds[0], [torch.tensor([], dtype=torch.long)])


@pytest.mark.parametrize(
    ("index", "wanted"),
    [
        (83, "watermelon slice"),  # "... mostly water ...": the presence check refused it
        (197, "phone"),  # "the thing that has to be charged every day": the LLM refused it
        (233, "umbrella"),  # "... folds up when it is not in use.": found by the fact's statement
    ],
)
def test_refusals_follow_the_likeliest_subject_of_the_image(default, monkeypatch, index, wanted):
    """Fresh zero-shot queries (seed 1) whose answer says that nothing is there: the target's
    class is the likeliest subject of all, and the answer grounds it (its mask is the
    target's); with a margin of 0 the answer refuses."""
    sample = generate_sample(1, "zeroshot", index)
    cache = encode_image(default, sample.image)

    def ask():
        return default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]

    answer = ask()
    note = answer.extras["knowledge_refusal"]
    assert note["subject"] == f"A {wanted}"
    assert 0.0 <= note["behind"] < REFUSAL_MARGIN
    assert not named_classes(note["rejected"], LABELS)
    assert _index(wanted) in named_classes(answer.text, LABELS)
    mask = answer.mask_logits[0].numpy() > 0
    target = sample.target_masks[0].astype(bool)
    assert (mask & target).sum() / (mask | target).sum() > 0.8
    monkeypatch.setattr(segmenter, "REFUSAL_MARGIN", 0.0)
    refused = ask()
    assert not len(refused.scores) and "knowledge_refusal" not in refused.extras


def test_a_refusal_of_what_the_image_lacks_stays(default, monkeypatch):
    """ "What here is used to cut paper?" of an image without scissors (a development-stream
    absent query, seed 21): the scissors are the likeliest subject, the cheese wedge the
    likeliest of the image, 1.97 nats behind, so the refusal stays; a margin of 2.5 would
    take it back and ground the cheese."""
    sample = generate_sample(21, "test", 231)
    assert not sample.target_masks
    cache = encode_image(default, sample.image)

    def ask():
        return default.answer_batch([cache], [[Turn(sample.texts[0])]])[0]

    answer = ask()
    assert not len(answer.scores) and "knowledge_refusal" not in answer.extras
    monkeypatch.setattr(segmenter, "REFUSAL_MARGIN", 2.5)
    taken = ask()
    assert taken.extras["knowledge_refusal"]["subject"] == "A cheese wedge"
    assert _index("cheese wedge") in named_classes(taken.text, LABELS)
