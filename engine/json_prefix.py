"""A byte-at-a-time recognizer of JSON text whose top-level value is an object (JSON mode).

JSONPrefix accepts exactly the byte strings that some continuation makes into one JSON object
(RFC 8259, optional whitespace around it; strings in valid UTF-8), so a sampler that only admits
tokens it accepts can always finish the object. `complete` is true once the object is closed:
only whitespace may follow then.
"""

from __future__ import annotations

_WS = frozenset(b" \t\n\r")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrtu')
_LITERALS = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}

# Modes: what the next byte may be.
_START = 0          # before the top-level object: whitespace or "{"
_OBJ_FIRST = 1      # after "{": whitespace, a key or "}"
_OBJ_KEY = 2        # after "," in an object: whitespace or a key
_COLON = 3          # after a key: whitespace or ":"
_VALUE = 4          # a value must start (after ":" or "," in an array)
_ARR_FIRST = 5      # after "[": whitespace, a value or "]"
_AFTER = 6          # after a value: whitespace, "," or the closing bracket; at the top: whitespace only
_STRING = 7         # inside a string
_ESCAPE = 8         # after a backslash in a string
_UNICODE = 9        # inside \uXXXX (aux: hex digits left)
_UTF8 = 10          # inside a multi-byte UTF-8 character (aux: see _utf8_lead)
_LITERAL = 11       # inside true/false/null (aux: the bytes still due)
_NUMBER = 12        # inside a number (aux: its sub-state, see _number)

# Number sub-states.
_N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(8)
_N_ENDABLE = frozenset((_N_ZERO, _N_INT, _N_FRAC, _N_EXP))


class JSONPrefix:
    """The state after the bytes fed so far. `feed` returns False (leaving the state unusable)
    at the first byte no JSON object text can have there; `copy` before trying bytes that may be
    refused."""

    __slots__ = ("stack", "mode", "aux", "key")

    def __init__(self) -> None:
        self.stack: list[int] = []  # open containers, ord("{") or ord("[")
        self.mode = _START
        self.aux: object = None
        self.key = False  # the string being read is an object key

    def copy(self) -> "JSONPrefix":
        other = JSONPrefix.__new__(JSONPrefix)
        other.stack, other.mode, other.aux, other.key = list(self.stack), self.mode, self.aux, self.key
        return other

    @property
    def complete(self) -> bool:
        """The top-level object is closed (only whitespace may follow)."""
        return self.mode == _AFTER and not self.stack

    def feed(self, data: bytes) -> bool:
        """Advance over `data`; False at the first byte that no JSON object text can continue with."""
        for byte in data:
            if not self._step(byte):
                return False
        return True

    def _step(self, b: int) -> bool:
        mode = self.mode
        if mode == _STRING:
            if b == 0x22:  # closing quote
                self.mode = _COLON if self.key else _AFTER
                return True
            if b == 0x5C:
                self.mode = _ESCAPE
                return True
            if b < 0x20:
                return False  # control characters must be escaped
            if b < 0x80:
                return True
            return self._utf8_lead(b)
        if mode == _UTF8:
            left, low, high = self.aux
            if not low <= b <= high:
                return False
            self.aux = (left - 1, 0x80, 0xBF)
            if left == 1:
                self.mode = _STRING
            return True
        if mode == _ESCAPE:
            if b not in _ESCAPES:
                return False
            self.mode, self.aux = (_UNICODE, 4) if b == ord("u") else (_STRING, None)
            return True
        if mode == _UNICODE:
            if b not in _HEX:
                return False
            self.aux -= 1
            if self.aux == 0:
                self.mode = _STRING
            return True
        if mode == _LITERAL:
            due = self.aux
            if b != due[0]:
                return False
            self.aux = due[1:]
            if not self.aux:
                self.mode = _AFTER
            return True
        if mode == _NUMBER:
            if self._number(b):
                return True
            if self.aux not in _N_ENDABLE:
                return False
            self.mode = _AFTER  # the number ended: this byte follows it
            return self._step(b)
        if b in _WS:
            return True  # whitespace may sit between any two tokens, and around the object
        if mode == _START:
            return self._open(b) if b == ord("{") else False
        if mode in (_OBJ_FIRST, _OBJ_KEY):
            if b == 0x22:
                self.mode, self.key = _STRING, True
                return True
            if b == ord("}") and mode == _OBJ_FIRST:
                return self._close(b)
            return False
        if mode == _COLON:
            if b == ord(":"):
                self.mode = _VALUE
                return True
            return False
        if mode == _ARR_FIRST and b == ord("]"):
            return self._close(b)
        if mode in (_VALUE, _ARR_FIRST):
            return self._value(b)
        # _AFTER
        if not self.stack:
            return False  # only whitespace after the top-level object
        top = self.stack[-1]
        if b == ord(","):
            self.mode = _OBJ_KEY if top == ord("{") else _VALUE
            return True
        if (b == ord("}") and top == ord("{")) or (b == ord("]") and top == ord("[")):
            return self._close(b)
        return False

    def _open(self, b: int) -> bool:
        self.stack.append(b)
        self.mode = _OBJ_FIRST if b == ord("{") else _ARR_FIRST
        return True

    def _close(self, b: int) -> bool:
        self.stack.pop()
        self.mode = _AFTER
        return True

    def _value(self, b: int) -> bool:
        if b in (ord("{"), ord("[")):
            return self._open(b)
        if b == 0x22:
            self.mode, self.key = _STRING, False
            return True
        if b in _LITERALS:
            self.mode, self.aux = _LITERAL, _LITERALS[b]
            return True
        if b == ord("-"):
            self.mode, self.aux = _NUMBER, _N_MINUS
            return True
        if b in _DIGITS:
            self.mode, self.aux = _NUMBER, (_N_ZERO if b == ord("0") else _N_INT)
            return True
        return False

    def _number(self, b: int) -> bool:
        """Advance the number's sub-state over `b`; False when `b` is not part of the number."""
        s = self.aux
        digit = b in _DIGITS
        if s == _N_MINUS:
            nxt = (_N_ZERO if b == ord("0") else _N_INT) if digit else None
        elif s in (_N_ZERO, _N_INT):
            if digit:
                nxt = _N_INT if s == _N_INT else None  # no leading zeros
            elif b == ord("."):
                nxt = _N_DOT
            elif b in (ord("e"), ord("E")):
                nxt = _N_E
            else:
                nxt = None
        elif s in (_N_DOT, _N_FRAC):
            if digit:
                nxt = _N_FRAC
            elif s == _N_FRAC and b in (ord("e"), ord("E")):
                nxt = _N_E
            else:
                nxt = None
        elif s == _N_E:
            nxt = _N_ESIGN if b in (ord("+"), ord("-")) else (_N_EXP if digit else None)
        else:  # _N_ESIGN, _N_EXP
            nxt = _N_EXP if digit else None
        if nxt is None:
            if s == _N_ZERO and digit:
                self.aux = -1  # "01": not endable, so the caller refuses
            return False
        self.aux = nxt
        return True

    def _utf8_lead(self, b: int) -> bool:
        """Start a multi-byte character: aux = (continuation bytes left, the next one's range),
        the ranges of RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF)."""
        if 0xC2 <= b <= 0xDF:
            aux = (1, 0x80, 0xBF)
        elif 0xE0 <= b <= 0xEF:
            aux = (2, 0xA0 if b == 0xE0 else 0x80, 0x9F if b == 0xED else 0xBF)
        elif 0xF0 <= b <= 0xF4:
            aux = (3, 0x90 if b == 0xF0 else 0x80, 0x8F if b == 0xF4 else 0xBF)
        else:
            return False
        self.mode, self.aux = _UTF8, aux
        return True
