"""Passages keep their heading path; code fences hide '#'; long sections are cut."""

from hypothesis import example, given
from hypothesis import strategies as st

from hub.kb.split import _ATX, _SETEXT, EOL, MAX_CHARS, split_markdown, split_plain


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
@example("0\x85=")  # a Unicode line break is not a markdown one: no setext heading there
@example("# A\n\n# B\ntext")
def test_any_text_splits_without_losing_words(text):
    """No word of the text is lost. The one exception is by design: a heading with nothing
    under it (test_title_h1_not_repeated_and_empty_sections_dropped), so words on lines that
    are or may be headings count only where a passage came out under them."""
    lines = EOL.split(text)
    heading = {i for i, line in enumerate(lines)
               if _ATX.match(line) or (i + 1 < len(lines) and _SETEXT.match(lines[i + 1]))}
    for fn in (split_markdown, split_plain):
        ps = fn("T", text)
        assert ps and all(len(p.text) <= MAX_CHARS for p in ps)
        source = text.split() if fn is split_plain else [w for i, line in enumerate(lines) if i not in heading
                                                          for w in line.split()]
        words = {w for w in source if not set(w) <= set("#=-`~")}
        out = " ".join(p.text + " " + p.heading_path for p in ps)
        assert all(w.strip("#*_`") in out for w in words)
