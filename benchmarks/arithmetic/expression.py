"""Safe parsing of modular arithmetic expressions in ``a`` and ``b`` (no ``eval``).

Grammar (juxtaposition multiplies, so "a+ab" == "a+a*b"; "**" is accepted for "^"):
    expr   := term (("+" | "-") term)*
    term   := unary ("*"? unary)*
    unary  := "-" unary | power
    power  := atom ("^" INT)?
    atom   := "a" | "b" | INT | "(" expr ")"
Every intermediate value is reduced mod p, which is exact for +, -, * and integer powers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|[ab+\-*^()]))")
_HELP = "use a, b, integers, + - * ^ (or **) and parentheses, e.g. 'a^2+ab'"

Fn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


class ExpressionError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if not m:
            raise ExpressionError(
                f"bad expression {text!r}: unexpected {stripped[pos:].lstrip()[0]!r} at "
                f"position {pos}; {_HELP}"
            )
        tokens.append(m.group(1) or ("^" if m.group(2) == "**" else m.group(2)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i = text, _tokenize(text), 0

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, what: str) -> ExpressionError:
        found = self._peek()
        where = f"{found!r}" if found is not None else "the end"
        return ExpressionError(
            f"bad expression {self.text!r}: expected {what}, found {where}; {_HELP}"
        )

    def _take(self) -> str:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Fn:
        if not self.tokens:
            raise ExpressionError(f"bad expression {self.text!r}: it is empty; {_HELP}")
        fn = self._expr()
        if self._peek() is not None:
            raise self._fail("an operator")
        return fn

    def _expr(self) -> Fn:
        fn = self._term()
        while self._peek() in ("+", "-"):
            op, rhs, lhs = self._take(), None, fn
            rhs = self._term()
            if op == "+":
                fn = lambda a, b, p, lhs=lhs, rhs=rhs: (lhs(a, b, p) + rhs(a, b, p)) % p  # noqa: E731
            else:
                fn = lambda a, b, p, lhs=lhs, rhs=rhs: (lhs(a, b, p) - rhs(a, b, p)) % p  # noqa: E731
        return fn

    def _term(self) -> Fn:
        fn = self._unary()
        while (
            self._peek() == "*"
            or self._peek() in ("a", "b", "(")
            or (self._peek() is not None and self._peek().isdigit())
        ):
            if self._peek() == "*":
                self._take()
            lhs, rhs = fn, self._unary()
            fn = lambda a, b, p, lhs=lhs, rhs=rhs: (lhs(a, b, p) * rhs(a, b, p)) % p  # noqa: E731
        return fn

    def _power(self) -> Fn:
        base = self._atom()
        if self._peek() == "^":
            self._take()
            tok = self._peek()
            if tok is None or not tok.isdigit():
                raise self._fail("a non-negative integer exponent")
            exp = int(self._take())

            def fn(a, b, p, base=base, exp=exp):
                x, out = base(a, b, p), np.ones_like(a) % p
                for _ in range(exp):  # exponents are small; stay exact mod p
                    out = (out * x) % p
                return out

            return fn
        return base

    def _unary(self) -> Fn:
        if self._peek() == "-":
            self._take()
            inner = self._unary()
            return lambda a, b, p: (-inner(a, b, p)) % p
        return self._power()

    def _atom(self) -> Fn:
        tok = self._peek()
        if tok == "a":
            self._take()
            return lambda a, b, p: a % p
        if tok == "b":
            self._take()
            return lambda a, b, p: b % p
        if tok is not None and tok.isdigit():
            value = int(self._take())
            return lambda a, b, p: np.full_like(a, value % p)
        if tok == "(":
            self._take()
            fn = self._expr()
            if self._peek() != ")":
                raise self._fail("')'")
            self._take()
            return fn
        raise self._fail("a, b, a number or '('")


@dataclass(frozen=True)
class Expression:
    """A parsed expression; ``expr(a, b)`` gives (expression mod p) for int arrays a, b."""

    text: str
    modulus: int

    def __post_init__(self) -> None:
        if self.modulus < 2:
            raise ExpressionError(f"modulus must be at least 2, got {self.modulus}")
        object.__setattr__(self, "_fn", _Parser(self.text).parse())

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        return self._fn(a, b, self.modulus).astype(np.int64)
