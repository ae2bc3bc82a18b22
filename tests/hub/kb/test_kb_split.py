"""Passages keep their heading path; code fences hide '#'; long sections are cut."""

from hypothesis import given
from hypothesis import strategies as st

from hub.kb.split import MAX_CHARS, split_markdown, split_plain


def test_heading_paths_follow_levels_and_setext():
    md = ("Intro line\n\nSetext top\n==========\n\ntext a\n\nSub\n---\n\ntext b\n\n"
          "# Next\n\n```sh\n# not a heading\n```\n\n#### Deep\n\ntext c\n\n## Side\ntext d\n")
    got = [(p.heading_path, p.text.splitlines()[0]) for p in split_markdown("Doc", md)]
    assert got == [
        ("Doc", "Intro line"),
        ("Doc > Setext top", "text a"),
        ("Doc > Setext top > Sub", "text b"),
        ("Doc > Next", "```sh"),
        ("Doc > Next > Deep", "text c"),
        ("Doc > Next > Side", "text d"),
    ]


def test_title_h1_not_repeated_and_empty_sections_dropped():
    ps = split_markdown("Router", "# Router\n\n## Empty\n\n## Ports\neth0 is WAN\n")
    assert [p.heading_path for p in ps] == ["Router > Ports"]


def test_long_sections_are_cut_at_paragraphs_within_the_limit():
    paras = [f"paragraph {i} " + "word " * 60 for i in range(40)]
    ps = split_markdown("T", "## Big\n\n" + "\n\n".join(paras))
    assert len(ps) > 5
    assert all(len(p.text) <= MAX_CHARS for p in ps)
    assert all(p.heading_path == "T > Big" for p in ps)
    joined = " ".join(p.text for p in ps)
    assert all(f"paragraph {i} " in joined for i in range(40))


@given(st.text(max_size=4000))
def test_any_text_splits_without_losing_words(text):
    for fn in (split_markdown, split_plain):
        ps = fn("T", text)
        assert ps and all(len(p.text) <= MAX_CHARS for p in ps)
        words = {w for w in text.split() if not set(w) <= set("#=-`~")}
        out = " ".join(p.text + " " + p.heading_path for p in ps)
        assert all(w.strip("#*_`") in out for w in words)
