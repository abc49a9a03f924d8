from reasoning.backends.base import Generation
from reasoning.segmenter import Segmenter


def gen(text, finish="stop", stop="\n\n"):
    return Generation(text, [1] * 3, [-0.1] * 3, [0.5] * 3, finish, stop if finish == "stop" else None)


def test_delimiter_ends_a_step_and_stays_in_the_piece():
    c = Segmenter().cut(gen("  3 * 4 = 12.\n\n"))
    assert (c.piece, c.text, c.end, c.ends_solution) == ("  3 * 4 = 12.\n\n", "3 * 4 = 12.", "delimiter", False)


def test_token_cap_adds_the_delimiter():
    c = Segmenter().cut(gen("a long step", finish="length"))
    assert (c.piece, c.end) == ("a long step\n\n", "token_cap")


def test_think_close_ends_a_step_and_thinking():
    seg = Segmenter()
    assert seg.in_thinking("<think>\nlet me see")
    assert seg.stops(True) == ["\n\n", "</think>"]
    c = seg.cut(gen("so 12.</think>", stop="</think>"))
    assert (c.piece, c.text, c.end) == ("so 12.</think>\n\n", "so 12.</think>", "think_end")
    assert not seg.in_thinking("<think>\nlet me see\n\n" + c.piece)


def test_end_stop_and_eos_end_the_solution():
    seg = Segmenter(end_stops=("\nQuestion:",))
    c = seg.cut(gen("The answer is 4.\nQuestion:", stop="\nQuestion:"))
    assert (c.piece, c.text, c.ends_solution) == ("The answer is 4.", "The answer is 4.", True)
    assert seg.cut(gen("done", finish="eos")).ends_solution


def test_final_answer_only_outside_thinking():
    assert Segmenter.is_final("so \\boxed{3}", thinking=False)
    assert not Segmenter.is_final("so \\boxed{3}", thinking=True)
    assert not Segmenter.is_final("so 3", thinking=False)
