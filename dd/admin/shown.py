"""Text from the wire as dd_log and the console show it: nothing can pass for something else.

A consumer's user, host and component are plain ASCII words, so anything else in them (a
look-alike letter, an invisible or spacing character, the @ and / that join them) is shown
escaped; in free text (paths, messages), what would not show as itself (invisible, bidi,
odd spaces, the backslash) is.
"""
import string

#: What a consumer's user, host and component may show as they are.
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._-:[]")


def name(text: str) -> str:
    return "".join(c if c in NAME_CHARACTERS else _escaped(c) for c in text)


def text(value: str) -> str:
    return "".join(c if c.isprintable() and c != "\\" else _escaped(c) for c in value)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def who(user: str, host: str, component: str) -> str:
    """A consumer as user@host/component."""
    return f"{name(user)}@{name(host)}/{name(component)}"
