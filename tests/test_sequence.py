"""The token layout: segments to ids and back, and malformed ids are reported, not guessed."""
import pytest

from sairlib.sequence import Layout, Segment
from sairlib.tokenizers import build_tokenizer
from sairlib.world.grammar import vocabulary

TOK = build_tokenizer(vocabulary(), 32)
L = Layout.from_tokenizer(TOK, 4)


def test_round_trip():
    segs = [Segment("G", codes=[1, 2, 3, 4]), Segment("E", text="step done . decision next"),
            Segment("R", text="fix redraw row 1 column 1"), Segment("S", text="remove the circle"),
            Segment("D", text="nothing")]
    p = L.parse(L.segments(segs))
    assert p.ok and p.ended and p.segments == segs


@pytest.mark.parametrize("cut, why", [(3, "needs 4 image codes"), (5, "no <eoi>"), (8, "not closed")])
def test_truncated_ids_are_reported(cut, why):
    ids = L.segments([Segment("G", codes=[1, 2, 3, 4]), Segment("E", text="step done . decision next")])
    ids = ids[:cut] if cut != 5 else ids[:5] + [L.open_tag["E"]]
    p = L.parse(ids)
    assert not p.ok and why in p.error


def test_tokens_outside_segments_and_tags_inside_text_are_errors():
    word = TOK.convert_tokens_to_ids("circle")
    assert "outside any segment" in L.parse([word]).error
    bad = [L.open_tag["E"], L.boi, L.close_tag["E"]]
    assert "holds a tag" in L.parse(bad).error
    code = L.code_lo + 3  # an image code inside text
    assert "holds a tag or image code" in L.parse([L.open_tag["E"], word, code, L.close_tag["E"]]).error
    # a word, or a value just outside the code range, among an image's codes
    for intruder in (word, L.code_lo - 1, L.code_hi):
        ids = [L.boi, L.code_lo, intruder, L.code_lo + 1, L.code_lo + 2, L.eoi, L.eos]
        assert "needs 4 image codes" in L.parse(ids).error, intruder
    edge = L.parse([L.boi, L.code_lo, L.code_hi - 1, L.code_lo, L.code_lo, L.eoi, L.eos])
    assert edge.ok and list(edge.segments[0].codes) == [0, L.code_hi - 1 - L.code_lo, 0, 0]


def test_bad_segments_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        Segment("X", text="a")
    with pytest.raises(ValueError, match="codes"):
        Segment("G")
    with pytest.raises(ValueError, match="codes"):
        L.image([1, 2])
    with pytest.raises(ValueError, match="codes"):
        L.image([1, 2, 3, 99])
    with pytest.raises(ValueError, match="unknown|teal"):
        L.prompt("draw a teal circle .")
