import pytest
import torch

from pixelreason.errors import InputError
from pixelreason.models.segmenter import PixelReasonModel
from pixelreason.processing import IGNORE_INDEX, validate_query
from pixelreason.prompting import MAX_QUERY_CHARS, Turn, conversation_pieces
from pixelreason.tokens import SEG_TOKEN


def test_image_placeholder_expands_to_the_feature_count(tiny_model: PixelReasonModel) -> None:
    pre = tiny_model.preprocessor
    encoded = pre.encode([Turn("Where?", "Here <SEG>.")])
    assert int((encoded.input_ids == pre.image_token_id).sum()) == pre.num_image_tokens == 16
    features = tiny_model.backbone.encode_image(torch.zeros(1, 3, 32, 32))
    assert features.shape[1] == pre.num_image_tokens


def test_labels_cover_exactly_the_answers(tiny_model: PixelReasonModel) -> None:
    pre = tiny_model.preprocessor
    turns = [Turn("First?", "One <SEG>."), Turn("Second?", "Two.")]
    encoded = pre.encode(turns)
    supervised = encoded.input_ids[encoded.labels != IGNORE_INDEX]
    text = pre.tokenizer.decode(supervised)
    assert text == f" One {SEG_TOKEN}.</s> Two.</s>"
    seg_id = pre.tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    assert int((encoded.labels == seg_id).sum()) == 1


def test_prompt_ends_at_assistant_for_generation() -> None:
    pieces = conversation_pieces([Turn("a", "b"), Turn("c")], image=True)
    assert pieces[-1].text == "USER: c ASSISTANT:" and not pieces[-1].supervised
    assert pieces[0].text.startswith("USER: <image>\n")
    with pytest.raises(ValueError, match="no answer"):
        conversation_pieces([Turn("a"), Turn("c")], image=True)


def test_a_second_image_placeholder_is_refused(tiny_model: PixelReasonModel) -> None:
    with pytest.raises(InputError, match="image placeholder"):
        tiny_model.preprocessor.encode([Turn("look <image> here")])


def test_query_validation() -> None:
    assert validate_query("  hi  ") == "hi"
    with pytest.raises(InputError, match="empty"):
        validate_query("   ")
    with pytest.raises(InputError, match="too long"):
        validate_query("x" * (MAX_QUERY_CHARS + 1))
