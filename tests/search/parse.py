"""A hand-built dependency parse with the attributes the noun-chunk rule reads from spaCy
(`i`, `pos_`, `dep_`, `lefts`, `rights`, `left_edge`, `right_edge`, `doc[s:e].text`), so its
tests need neither spaCy nor `en_core_web_sm`. Not a parser: every tree is written by hand."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class Token:
    doc: Doc
    i: int
    text: str
    whitespace_: str
    head: int  # its own index for the root
    dep_: str
    pos_: str

    @property
    def children(self) -> list[Token]:
        return [t for t in self.doc if t.head == self.i and t.i != self.i]

    @property
    def lefts(self):
        return (t for t in self.children if t.i < self.i)

    @property
    def rights(self):
        return (t for t in self.children if t.i > self.i)

    @property
    def left_edge(self) -> Token:
        return min((self, *(c.left_edge for c in self.children)), key=lambda t: t.i)

    @property
    def right_edge(self) -> Token:
        return max((self, *(c.right_edge for c in self.children)), key=lambda t: t.i)


class Doc:
    """`rows`: (text, head, dep, pos) per token, or (text, head, dep, pos, whitespace) where
    the token is not followed by one space ("" before punctuation and at the end)."""

    def __init__(self, rows):
        self.tokens = []
        for i, row in enumerate(rows):
            text, head, dep, pos, *space = row
            space = space[0] if space else ("" if i == len(rows) - 1 else " ")
            self.tokens.append(Token(self, i, text, space, head, dep, pos))

    def __iter__(self):
        return iter(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key: slice) -> Span:
        return Span(self.tokens[key])

    @property
    def text(self) -> str:
        return "".join(t.text + t.whitespace_ for t in self.tokens)


@dataclass
class Span:
    tokens: list[Token]

    @property
    def text(self) -> str:
        """As spaCy's: the tokens with the spaces between them, not the last one's."""
        *body, last = self.tokens
        return "".join(t.text + t.whitespace_ for t in body) + last.text
